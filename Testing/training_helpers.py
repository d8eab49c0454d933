"""Small models and configs the training tests share: 32^3 windows at 3 mm, a few steps."""

from __future__ import annotations

from malenia.model import MaleniaConfig
from malenia.train import TrainConfig


def small_config(**changes) -> MaleniaConfig:
    config = MaleniaConfig.tiny()
    config.patch_size, config.spacing_mm = (32, 32, 32), (3.0, 3.0, 3.0)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def training_config(out, steps, **changes) -> TrainConfig:
    return TrainConfig(
        out=str(out), model=small_config().to_dict(), steps=steps, checkpoint_every=1, validate_every=0,
        num_workers=0, warmup_steps=1, data={"type": "synthetic", "max_lesions": 1}, **changes,
    )  # fmt: skip
