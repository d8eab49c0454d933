"""The lesion task: the whole model (or all but its ``frozen`` prefixes) on lesion masks,
prompted with descriptions: Hungarian-matched mask tokens at three decoder blocks, attribute
alignment, the prompted mask, contrast prompts and, where items carry organ labels, the
location head alongside."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from malenia.attributes.schema import ATTRIBUTE_KEYS
from malenia.losses import alignment_loss, hungarian_match, lesion_map_logits, mask_loss
from malenia.model import MaleniaNet
from malenia.training.anatomy import joint_anatomy_loss
from malenia.training.config import TrainConfig, step_rng
from malenia.training.data import make_dataset
from malenia.training.prompts import Vocabulary, choose_prompt, contrast_prompts
from malenia.training.task import Task


class LesionTask(Task):
    """Task "lesions"."""

    name = "lesions"
    log_columns = (
        "total", "mask", "objectness", "align", "prompt", "contrast", "anatomy", "distill",
        "lesion_map",
    )  # fmt: skip
    headline = "prompt"

    def __init__(self, config: TrainConfig, device) -> None:
        super().__init__(config, device)
        from malenia.synth.dataset import lesion_pool

        self.prompt_pool = {
            c: [r.description for r in lesion_pool(c)] for c in config.category_names()
        }
        self.teacher = load_teacher(config, device)

    def prepare_model(self, model: MaleniaNet) -> None:
        if self.config.frozen:
            freeze_parameters(model, self.config.frozen)
        if self.teacher is not None and self.teacher.config.to_dict() != model.config.to_dict():
            raise ValueError(
                f"distill_from {self.config.distill_from} is a different model from the one "
                "this config trains: distil from weights of the same architecture"
            )

    def dataset(self, model_config):
        return make_dataset(self.config, model_config)

    def loss(self, model, trained, batch, step):
        return compute_loss(
            trained, batch, self.vocabulary, self.config, step, self.prompt_pool, self.device,
            self.teacher,
        )  # fmt: skip

    def validate(self, model: MaleniaNet) -> float:
        return validate(model, self.config, self.vocabulary, self.device)


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


def load_teacher(config: TrainConfig, device) -> MaleniaNet | None:
    """The frozen model of ``distill_from``, or None when distillation is off; a missing file
    is said before any step runs (another architecture: ``LesionTask.prepare_model``)."""
    if config.distill_weight <= 0:
        return None
    from pathlib import Path

    from malenia.weights import load_weights

    path = Path(config.distill_from)
    if not path.is_file():
        raise ValueError(f"distill_from {path} does not exist")
    teacher, _ = load_weights(path, device)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the student's voxel logits against the teacher's probabilities
    (its gradient, sigmoid(student) - sigmoid(teacher), vanishes where they agree)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        student_logits.float(), torch.sigmoid(teacher_logits.float())
    )


def compute_loss(
    model,
    batch: list[dict],
    vocabulary: Vocabulary,
    config: TrainConfig,
    step: int,
    prompt_pool: dict,
    device,
    teacher: MaleniaNet | None = None,
) -> tuple[torch.Tensor, dict]:
    rng = step_rng(config, step)
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
    if config.lesion_map_weight > 0:
        every_lesion = np.stack([item["instance_mask"] > 0 for item in batch])
        with torch.autocast(device_type=images.device.type, enabled=False):
            lesion_map = mask_loss(
                lesion_map_logits(out["block_masks"][-1], out["block_objectness"][-1]),
                torch.from_numpy(every_lesion).float().to(device),
                config.empty_target_dice,
            )
        total = total + config.lesion_map_weight * lesion_map * len(batch)
        parts["lesion_map"] = float(lesion_map.detach())
    target = torch.from_numpy(np.stack(prompt_targets)).to(device)
    empty_dice = config.empty_target_dice
    prompted = mask_loss(out["prompt_logits"]["ensemble"], target, empty_dice)
    branches = 0.5 * (
        mask_loss(out["prompt_logits"]["mask"], target, empty_dice)
        + mask_loss(out["prompt_logits"]["text"], target, empty_dice)
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
            config.prompt_attribute_dropout, config.empty_target_dice,
        )  # fmt: skip
        total = total + config.contrast_prompt_weight * contrast
        parts["contrast"] = float(contrast.detach())
    if teacher is not None:
        chosen = [
            b for b, item in enumerate(batch)
            if item.get("source", "phantom") in config.distill_sources
        ]  # fmt: skip
        if chosen:
            with torch.no_grad():
                taught = teacher(images[chosen], attributes[chosen], vocabulary.matrices)
            distill = distillation_loss(
                out["prompt_logits"]["ensemble"][chosen], taught["prompt_logits"]["ensemble"]
            )
            total = total + config.distill_weight * distill * len(chosen)
            parts["distill"] = float(distill.detach())
    parts["total"] = float(total.detach())
    return total / len(batch), parts


def _contrast_loss(
    core, out, batch, primaries, vocabulary, rng, pool, device, dropout=0.0, empty_dice=True
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
        target_maps = torch.from_numpy(np.stack(targets)).to(device)
        losses.append(mask_loss(logits, target_maps, empty_dice))
    return torch.stack(losses).mean() if losses else out["features"].f4.sum() * 0.0


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
