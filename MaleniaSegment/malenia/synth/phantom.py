"""Procedural CT phantoms of the abdomen and chest with a label map of the anatomy.

Organs are randomly scaled, shifted and warped ellipsoids and tubes placed in a body frame
(mm; x to the patient's left, y posterior, z superior; origin at the body centre at L1).
Only the field of view is generated, so a 64-96^3 training patch costs well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from malenia.synth.anatomy import LABEL_NAMES, LABELS, TISSUE_HU

# name: (centre z, y, x), radii (z, y, x) in mm, region. Lobes are split afterwards.
ORGANS_ABDOMEN: list[tuple[str, tuple, tuple]] = [
    ("liver", (70, -5, -55), (80, 85, 95)),
    ("liver", (85, -45, 30), (50, 40, 60)),
    ("right kidney", (0, 50, -75), (55, 30, 27)),
    ("left kidney", (10, 50, 75), (55, 30, 27)),
    ("right adrenal gland", (60, 40, -48), (16, 7, 12)),
    ("left adrenal gland", (62, 40, 48), (16, 7, 12)),
    ("spleen", (60, 45, 105), (55, 35, 25)),
    ("stomach", (70, -45, 55), (50, 35, 45)),
    ("pancreatic head", (5, 5, -30), (22, 20, 22)),
    ("pancreatic body", (15, 10, 18), (14, 13, 32)),
    ("pancreatic tail", (25, 25, 72), (12, 13, 28)),
    ("gallbladder", (20, -55, -65), (35, 17, 17)),
    ("ascending colon", (-60, -5, -100), (65, 22, 22)),
    ("transverse colon", (-10, -70, 0), (22, 22, 105)),
    ("descending colon", (-55, 15, 105), (70, 20, 20)),
    ("sigmoid colon", (-140, -20, 35), (22, 22, 55)),
    ("rectum", (-190, 45, 0), (40, 22, 22)),
    ("urinary bladder", (-195, -40, 0), (38, 40, 45)),
]
ORGANS_CHEST: list[tuple[str, tuple, tuple]] = [
    ("right lung", (80, 5, -75), (110, 85, 62)),
    ("left lung", (80, 5, 75), (105, 85, 58)),
    ("heart", (35, -30, 20), (60, 52, 60)),
    ("liver", (-60, -5, -55), (70, 85, 95)),
]
# Nominal centres (mm, body frame) of each canonical location, for placing a field of view.
LOCATION_CENTRES: dict[str, tuple[float, float, float]] = {
    "right liver lobe": (70, -5, -70), "left liver lobe": (85, -45, 35),
    "right kidney": (0, 50, -75), "left kidney": (10, 50, 75),
    "right adrenal gland": (60, 40, -48), "left adrenal gland": (62, 40, 48),
    "spleen": (60, 45, 105), "stomach": (70, -45, 55), "pancreatic head": (5, 5, -30),
    "pancreatic body": (15, 10, 18), "pancreatic tail": (25, 25, 72),
    "gallbladder": (20, -55, -65), "ascending colon": (-60, -5, -100),
    "transverse colon": (-10, -70, 0), "descending colon": (-55, 15, 105),
    "sigmoid colon": (-140, -20, 35), "rectum": (-190, 45, 0), "urinary bladder": (-195, -40, 0),
    "right upper lobe": (130, -10, -75), "right middle lobe": (50, -50, -80),
    "right lower lobe": (40, 50, -75), "left upper lobe": (120, -20, 75), "left lower lobe": (40, 50, 75),
}  # fmt: skip


@dataclass
class Phantom:
    """A generated CT: HU volume, label map and geometry (arrays indexed [z, y, x])."""

    ct: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]  # (sz, sy, sx) mm
    origin_mm: tuple[float, float, float]  # body-frame position (z, y, x) of voxel [0, 0, 0]
    region: str
    phase: str
    label_names: dict[int, str] = field(default_factory=lambda: dict(LABEL_NAMES))
    noise_sigma: float = 12.0


def _smooth_noise(rng, shape, coarse: int, amplitude: float) -> np.ndarray:
    grid = rng.standard_normal((coarse, coarse, coarse)).astype(np.float32)
    zoomed = ndimage.zoom(grid, [s / coarse for s in shape], order=1)
    return amplitude * zoomed[: shape[0], : shape[1], : shape[2]]


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] = (96, 96, 96),
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
    region: str = "abdomen",
    phase: str = "portal_venous",
    centre_mm: tuple[float, float, float] | None = None,
) -> Phantom:
    """Generate one phantom: ``shape`` voxels of ``spacing`` mm centred at ``centre_mm``.

    Same seed and arguments -> identical volume.
    """
    if region not in ("abdomen", "chest"):
        raise ValueError(f"region must be 'abdomen' or 'chest', not {region!r}")
    if phase not in ("portal_venous", "non_contrast"):
        raise ValueError(f"phase must be 'portal_venous' or 'non_contrast', not {phase!r}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if centre_mm is None:
        centre_mm = (0.0, 0.0, 0.0) if region == "abdomen" else (80.0, 0.0, 0.0)
    origin = tuple(c - (n - 1) * s / 2 for c, n, s in zip(centre_mm, shape, spacing, strict=True))
    axes = [
        np.float32(o) + np.arange(n, dtype=np.float32) * np.float32(s)
        for o, n, s in zip(origin, shape, spacing, strict=True)
    ]
    # Smooth random warp of space: no two bodies alike.
    warp = [_smooth_noise(rng, shape, 4, 7.0) for _ in range(3)]
    z = axes[0][:, None, None] + warp[0]
    y = axes[1][None, :, None] + warp[1]
    x = axes[2][None, None, :] + warp[2]
    body_scale = rng.uniform(0.88, 1.1)

    labels = np.zeros(shape, dtype=np.uint8)
    body_rx, body_ry = 165 * body_scale, 115 * body_scale * rng.uniform(0.92, 1.08)
    radial = (x / body_rx) ** 2 + (y / body_ry) ** 2
    labels[radial <= 1.0] = LABELS["subcutaneous fat"]
    inner = (x / (body_rx - 18)) ** 2 + (y / (body_ry - 16)) ** 2
    labels[inner <= 1.0] = LABELS["muscle"]
    cavity = (x / (body_rx - 32)) ** 2 + (y / (body_ry - 30)) ** 2
    labels[cavity <= 1.0] = LABELS["body"]
    # Ribs: bony ring segments in the muscle layer, periodic along z (upper abdomen, chest).
    ring = (inner <= 1.0) & (cavity > 0.93)
    rib_phase = np.sin((z + rng.uniform(0, 30)) * (2 * np.pi / 24.0)) > 0.55
    labels[ring & rib_phase & (z > (-40 if region == "abdomen" else -200))] = LABELS["rib"]

    organs = ORGANS_ABDOMEN if region == "abdomen" else ORGANS_CHEST
    for name, centre, radii in organs:
        scale = rng.uniform(0.85, 1.15)
        shift = rng.uniform(-8, 8, size=3)
        c = np.array(centre) * (1, body_scale, body_scale) + shift
        r = np.array(radii) * scale * (1, body_scale, body_scale)
        inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + (
            (x - c[2]) / r[2]
        ) ** 2 <= 1.0
        inside &= labels != LABELS["air"]
        if name == "liver":
            labels[inside & (x > 5)] = LABELS["left liver lobe"]
            labels[inside & (x <= 5)] = LABELS["right liver lobe"]
        elif name.endswith("lung"):
            _paint_lung_lobes(labels, inside, name, z - c[0], y - c[1])
        else:
            labels[inside] = LABELS[name]
            if name in (
                "ascending colon",
                "transverse colon",
                "descending colon",
                "sigmoid colon",
                "rectum",
                "stomach",
            ):
                lumen = ((z - c[0]) / (r[0] - 5)) ** 2 + ((y - c[1]) / (r[1] - 5)) ** 2 + (
                    (x - c[2]) / (r[2] - 5)
                ) ** 2 <= 1.0
                labels[inside & lumen] = LABELS[
                    "stomach lumen" if name == "stomach" else "colon lumen"
                ]
    # Spine and great vessels over every organ (posterior midline).
    labels[((x / 22) ** 2 + ((y - 58 * body_scale) / 20) ** 2) <= 1.0] = LABELS["vertebra"]
    labels[(((x - 16) / 11) ** 2 + ((y - 28 * body_scale) / 11) ** 2) <= 1.0] = LABELS["aorta"]
    if region == "abdomen":
        labels[(((x + 24) / 12) ** 2 + ((y - 22 * body_scale) / 12) ** 2) <= 1.0] = LABELS["ivc"]

    ct = _render_ct(labels, phase, rng, spacing)
    return Phantom(
        ct=ct, labels=labels, spacing=spacing, origin_mm=origin, region=region, phase=phase
    )


def _paint_lung_lobes(labels, inside, name, dz, dy) -> None:
    lower = (dz + 0.9 * dy) < -10  # oblique fissure: posterior-inferior part
    if name == "right lung":
        labels[inside & lower] = LABELS["right lower lobe"]
        labels[inside & ~lower & (dz > 15)] = LABELS["right upper lobe"]
        labels[inside & ~lower & (dz <= 15)] = LABELS["right middle lobe"]
    else:
        labels[inside & lower] = LABELS["left lower lobe"]
        labels[inside & ~lower] = LABELS["left upper lobe"]


def _render_ct(labels: np.ndarray, phase: str, rng, spacing) -> np.ndarray:
    """Tissue HU + smooth per-organ texture + partial-volume blur + scanner noise."""
    column = 0 if phase == "portal_venous" else 1
    lut = np.zeros(256, dtype=np.float32)
    for name, hu in TISSUE_HU.items():
        lut[LABELS[name]] = hu[column] + rng.uniform(-8, 8) * (abs(hu[column]) < 500)
    lut[LABELS["air"]] = -1000.0
    ct = lut[labels]
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.2)
    soft = (ct > -200) & (ct < 300)
    ct += np.where(soft, 14.0 * texture, 0.0).astype(np.float32)
    ct = ndimage.gaussian_filter(ct, sigma=[0.6 * 1.5 / s for s in spacing])
    ct += rng.normal(0.0, 12.0, size=labels.shape).astype(np.float32)
    return ct.astype(np.float32)
