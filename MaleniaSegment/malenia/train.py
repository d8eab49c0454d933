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
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from malenia.attributes.schema import ATTRIBUTE_KEYS, LesionDescription
from malenia.losses import alignment_loss, hungarian_match, mask_loss, organ_loss
from malenia.model import MaleniaConfig, MaleniaNet, count_parameters
from malenia.preprocessing import HU_WINDOW
from malenia.weights import load_weights, save_weights


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

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a config JSON; keys starting with "_" are comments."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{k: v for k, v in data.items() if not k.startswith("_")})


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


def _categories(config: TrainConfig) -> tuple[str, ...]:
    from malenia.synth.split import SEEN_CATEGORIES

    return SEEN_CATEGORIES if config.categories == "seen" else tuple(config.categories)


def make_dataset(config: TrainConfig, model_config: MaleniaConfig, seed_offset: int = 0):
    kind = config.data.get("type", "synthetic")
    if kind == "synthetic":
        from malenia.synth import SyntheticLesionDataset

        return SyntheticLesionDataset(
            _categories(config), seed=config.seed + seed_offset, length=10**9,
            shape=model_config.patch_size, spacing=model_config.spacing_mm,
            max_lesions=config.data.get("max_lesions", 2),
            distractor_prob=config.data.get("distractor_prob", 0.0),
        )  # fmt: skip
    if kind == "real_mix":
        from malenia.data.real_mix import RealMixDataset

        return RealMixDataset(
            _categories(config), seed=config.seed + seed_offset, shape=model_config.patch_size,
            spacing=model_config.spacing_mm, mix=config.data.get("mix"),
            max_lesions=config.data.get("max_lesions", 2),
            distractor_prob=config.data.get("distractor_prob", 0.5),
        )  # fmt: skip
    if kind in ("msd", "kits23"):
        from malenia.data import RealLesionDataset

        return RealLesionDataset(
            config.data["root"], layout=kind, patch=model_config.patch_size, spacing=model_config.spacing_mm,
            seed=config.seed + seed_offset, categories=_categories(config),
        )  # fmt: skip
    raise ValueError(f"unknown data type {kind!r} (synthetic | real_mix | msd | kits23)")


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


class Vocabulary:
    """Embedding matrices of every attribute value, and value indices of descriptions."""

    def __init__(self, device) -> None:
        from malenia.text import load_embedding_table

        self.table = load_embedding_table()
        self.phrases = [self.table.vocabulary_matrix(k)[0] for k in ATTRIBUTE_KEYS]
        self.matrices = [self.table.vocabulary_matrix(k)[1].to(device) for k in ATTRIBUTE_KEYS]

    def value_index(self, key_index: int, description) -> int:
        value = getattr(description, ATTRIBUTE_KEYS[key_index])
        if ATTRIBUTE_KEYS[key_index] == "specific_features":
            value = value[0] if value else None
        return self.phrases[key_index].index(value) if value in self.phrases[key_index] else -1


def fits(lesion: LesionDescription, prompt: LesionDescription) -> bool:
    """Whether a lesion matches every attribute the prompt specifies."""
    for key in prompt.specified_keys():
        wanted, has = getattr(prompt, key), getattr(lesion, key)
        if key == "specific_features":
            if not set(wanted) <= set(has):
                return False
        elif wanted != has:
            return False
    return True


def prompt_target(item: dict, category: str | None, prompt: LesionDescription) -> np.ndarray:
    """The target of a prompt: the item's lesions of ``category`` (the category the prompt was
    drawn from; None for none) and every other lesion the description fits."""
    ids = [
        i + 1
        for i, (c, d) in enumerate(zip(item["categories"], item["descriptions"], strict=True))
        if c == category or fits(d, prompt)
    ]
    return np.isin(item["instance_mask"], ids).astype(np.float32)


def drop_attributes(
    description: LesionDescription, rng: random.Random, rate: float
) -> LesionDescription:
    """The description with each attribute left out with probability ``rate`` (location with
    ``rate / 3``); at least one attribute is kept."""
    if rate <= 0:
        return description
    keys = description.specified_keys()
    kept = [k for k in keys if rng.random() >= (rate / 3 if k == "location" else rate)]
    return description.only(*(kept or [rng.choice(keys)])) if keys else description


def choose_prompt(item: dict, rng: random.Random, negative_prob: float, pool: dict, dropout=0.0):
    """(category, description, target mask) for the prompted loss: a lesion's description
    and the lesions it describes; sometimes an absent category's description (whose target
    is empty unless its description fits a lesion present)."""
    present = set(item["categories"]) | set(item.get("compatible", ()))
    absent = [c for c in pool if c not in present]
    if absent and (rng.random() < negative_prob or not item["descriptions"]):
        category = rng.choice(absent)
        description = drop_attributes(rng.choice(pool[category]), rng, dropout)
        return category, description, prompt_target(item, None, description)
    j = rng.randrange(len(item["descriptions"]))
    category = item["categories"][j]
    description = drop_attributes(item["descriptions"][j], rng, dropout)
    return category, description, prompt_target(item, category, description)


def contrast_prompts(item: dict, primary: str, rng: random.Random, pool: dict, dropout=0.0):
    """(descriptions, targets) for the categories in ``item`` other than ``primary`` (the
    category already prompted) and one absent category."""
    descriptions, targets, done = [], [], {primary}
    for j, category in enumerate(item["categories"]):
        if category in done:
            continue
        done.add(category)
        description = drop_attributes(item["descriptions"][j], rng, dropout)
        descriptions.append(description)
        targets.append(prompt_target(item, category, description))
    taken = set(item["categories"]) | set(item.get("compatible", ())) | done
    absent = sorted(c for c in pool if c not in taken)
    if absent:
        description = drop_attributes(rng.choice(pool[rng.choice(absent)]), rng, dropout)
        descriptions.append(description)
        targets.append(prompt_target(item, None, description))
    return descriptions, targets


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
        anatomy = _joint_anatomy_loss(core, out, batch, vocabulary, config, rng, device)
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


def _joint_anatomy_loss(core, out, batch, vocabulary, config, rng, device):
    """Organ loss of the location head on the shared image pass, for the items that carry
    organ labels (asked only for their ``known_locations``); None when no item has any."""
    losses = []
    for b, item in enumerate(batch):
        if "labels" not in item:
            continue
        names, targets = anatomy_targets(
            item["labels"], rng, config.locations_per_item, config.absent_location_prob,
            known=item.get("known_locations"),
        )  # fmt: skip
        if not names:
            continue
        coordinates = _coordinates(core, [item], config.coordinate_jitter_mm, rng).to(device)
        features = core.location_feature_map(out["features"].f2[b : b + 1], coordinates)
        size = tuple(item["image"].shape[1:])
        logits = _organ_logits(core, vocabulary, names, features, size)
        losses.append(organ_loss(logits, torch.from_numpy(targets).to(device)))
    return torch.stack(losses).mean() if losses else None


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


def anatomy_targets(
    labels: np.ndarray,
    rng: random.Random,
    count: int,
    absent_prob: float,
    masks: dict | None = None,
    known=None,
) -> tuple[list[str], np.ndarray]:
    """Locations to ask for in one window and their organ masks: mostly organs in view,
    sometimes one that is not (its answer is empty). ``masks`` memoises organ masks;
    ``known`` limits the question to the locations whose labels are complete."""
    from malenia.synth.anatomy import LOCATION_LABEL, organ_mask

    present_ids = set(np.unique(labels).tolist())
    askable = [n for n in LOCATION_LABEL if known is None or n in known]
    present = sorted(name for name in askable if LOCATION_LABEL[name] in present_ids)
    absent = sorted(name for name in askable if name not in present)
    if not askable:
        return [], np.zeros((0, *labels.shape), np.float32)
    chosen = rng.sample(present, min(count, len(present)))
    if absent and (rng.random() < absent_prob or not chosen):
        chosen.append(rng.choice(absent))
    masks = {} if masks is None else masks
    for name in chosen:
        if name not in masks:
            masks[name] = organ_mask(labels, name)
    return chosen, np.stack([masks[name] for name in chosen]).astype(np.float32)


def _coordinates(
    model: MaleniaNet, batch: list[dict], jitter_mm=(0.0, 0.0), rng: random.Random | None = None
) -> torch.Tensor:
    """Plane coordinates of each window from its body-frame origin (phantom centre = 0),
    each shifted by up to ``jitter_mm`` (y, x)."""
    from malenia.model.network import plane_coordinates

    spacing, shape = model.config.spacing_mm, model.config.patch_size
    rng = rng or random.Random(0)
    coordinates = []
    for item in batch:
        z, y, x = item["origin_mm"]
        shift = [rng.uniform(-j, j) for j in jitter_mm]
        origin = (z, y + shift[0], x + shift[1])
        coordinates.append(plane_coordinates(origin, spacing, shape))
    return torch.stack(coordinates)


def _organ_logits(model: MaleniaNet, vocabulary, names: list[str], location_features, size):
    """[len(names), *size] organ logits of several location phrases on one window's
    location features [1, C, ...]."""
    embeddings = torch.stack([vocabulary.table.value_embedding("location", n) for n in names])
    return model.location_logits(
        embeddings.to(location_features.device),
        location_features.expand(len(names), -1, -1, -1, -1),
        size,
    )


def compute_anatomy_loss(
    model: MaleniaNet,
    batch: list[dict],
    vocabulary: Vocabulary,
    config: TrainConfig,
    step: int,
    device,
) -> tuple[torch.Tensor, dict]:
    """Location head on frozen image features: each location phrase -> its organ's mask."""
    rng = random.Random(config.seed * 7919 + step)
    # The encoder is frozen: a kept window's F2 (and its organ masks) are computed once and
    # stored in the item the dataset keeps.
    for item in batch:
        if "_f2" not in item:
            with torch.no_grad():
                image = torch.from_numpy(item["image"][None]).to(device)
                item["_f2"] = model.encode_image(image).f2[0]
            item["_masks"] = {}
    f2 = torch.stack([item["_f2"] for item in batch])
    coordinates = _coordinates(model, batch, config.coordinate_jitter_mm, rng)
    location_features = model.location_feature_map(f2, coordinates)
    size = tuple(batch[0]["image"].shape[1:])
    losses = []
    for b, item in enumerate(batch):
        names, targets = anatomy_targets(
            item["labels"], rng, config.locations_per_item, config.absent_location_prob,
            item["_masks"],
        )  # fmt: skip
        logits = _organ_logits(model, vocabulary, names, location_features[b : b + 1], size)
        losses.append(organ_loss(logits, torch.from_numpy(targets).to(device)))
    loss = torch.stack(losses).mean()
    value = float(loss.detach())
    return loss, {"total": value, "mask": 0.0, "objectness": 0.0, "align": 0.0, "prompt": value}


@torch.no_grad()
def validate_anatomy(
    model: MaleniaNet, config: TrainConfig, vocabulary: Vocabulary, device
) -> float:
    """Mean organ Dice of the location head over every organ in view of fixed held-out windows."""
    from malenia.synth.dataset import AnatomyDataset

    dataset = AnatomyDataset(
        _categories(config), config.seed + 999_983, model.config.patch_size, model.config.spacing_mm
    )
    rng = random.Random(0)
    scores = []
    for index in range(config.val_samples):
        item = dataset[index]
        names, targets = anatomy_targets(item["labels"], rng, 99, 0.0)
        image = torch.from_numpy(item["image"][None]).to(device)
        location_features = model.location_feature_map(
            model.encode_image(image).f2, _coordinates(model, [item])
        )
        logits = _organ_logits(model, vocabulary, names, location_features, tuple(image.shape[2:]))
        for pred, target in zip((logits > 0).cpu().numpy(), targets > 0, strict=True):
            scores.append(2 * (pred & target).sum() / max(pred.sum() + target.sum(), 1))
    return float(np.mean(scores))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    out: Path,
    model: MaleniaNet,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    history: dict,
) -> None:
    card = model_card(model, config, step, history)
    save_weights(model, out / "last.safetensors", card)
    tensors, scalars = (
        {},
        {"step": step, "param_groups": optimizer.state_dict()["param_groups"], "state": {}},
    )
    for index, state in optimizer.state_dict()["state"].items():
        scalars["state"][str(index)] = {}
        for name, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars["state"][str(index)][name] = float(value)
    save_file(tensors, str(out / "optimizer.safetensors"))
    (out / "optimizer.json").write_text(json.dumps(scalars), encoding="utf-8")


def load_checkpoint(out: Path, model: MaleniaNet, optimizer: torch.optim.Optimizer, device) -> int:
    loaded, _ = load_weights(out / "last.safetensors", device)
    model.load_state_dict(loaded.state_dict())
    scalars = json.loads((out / "optimizer.json").read_text(encoding="utf-8"))
    tensors = load_file(str(out / "optimizer.safetensors"))
    state = {}
    for index, values in scalars["state"].items():
        entry = {name: torch.tensor(value) for name, value in values.items()}
        for key, tensor in tensors.items():
            param, name = key.split(".", 1)
            if param == index:
                entry[name] = tensor.to(device)
        state[int(index)] = entry
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    return int(scalars["step"])


def model_card(model: MaleniaNet, config: TrainConfig, step: int, history: dict) -> dict:
    from malenia.text import TEXT_ENCODER_NAME, load_embedding_table

    return {
        "name": f"malenia-{model.config.name}",
        "parameters": count_parameters(model),
        "spacing_mm": list(model.config.spacing_mm),
        "patch_size": list(model.config.patch_size),
        "hu_window": list(HU_WINDOW),
        "text_encoder": TEXT_ENCODER_NAME,
        "embedding_table_sha256": load_embedding_table().sha256,
        "training": {
            "task": config.task,
            "data": config.data
            if config.task == "lesions"
            else {
                "type": "synthetic anatomy",
                "windows": config.anatomy_windows,
                "targets": "organ masks of every canonical location (no lesion labels)",
                "lesions": "training-category lesions, some moved into other organs in view",
                "coordinate_jitter_mm": list(config.coordinate_jitter_mm),
            },
            "categories": list(_categories(config)),
            "steps": step,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "seed": config.seed,
            "last_losses": history.get("last", {}),
            "validation_dice": history.get("val", {}),
            "initialised_from": _init_summary(config.init_from),
        },
    }


def _init_summary(path: str | None) -> dict | None:
    """Which weights a run started from (name, sha256, their own steps), for the card."""
    if not path:
        return None
    from malenia.weights import read_card

    card = read_card(Path(path))
    return {
        "file": Path(path).name,
        "sha256": card.get("sha256"),
        "steps": card.get("training", {}).get("steps"),
        "initialised_from": card.get("training", {}).get("initialised_from"),
    }


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

    prompt_pool = {c: [r.description for r in lesion_pool(c)] for c in _categories(config)}
    if anatomy:
        from malenia.synth.dataset import AnatomyDataset

        dataset = AnatomyDataset(
            _categories(config), config.seed, model_config.patch_size, model_config.spacing_mm
        )
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
