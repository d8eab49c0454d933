"""Named preprocessing stages shared by training and inference.

``normalize_ct`` is the one intensity normalisation the model ever sees; the model card
records its window so weights and preprocessing cannot drift apart.
"""

from __future__ import annotations

import numpy as np

HU_WINDOW: tuple[float, float] = (-1000.0, 1000.0)


def normalize_ct(hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Clip Hounsfield units to ``window`` and scale linearly to [-1, 1] (float32)."""
    low, high = window
    clipped = np.clip(np.asarray(hu, dtype=np.float32), low, high)
    return (clipped - low) * (2.0 / (high - low)) - 1.0
