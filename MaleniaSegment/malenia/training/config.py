"""What a training run is: ``TrainConfig`` (read from configs/*.json) and its learning-rate
schedule."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16")


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
    # Weight of a loss on the prompt-free lesion map itself (``losses.lesion_map_logits``: the
    # best token's mask x objectness, final block) against every lesion of the window. That
    # map grounds each answer naming an organ, and the other losses teach it only through
    # Hungarian-matched tokens: on real CT it stays faint inside lesions (p 0.25-0.38). 0 = off.
    lesion_map_weight: float = 0.0
    # False: prompted masks whose answer is empty (negative prompts, real negatives, contrast
    # prompts of absent categories) learn from BCE only, not soft Dice (``losses.mask_loss``).
    empty_target_dice: bool = True
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
    # Learning without forgetting (Li and Hoiem, 2017): on windows from ``distill_sources``
    # the prompted mask also learns the frozen ``distill_from`` model's probabilities, so what
    # it answered there drifts less while the rest of the mixture teaches real anatomy. Items
    # say their "source": "phantom" (white-noise lesions, as the published benchmark draws
    # them), "phantom_scanner_noise", "real_synthetic", "lidc", ... Only the prompts the batch
    # already asks (seen categories) are distilled: no unseen description reaches training.
    # 0 = off.
    distill_from: str | None = None
    distill_weight: float = 0.0
    distill_sources: tuple[str, ...] = ("phantom",)
    # Arithmetic of the forward pass (weights and optimizer stay float32): "auto" is bfloat16
    # autocast on a GPU and float32 on a CPU; "bfloat16" autocasts on a CPU too, about twice
    # the steps per hour where the CPU has AMX or AVX512-BF16
    # (benchmarks/bench_training_step.py); "float32" never autocasts.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.distill_weight > 0 and not self.distill_from:
            raise ValueError("distill_weight > 0 needs distill_from (the teacher's weights)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {' | '.join(PRECISIONS)}")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a config JSON; keys starting with "_" are comments."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{k: v for k, v in data.items() if not k.startswith("_")})

    def category_names(self) -> tuple[str, ...]:
        """The lesion categories trained on ("seen": the four seen ones)."""
        from malenia.synth.split import SEEN_CATEGORIES

        return SEEN_CATEGORIES if self.categories == "seen" else tuple(self.categories)


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


def autocast(config: TrainConfig, device_type: str):
    """The autocast context of the forward pass for ``config.precision`` on this device."""
    import torch

    bfloat16 = config.precision == "bfloat16" or (
        config.precision == "auto" and device_type == "cuda"
    )
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bfloat16)


def step_rng(config: TrainConfig, step: int) -> random.Random:
    """The random choices (prompts, locations) of one step: seeded by run and step alone, so a
    resumed run repeats them exactly."""
    return random.Random(config.seed * 7919 + step)
