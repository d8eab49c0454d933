"""Real LIDC nodules enlarged and pasted into the real lungs of training scans.

The LIDC crops alone teach nodules only as zoomed ROIs, never at whole-scan scale, and none of
them is a 4-7 cm mass; pasted into a real lung on the model's grid, they also give the
calibration its whole-scan lung masses (``pasted_lung_masses``), from training data only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from malenia.data.real_ct import load_lidc, load_training_scans

# Real LIDC nodules pasted into the real lungs of the training scans, on the model's 2 mm
# grid: the crops alone teach nodules only as zoomed ROIs, never at whole-scan scale, and
# none of them is a 4-7 cm mass. Diameters drawn from PASTE_DIAMETER_MM; a nodule is
# enlarged at most PASTE_MAX_SCALE times (beyond that its texture is mostly interpolation).
PASTE_DIAMETER_MM, PASTE_MAX_SCALE = (12.0, 70.0), 3.0


def equivalent_diameter_mm(nodule) -> float:
    volume_mm3 = float(nodule.mask.sum() * np.prod(nodule.spacing_zyx))
    return float(np.cbrt(6.0 * volume_mm3 / np.pi))


def enlarged_nodule(nodule, model_spacing, diameter_mm: float, rng: np.random.Generator):
    """(HU, mask) of a LIDC crop on the model grid, scaled so the nodule's equivalent
    diameter becomes ``diameter_mm`` (at most ``PASTE_MAX_SCALE`` times its own, never
    smaller), randomly mirrored and turned in the axial plane."""
    own = max(equivalent_diameter_mm(nodule), 1.0)
    scale = float(np.clip(diameter_mm / own, 1.0, PASTE_MAX_SCALE))
    factors = [s * scale / m for s, m in zip(nodule.spacing_zyx, model_spacing, strict=True)]
    hu = ndimage.zoom(nodule.hu.astype(np.float32), factors, order=1, mode="nearest")
    mask = ndimage.zoom(nodule.mask.astype(np.float32), factors, order=1) > 0.5
    if rng.random() < 0.5:
        hu, mask = hu[:, :, ::-1], mask[:, :, ::-1]
    turns = int(rng.integers(4))
    return np.rot90(hu, turns, (1, 2)).copy(), np.rot90(mask, turns, (1, 2)).copy()


def paste(window: np.ndarray, lung: np.ndarray, hu: np.ndarray, mask: np.ndarray, at,
          noise_rng: np.random.Generator | None = None):  # fmt: skip
    """``hu`` (its ``mask`` part and a feathered one-voxel rim) blended into ``window`` centred at
    voxel ``at``, inside the lung only: a juxtapleural nodule stops at the chest wall, whose
    soft tissue hides the rest. With ``noise_rng`` the nodule's own grain (smoothed by
    enlarging, from another scanner) is replaced by noise like the window's soft tissue
    (``matched_scanner_noise``). Returns (window, lesion mask)."""
    if noise_rng is not None:
        from malenia.synth.lesions import matched_scanner_noise

        hu = ndimage.gaussian_filter(hu.astype(np.float32), 0.6)
        hu = hu + matched_scanner_noise(window, hu.shape, noise_rng)
    window = window.copy()
    lesion = np.zeros(window.shape, bool)
    src, dst = [], []
    for c, n, w in zip(at, mask.shape, window.shape, strict=True):
        lo = c - n // 2
        a, b = max(lo, 0), min(lo + n, w)
        if b <= a:
            return window, lesion
        dst.append(slice(a, b))
        src.append(slice(a - lo, b - lo))
    src, dst = tuple(src), tuple(dst)
    inside = ndimage.binary_dilation(lung, iterations=1)[dst]
    # Feathered one voxel outside the mask: the nodule's own partial-volume rim comes along.
    rim = ndimage.binary_dilation(mask, iterations=1).astype(np.float32)
    alpha = ndimage.gaussian_filter(rim, 0.6)[src] * inside
    window[dst] = window[dst] * (1.0 - alpha) + hu[src] * alpha
    lesion[dst] = mask[src] & lung[dst]
    return window, lesion


def pasted_lung_masses(n: int, seed: int = 7, diameter_mm=(20.0, 55.0)):
    """``n`` whole-scan cases for calibrating lung answers, from training data only: a solid
    LIDC *training* nodule enlarged to ``diameter_mm`` and pasted into the real lung of a
    training scan (2 mm grid), cropped to 70 slices around it. Yields (name, CTVolume, mass
    mask on the volume's grid); the same ``seed`` gives the same cases."""
    from malenia.data.real_mix import random_voxel
    from malenia.synth.lesions import LUNG_LABELS

    rng = np.random.default_rng(seed)
    spacing = (2.0, 2.0, 2.0)
    nodules = [x for x in load_lidc("train") if x.texture_class == "solid" and x.volume_ml > 0.3]
    hosts = [(s, np.isin(s.labels, list(LUNG_LABELS))) for s in load_training_scans(spacing)]
    hosts = [(s, lung) for s, lung in hosts if lung.sum() > 20_000]
    made = 0
    while made < n:
        scan, lung = hosts[made % len(hosts)]
        nodule = nodules[int(rng.integers(len(nodules)))]
        hu, mask = enlarged_nodule(nodule, spacing, float(rng.uniform(*diameter_mm)), rng)
        at = random_voxel(lung, rng)
        pasted, mass = paste(scan.hu, lung, hu, mask, at)
        if mass.sum() < 200:  # mostly outside the lung: draw again
            continue
        z0, z1 = max(at[0] - 35, 0), min(at[0] + 35, pasted.shape[0])
        name = f"{scan.name} + {nodule.uid}"
        yield name, scan.slab(pasted[z0:z1], z0, name), mass[z0:z1]
        made += 1
