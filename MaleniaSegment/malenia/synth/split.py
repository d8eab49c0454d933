"""The fixed benchmark split. Never change it silently: evaluation figures depend on it."""

from __future__ import annotations

from malenia.attributes.presets import SEEN_CATEGORIES

UNSEEN_ANNOTATED: tuple[str, ...] = ("renal cyst", "pancreatic cancer", "colon cancer")


def unseen_categories() -> tuple[str, ...]:
    """Unseen = the 3 held-out annotated categories + every preset-only category."""
    from malenia.attributes.presets import load_presets

    extra = tuple(
        c
        for c, p in load_presets().items()
        if c not in SEEN_CATEGORIES and c not in UNSEEN_ANNOTATED
    )
    return UNSEEN_ANNOTATED + extra


UNSEEN_CATEGORIES = UNSEEN_ANNOTATED  # the annotated unseen ones; see unseen_categories()
TEST_SET_SEED = 20261122  # fixed seed of the held-out evaluation volumes
VALIDATION_SET_SEED = 20261201  # calibration of post-processing: seen categories only
TRAIN_SEED_OFFSET = 0
__all__ = [
    "SEEN_CATEGORIES",
    "UNSEEN_CATEGORIES",
    "TEST_SET_SEED",
    "VALIDATION_SET_SEED",
    "unseen_categories",
]
