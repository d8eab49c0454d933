"""`malenia train --config FILE`: train MaleniaNet on the synthetic world or real datasets.

One CPU, one GPU, or many GPUs / nodes through torchrun (torch.distributed DDP; gloo on CPU,
NCCL on GPU). Checkpoints every N steps and at --max-minutes: weights as safetensors with a
model card, optimizer state as safetensors + JSON. Resuming continues the exact sample
stream, so a run can be cut into short chunks.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from malenia.attributes.schema import ATTRIBUTE_KEYS
from malenia.losses import alignment_loss, hungarian_match, mask_loss
from malenia.model import MaleniaConfig, MaleniaNet, count_parameters
from malenia.training.anatomy import compute_anatomy_loss, joint_anatomy_loss, validate_anatomy
from malenia.training.checkpoints import load_checkpoint, save_checkpoint
from malenia.training.prompts import Vocabulary, choose_prompt, contrast_prompts
from malenia.weights import load_weights


@dataclass
class TrainConfig:
    out: str = "runs/tiny"
    model: str | dict = "tiny"
    steps: int = 2000
    batch_size: int = 1
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0
    categories: str | list[str] = "seen"
    checkpoint_every: int = 50
    validate_every: int = 200
    val_samples: int = 4
    num_workers: int = 1
    negative_prompt_prob: float = 0.25
    # Weight of the contrast prompts: on the same image, every other category present and one
    # absent category are also prompted (cheap: the image pass is shared). Same image, different
    # description, different target is the signal that makes the model read the prompt.
    contrast_prompt_weight: float = 0.0
    # Probability of leaving out each attribute of a prompt (location at a third of it). The
    # target is then every lesion the shorter description fits, so each attribute is learnt
    # as one more constraint rather than as part of a category's fixed signature.
    prompt_attribute_dropout: float = 0.0
    # "constant" after warmup, or "cosine" down to min_lr_ratio * lr at the last step.
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    align_weight: float = 0.5
    objectness_weight: float = 0.5
    data: dict = field(default_factory=lambda: {"type": "synthetic", "max_lesions": 2})
    init_from: str | None = None  # weights to start from when ``out`` has no checkpoint yet
    # "lesions": the whole model on lesion masks. "anatomy": only the location head, on organ
    # masks, everything else frozen (its lesion behaviour stays bit-identical).
    task: str = "lesions"
    locations_per_item: int = 3
    absent_location_prob: float = 0.25
    anatomy_windows: int | None = None  # distinct windows the anatomy task cycles through
    # Weight of the location-head loss on items that carry organ labels, trained together
    # with the lesion losses (task "lesions"; 0 = off). Real scans say which of their
    # organs are labelled (``known_locations``); only those are asked.
    anatomy_weight: float = 0.0
    # Uniform shifts (mm, y then x) of the scanner coordinates the location head sees. Where a
    # patient lies left-right is fixed by the gantry, front-back is not (table height varies
    # by 15 cm between scanners): a large y shift teaches the head not to use y at all.
    coordinate_jitter_mm: tuple[float, float] = (0.0, 0.0)
    # Parameter-name prefixes that stay as ``init_from`` left them (task "lesions"). Freezing
    # the encoder through ``up2`` keeps the decoder map F2 fixed, so a location head trained
    # on those features stays valid while the lesion decoder learns on.
    frozen: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a config JSON; keys starting with "_" are comments."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{k: v for k, v in data.items() if not k.startswith("_")})

    def category_names(self) -> tuple[str, ...]:
        """The lesion categories trained on ("seen": the four seen ones)."""
        from malenia.synth.split import SEEN_CATEGORIES

        return SEEN_CATEGORIES if self.categories == "seen" else tuple(self.categories)


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train MaleniaNet (torchrun for several GPUs)")
    parser.add_argument(
        "--config", type=Path, required=True, help="training config JSON (see configs/)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="checkpoint and stop after this long"
    )
    parser.add_argument("--steps", type=int, default=None, help="override the config's total steps")
    parser.add_argument("--out", default=None, help="override the config's output folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    config = TrainConfig.load(args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.out is not None:
        config.out = args.out
    train(config, max_minutes=args.max_minutes, device=args.device)
    return 0


# --------------------------------------------------------------------------- data


def make_dataset(config: TrainConfig, model_config: MaleniaConfig, seed_offset: int = 0):
    kind = config.data.get("type", "synthetic")
    if kind == "synthetic":
        from malenia.synth import SyntheticLesionDataset

        return SyntheticLesionDataset(
            config.category_names(), seed=config.seed + seed_offset, length=10**9,
            shape=model_config.patch_size, spacing=model_config.spacing_mm,
            max_lesions=config.data.get("max_lesions", 2),
            distractor_prob=config.data.get("distractor_prob", 0.0),
        )  # fmt: skip
    if kind == "real_mix":
        from malenia.data.real_mix import RealMixDataset

        return RealMixDataset(
            config.category_names(), seed=config.seed + seed_offset, shape=model_config.patch_size,
            spacing=model_config.spacing_mm, mix=config.data.get("mix"),
            max_lesions=config.data.get("max_lesions", 2),
            distractor_prob=config.data.get("distractor_prob", 0.5),
        )  # fmt: skip
    if kind in ("msd", "kits23"):
        from malenia.data import RealLesionDataset

        return RealLesionDataset(
            config.data["root"], layout=kind, patch=model_config.patch_size, spacing=model_config.spacing_mm,
            seed=config.seed + seed_offset, categories=config.category_names(),
        )  # fmt: skip
    raise ValueError(f"unknown data type {kind!r} (synthetic | real_mix | msd | kits23)")


def make_anatomy_dataset(config: TrainConfig, model_config: MaleniaConfig):
    """The location head's windows: phantoms (data.type "synthetic", the default) or the real
    training scans' organs mixed with phantoms ("real_anatomy")."""
    kind = config.data.get("type", "synthetic")
    if kind == "synthetic":
        from malenia.synth.dataset import AnatomyDataset

        return AnatomyDataset(
            config.category_names(), config.seed, model_config.patch_size, model_config.spacing_mm,
            config.anatomy_windows,
        )  # fmt: skip
    if kind == "real_anatomy":
        from malenia.data.real_anatomy import RealAnatomyDataset

        return RealAnatomyDataset(
            config.category_names(), config.seed, model_config.patch_size, model_config.spacing_mm,
            phantom_share=config.data.get("phantom_share", 0.3),
            organ_share=config.data.get("organ_share", 0.7), distinct=config.anatomy_windows,
        )  # fmt: skip
    raise ValueError(f"unknown data type {kind!r} for the anatomy task (synthetic | real_anatomy)")


class Batches:
    """Deterministic stream: item j of step s on rank r is dataset[(s * world + r) * B + j]."""

    def __init__(self, dataset, batch_size: int, rank: int, world: int, num_workers: int) -> None:
        self.dataset, self.batch_size, self.rank, self.world = dataset, batch_size, rank, world
        self.pool = None
        if num_workers > 0:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(num_workers)
        self._pending: dict[int, object] = {}

    def _indices(self, step: int) -> list[int]:
        base = (step * self.world + self.rank) * self.batch_size
        return [base + j for j in range(self.batch_size)]

    def _load(self, step: int):
        return [self.dataset[i] for i in self._indices(step)]

    def get(self, step: int) -> list[dict]:
        if self.pool is None:
            return self._load(step)
        future = self._pending.pop(step, None) or self.pool.submit(self._load, step)
        self._pending[step + 1] = self.pool.submit(self._load, step + 1)  # prefetch
        return future.result()


# --------------------------------------------------------------------------- one step


def compute_loss(
    model,
    batch: list[dict],
    vocabulary: Vocabulary,
    config: TrainConfig,
    step: int,
    prompt_pool: dict,
    device,
) -> tuple[torch.Tensor, dict]:
    rng = random.Random(config.seed * 7919 + step)
    images = torch.from_numpy(np.stack([item["image"] for item in batch])).to(device)
    prompts, prompt_targets, primaries = [], [], []
    for item in batch:
        category, description, target = choose_prompt(
            item, rng, config.negative_prompt_prob, prompt_pool, config.prompt_attribute_dropout
        )
        prompts.append(vocabulary.table.embed(description))
        prompt_targets.append(target)
        primaries.append(category)
    attributes = torch.stack(prompts).to(device)
    out = model(images, attributes, vocabulary.matrices)
    core = model.module if isinstance(model, DistributedDataParallel) else model

    parts = {"mask": 0.0, "objectness": 0.0, "align": 0.0}
    total = images.new_zeros(())
    for b, item in enumerate(batch):
        instance = torch.from_numpy(item["instance_mask"].astype(np.int64)).to(device)
        count = len(item["descriptions"])
        targets = (
            torch.stack([(instance == i + 1).float() for i in range(count)])
            if count
            else images.new_zeros((0, *instance.shape))
        )
        for block in range(3):
            logits = out["block_masks"][block][b]
            rows, cols = hungarian_match(logits, targets)
            objectness_target = torch.zeros(logits.shape[0], device=device)
            objectness_target[rows] = 1.0
            block_mask = mask_loss(logits[rows], targets[cols]) if rows else logits.sum() * 0.0
            block_obj = torch.nn.functional.binary_cross_entropy_with_logits(
                out["block_objectness"][block][b], objectness_target
            )
            total = total + block_mask + config.objectness_weight * block_obj
            parts["mask"] += float(block_mask.detach())
            parts["objectness"] += float(block_obj.detach())
            if block in core.config.align_blocks and rows:
                value_targets = [
                    [vocabulary.value_index(k, item["descriptions"][c]) for c in cols]
                    for k in range(len(ATTRIBUTE_KEYS))
                ]
                key_logits = [logits_k[b] for logits_k in out["block_attribute_logits"][block]]
                align = alignment_loss(key_logits, rows, value_targets)
                total = total + config.align_weight * align
                parts["align"] += float(align.detach())
    target = torch.from_numpy(np.stack(prompt_targets)).to(device)
    prompted = mask_loss(out["prompt_logits"]["ensemble"], target)
    branches = 0.5 * (
        mask_loss(out["prompt_logits"]["mask"], target)
        + mask_loss(out["prompt_logits"]["text"], target)
    )
    total = total + prompted + branches
    parts["prompt"] = float(prompted.detach())
    if config.anatomy_weight > 0 and core.location_head is not None:
        anatomy = joint_anatomy_loss(core, out, batch, vocabulary, config, rng, device)
        if anatomy is not None:
            total = total + config.anatomy_weight * anatomy * len(batch)
            parts["anatomy"] = float(anatomy.detach())
    if config.contrast_prompt_weight > 0:
        contrast = _contrast_loss(
            core, out, batch, primaries, vocabulary, rng, prompt_pool, device,
            config.prompt_attribute_dropout,
        )  # fmt: skip
        total = total + config.contrast_prompt_weight * contrast
        parts["contrast"] = float(contrast.detach())
    parts["total"] = float(total.detach())
    return total / len(batch), parts


def _contrast_loss(
    core, out, batch, primaries, vocabulary, rng, pool, device, dropout=0.0
) -> torch.Tensor:
    """Mask loss of the contrast prompts, through the shared image pass of ``out``."""
    losses = []
    for b, item in enumerate(batch):
        descriptions, targets = contrast_prompts(item, primaries[b], rng, pool, dropout)
        if not descriptions:
            continue
        count = len(descriptions)
        attributes = torch.stack([vocabulary.table.embed(d) for d in descriptions]).to(device)
        tokens = out["block_tokens"][-1][b : b + 1].expand(count, -1, -1)
        vectors = core.prompt_vectors(tokens, attributes)
        f4 = out["features"].f4[b : b + 1].expand(count, -1, -1, -1, -1)
        logits = core.vector_logits(vectors["ensemble"], f4)
        losses.append(mask_loss(logits, torch.from_numpy(np.stack(targets)).to(device)))
    return torch.stack(losses).mean() if losses else out["features"].f4.sum() * 0.0


# --------------------------------------------------------------------------- anatomy task


# --------------------------------------------------------------------------- checkpoints


@torch.no_grad()
def validate(model: MaleniaNet, config: TrainConfig, vocabulary: Vocabulary, device) -> float:
    """Mean Dice of the prompted mask on fixed held-out samples of the training categories."""
    dataset = make_dataset(config, model.config, seed_offset=999_983)
    model.eval()
    scores = []
    for index in range(config.val_samples):
        item = dataset[index]
        description = item["descriptions"][0]
        target = np.isin(
            item["instance_mask"],
            [i + 1 for i, c in enumerate(item["categories"]) if c == item["categories"][0]],
        )
        out = model(
            torch.from_numpy(item["image"][None]).to(device),
            vocabulary.table.embed(description)[None].to(device),
        )
        pred = (out["prompt_logits"]["ensemble"][0] > 0).cpu().numpy()
        scores.append(2 * (pred & target).sum() / max(pred.sum() + target.sum(), 1))
    model.train()
    return float(np.mean(scores))


# --------------------------------------------------------------------------- loop


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup, then constant or cosine decay to ``min_lr_ratio * lr``."""
    warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
    if config.lr_schedule == "constant" or step < config.warmup_steps:
        return config.lr * warm
    if config.lr_schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r} (constant | cosine)")
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def freeze_parameters(model: torch.nn.Module, prefixes) -> None:
    """Stop training every parameter whose name starts with one of ``prefixes``; a prefix
    that names nothing is a typo in the config, said before any step runs."""
    prefixes = tuple(prefixes)
    names = [name for name, _ in model.named_parameters()]
    unused = [p for p in prefixes if not any(name.startswith(p) for name in names)]
    if unused:
        raise ValueError(f"frozen prefixes {unused} match no parameter of this model")
    for name, parameter in model.named_parameters():
        if name.startswith(prefixes):
            parameter.requires_grad_(False)


def _setup_distributed(device_request: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_request in ("auto", "cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(config: TrainConfig, max_minutes: float | None = None, device: str = "auto") -> dict:
    rank, world, torch_device = _setup_distributed(device)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = (
        MaleniaConfig.from_dict(config.model)
        if isinstance(config.model, dict)
        else getattr(MaleniaConfig, config.model)()
    )
    if config.task not in ("lesions", "anatomy"):
        raise ValueError(f"unknown task {config.task!r} (lesions | anatomy)")
    anatomy = config.task == "anatomy"
    if anatomy:
        model_config.location_head = True
    model = MaleniaNet(model_config).to(torch_device)
    if anatomy:  # only the location head learns; the lesion model stays as it was
        table = Vocabulary(torch_device).matrices[ATTRIBUTE_KEYS.index("location")]
        model.location_centre.copy_(table.mean(0))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(("location_head.", "location_features.")))
    elif config.frozen:
        freeze_parameters(model, config.frozen)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    step = 0
    if (out / "last.safetensors").is_file() and (out / "optimizer.json").is_file():
        step = load_checkpoint(out, model, optimizer, torch_device)
        if rank == 0:
            print(f"resumed from {out} at step {step}")
    elif config.init_from:
        start, _ = load_weights(Path(config.init_from), torch_device)
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        new = [
            k
            for k in missing
            if not k.startswith(MaleniaNet.NEUTRAL_MODULES)
            and not (
                anatomy
                and k.startswith(("location_head.", "location_features.", "location_centre"))
            )
        ]
        if new or unexpected:
            raise ValueError(
                f"{config.init_from} does not fit this model: missing {new[:5]}, unexpected {unexpected[:5]}"
            )
        if rank == 0:
            print(f"initialised from {config.init_from} (fresh optimizer)")
    if world > 1:
        for parameter in model.parameters():  # identical start on every rank
            dist.broadcast(parameter.data, 0)
    trained = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    vocabulary = Vocabulary(torch_device)
    from malenia.synth.dataset import lesion_pool

    prompt_pool = {c: [r.description for r in lesion_pool(c)] for c in config.category_names()}
    if anatomy:
        dataset = make_anatomy_dataset(config, model_config)
    else:
        dataset = make_dataset(config, model_config)
    batches = Batches(dataset, config.batch_size, rank, world, config.num_workers)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if torch_device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    log_file = out / "log.csv"
    new_log = not log_file.exists()
    history: dict = {"val": {}}
    started = time.time()
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=step, desc="training", unit="step")
    with open(log_file, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new_log and rank == 0:
            writer.writerow(
                [
                    "step",
                    "total",
                    "mask",
                    "objectness",
                    "align",
                    "prompt",
                    "lr",
                    "seconds",
                    "val_dice",
                ]
            )
        while step < config.steps:
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(config.seed * 100_003 + step)
            batch = batches.get(step)
            tick = time.time()
            with amp:
                if anatomy:
                    loss, parts = compute_anatomy_loss(
                        model, batch, vocabulary, config, step, torch_device
                    )
                else:
                    loss, parts = compute_loss(
                        trained, batch, vocabulary, config, step, prompt_pool, torch_device
                    )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            history["last"] = {k: round(v, 4) for k, v in parts.items()}
            val = ""
            if rank == 0 and config.validate_every and step % config.validate_every == 0:
                check = validate_anatomy if anatomy else validate
                val = round(check(model, config, vocabulary, torch_device), 4)
                history["val"][str(step)] = val
            if rank == 0:
                writer.writerow(
                    [
                        step,
                        *(
                            round(parts[k], 5)
                            for k in ("total", "mask", "objectness", "align", "prompt")
                        ),
                        lr,
                        round(time.time() - tick, 3),
                        val,
                    ]
                )
                handle.flush()
                progress.update(1)
                progress.set_postfix(loss=f"{parts['total']:.3f}", prompt=f"{parts['prompt']:.3f}")
            out_of_time = max_minutes is not None and (time.time() - started) > max_minutes * 60
            if rank == 0 and (
                step % config.checkpoint_every == 0 or step == config.steps or out_of_time
            ):
                save_checkpoint(out, model, optimizer, step, config, history)
            if out_of_time:
                break
    if progress is not None:
        progress.close()
    if world > 1:
        dist.barrier()
    history["step"] = step
    history["parameters"] = count_parameters(model)
    history["model"] = model
    if not math.isfinite(history["last"]["total"]):
        raise RuntimeError("training diverged (non-finite loss); lower the learning rate")
    return history
