"""Procedural CT phantoms of the abdomen and chest with a label map of the anatomy.

Organs are randomly scaled, shifted, warped and lobulated ellipsoids and tubes placed in a body
frame (mm; x to the patient's left, y posterior, z superior; origin at the body centre at L1),
inside fat and small bowel, with vessels in the liver and lungs, renal cortex/medulla/sinus,
vertebral bodies with discs and a canal, gas-fluid levels in the bowel. Only the field of view is
generated and every organ is evaluated in its own bounding box, so a 96^3 training patch costs
a fraction of a second and a 256 x 256 x 160 volume a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from malenia.synth.anatomy import LABEL_NAMES, LABELS, TISSUE_HU

# name: (centre z, y, x), radii (z, y, x) in mm. The liver is split into lobes afterwards.
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
_HOLLOW = ("ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum")
# Outline lobulation amplitude per organ (fraction of the radius); the pancreas is the bumpiest.
_LOBULATION = {"pancreatic head": 0.18, "pancreatic body": 0.18, "pancreatic tail": 0.18}
# HU added on top of an organ's own HU by its inner structures: (portal venous, non-contrast).
_STRUCTURE_HU = {
    "hepatic vessel": (65.0, -18.0),
    "renal medulla": (-30.0, -3.0),
    "lung vessel": (900.0, 900.0),
    "vertebral body": (-230.0, -230.0),
    "disc": (-370.0, -370.0),
}


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


def smooth_noise_mm(rng, shape, spacing, correlation_mm: float) -> np.ndarray:
    """Unit-variance smooth random field whose features are ~``correlation_mm`` wide.

    Drawn on a coarse grid and upsampled by separable smooth interpolation (three small
    matrix products), so its cost is a few multiply-adds per voxel whatever the smoothness.
    """
    coarse = [
        max(2, int(np.ceil(n * s / correlation_mm)) + 2)
        for n, s in zip(shape, spacing, strict=True)
    ]
    field = rng.standard_normal(coarse).astype(np.float32)
    w0, w1, w2 = (_interpolation_matrix(n, c) for n, c in zip(shape, coarse, strict=True))
    field = (w0 @ field.reshape(coarse[0], -1)).reshape(shape[0], coarse[1], coarse[2])
    field = field.transpose(0, 2, 1).reshape(-1, coarse[1]) @ w1.T  # [n0 * c2, n1]
    field = np.ascontiguousarray(field.reshape(shape[0], coarse[2], shape[1]).transpose(0, 2, 1))
    field = (field.reshape(-1, coarse[2]) @ w2.T).reshape(shape)  # one GEMM, contiguous
    expected_std = np.sqrt(np.prod([float((w**2).sum(1).mean()) for w in (w0, w1, w2)]))
    return field / np.float32(expected_std)


def _interpolation_matrix(n: int, c: int) -> np.ndarray:
    """[n, c] weights that spread c coarse nodes smoothly over n samples (Gaussian kernel)."""
    t = np.linspace(0.0, c - 1.0, n, dtype=np.float32)[:, None]
    weights = np.exp(-0.5 * ((t - np.arange(c, dtype=np.float32)[None]) / 0.75) ** 2)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def tube_network(rng, shape, spacing, correlation_mm: float, radius_mm: float) -> np.ndarray:
    """Random branching tubes: where two smooth fields are both near zero (a set of curves).

    ``|f| / |grad f|`` approximates the distance (mm) to each field's zero surface; the
    intersection of two such surfaces is a curve, so thresholding both gives vessel-like tubes.
    """
    if min(shape) < 2:  # a sliver of an organ at the edge of the volume: too thin for vessels
        return np.zeros(shape, bool)
    distances = []
    for _ in range(2):
        f = smooth_noise_mm(rng, shape, spacing, correlation_mm)
        grad = np.sqrt(
            sum((g / s) ** 2 for g, s in zip(np.gradient(f), spacing, strict=True))
        )  # per mm
        distances.append(np.abs(f) / (grad + 1e-3))
    calibre = radius_mm * (0.6 + 0.8 * (smooth_noise_mm(rng, shape, spacing, 40.0) > 0))
    return np.hypot(distances[0], distances[1]) < calibre


def _bbox(centre, radii, origin, spacing, shape, margin_mm: float):
    """Index slices of the voxels within ``radii + margin`` of ``centre``, or None if outside."""
    slices = []
    for c, r, o, s, n in zip(centre, radii, origin, spacing, shape, strict=True):
        lo = int(np.floor((c - r - margin_mm - o) / s))
        hi = int(np.ceil((c + r + margin_mm - o) / s)) + 1
        lo, hi = max(lo, 0), min(hi, n)
        if lo >= hi:
            return None
        slices.append(slice(lo, hi))
    return tuple(slices)


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
    # Smooth random warp of space (mm): no two bodies alike.
    warp = [7.0 * smooth_noise_mm(rng, shape, spacing, 70.0) for _ in range(3)]
    z = axes[0][:, None, None] + warp[0]
    y = axes[1][None, :, None] + warp[1]
    x = axes[2][None, None, :] + warp[2]
    body_scale = rng.uniform(0.88, 1.1)
    lobulation = smooth_noise_mm(rng, shape, spacing, 14.0)
    structure = np.zeros(shape, np.uint8)  # inner-structure codes, see _STRUCTURE_HU
    codes = {name: i + 1 for i, name in enumerate(_STRUCTURE_HU)}

    labels = _body_wall(rng, z, y, x, body_scale, region)
    organs = ORGANS_ABDOMEN if region == "abdomen" else ORGANS_CHEST
    for name, centre, radii in organs:
        scale = rng.uniform(0.85, 1.15)
        shift = rng.uniform(-8, 8, size=3)
        c = np.array(centre) * (1, body_scale, body_scale) + shift
        r = np.array(radii) * scale * (1, body_scale, body_scale)
        box = _bbox(c, r * 1.2, origin, spacing, shape, margin_mm=30.0)
        if box is None:
            continue
        bz, by, bx = z[box] - c[0], y[box] - c[1], x[box] - c[2]
        q = (bz / r[0]) ** 2 + (by / r[1]) ** 2 + (bx / r[2]) ** 2
        q = q * (1.0 + _LOBULATION.get(name, 0.05) * lobulation[box])
        inside = (q <= 1.0) & (labels[box] != LABELS["air"])
        sub = labels[box]
        if name == "liver":
            sub[inside & (x[box] > 5)] = LABELS["left liver lobe"]
            sub[inside & (x[box] <= 5)] = LABELS["right liver lobe"]
        elif name.endswith("lung"):
            _paint_lung_lobes(sub, inside, name, bz, by)
        elif name.endswith("kidney"):
            sub[inside] = LABELS[name]
            # Sinus fat opens medially (towards the spine); medulla between sinus and cortex.
            medial = -np.sign(c[2]) * bx / r[2]
            sinus = inside & (q < 0.35) & (medial > -0.2)
            sub[sinus] = LABELS["renal sinus"]
            structure[box][inside & ~sinus & (q < 0.62)] = codes["renal medulla"]
        else:
            sub[inside] = LABELS[name]
            if name in _HOLLOW or name == "stomach":
                wall_mm = 3.0 if name in _HOLLOW else 5.0
                lumen = inside & ((bz / (r[0] - wall_mm)) ** 2 + (by / (r[1] - wall_mm)) ** 2
                                  + (bx / (r[2] - wall_mm)) ** 2 <= 1.0)  # fmt: skip
                # Supine patient: gas rises anteriorly (small y), fluid/stool lies posteriorly.
                gas = lumen & (by < rng.uniform(-0.3, 0.4) * r[1])
                sub[lumen] = LABELS["stomach lumen" if name == "stomach" else "colon lumen"]
                sub[gas] = LABELS["bowel gas"]
    _spine_and_vessels(labels, structure, codes, z, y, x, body_scale, region, rng)
    _organ_vessels(rng, labels, structure, codes, spacing)

    ct = _render_ct(labels, structure, phase, rng, spacing, region)
    return Phantom(
        ct=ct, labels=labels, spacing=spacing, origin_mm=origin, region=region, phase=phase
    )


def _body_wall(rng, z, y, x, body_scale, region) -> np.ndarray:
    """Skin/fat, muscle, the cavity (fat and small bowel) and obliquely running ribs."""
    labels = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.uint8)
    body_rx, body_ry = 165 * body_scale, 115 * body_scale * rng.uniform(0.92, 1.08)
    fat_mm = rng.uniform(10, 30)
    radial = (x / body_rx) ** 2 + (y / body_ry) ** 2
    labels[radial <= 1.0] = LABELS["subcutaneous fat"]
    inner = (x / (body_rx - fat_mm)) ** 2 + (y / (body_ry - fat_mm)) ** 2
    labels[inner <= 1.0] = LABELS["muscle"]
    cavity = (x / (body_rx - fat_mm - 14)) ** 2 + (y / (body_ry - fat_mm - 12)) ** 2
    labels[cavity <= 1.0] = LABELS["body"]
    ring = (inner <= 1.0) & (cavity > 0.9)
    slope = rng.uniform(0.25, 0.45)  # ribs descend anteriorly
    rib_phase = np.sin((z + slope * y + rng.uniform(0, 30)) * (2 * np.pi / 26.0)) > 0.6
    labels[ring & rib_phase & (z > (-40 if region == "abdomen" else -200))] = LABELS["rib"]
    return labels


def _spine_and_vessels(labels, structure, codes, z, y, x, body_scale, region, rng) -> None:
    """Vertebral body (cortex, cancellous bone, discs), canal, aorta and IVC over the organs."""
    vy = 62 * body_scale
    body = ((x / 21) ** 2 + ((y - vy) / 17) ** 2) <= 1.0
    labels[body] = LABELS["vertebra"]
    structure[body & (((x / 17) ** 2 + ((y - vy) / 13) ** 2) <= 1.0)] = codes["vertebral body"]
    disc = (np.mod(z + rng.uniform(0, 32), 32.0) < 7.0) & body
    structure[np.broadcast_to(disc, labels.shape)] = codes["disc"]
    arch = (((x / 16) ** 2 + ((y - vy - 26) / 12) ** 2) <= 1.0) & ~body
    labels[np.broadcast_to(arch, labels.shape)] = LABELS["vertebra"]
    canal = ((x / 8) ** 2 + ((y - vy - 24) / 7) ** 2) <= 1.0
    labels[np.broadcast_to(canal, labels.shape)] = LABELS["spinal canal"]
    labels[(((x - 16) / 11) ** 2 + ((y - 30 * body_scale) / 11) ** 2) <= 1.0] = LABELS["aorta"]
    if region == "abdomen":
        ivc = (((x + 24) / 12) ** 2 + ((y - 24 * body_scale) / 10) ** 2) <= 1.0
        labels[ivc] = LABELS["ivc"]


def _organ_vessels(rng, labels, structure, codes, spacing) -> None:
    """Branching enhancing vessels inside the liver and the lungs, only where those exist."""
    for names, code, corr, radius in (
        (("right liver lobe", "left liver lobe"), "hepatic vessel", 22.0, 2.2),
        (_LUNG_NAMES, "lung vessel", 16.0, 1.5),
    ):
        host = np.isin(labels, [LABELS[n] for n in names])
        if not host.any():
            continue
        lo, hi = _extent(host)
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        tubes = tube_network(rng, host[box].shape, spacing, corr, radius)
        structure[box][tubes & host[box]] = codes[code]


def _extent(mask: np.ndarray) -> tuple[list[int], list[int]]:
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        lo.append(int(present[0]))
        hi.append(int(present[-1]))
    return lo, hi


_LUNG_NAMES = (
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "left lower lobe",
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


def _render_ct(
    labels: np.ndarray, structure: np.ndarray, phase: str, rng, spacing, region: str
) -> np.ndarray:
    """Tissue HU + inner structures + smooth texture + partial-volume blur + scanner noise."""
    column = 0 if phase == "portal_venous" else 1
    lut = np.zeros(256, dtype=np.float32)
    for name, hu in TISSUE_HU.items():
        lut[LABELS[name]] = hu[column] + rng.uniform(-8, 8) * (abs(hu[column]) < 500)
    lut[LABELS["air"]] = -1000.0
    ct = lut[labels]
    offsets = np.zeros(256, np.float32)
    for i, hu in enumerate(_STRUCTURE_HU.values()):
        offsets[i + 1] = hu[column]
    ct += offsets[structure]
    # The cavity is mesenteric fat with small-bowel loops (soft tissue, some fluid and gas).
    cavity = labels == LABELS["body"]
    if cavity.any():
        loops = smooth_noise_mm(rng, labels.shape, spacing, 18.0)
        fat_level = rng.uniform(-0.2, 0.5)
        gas = -650.0 if region == "abdomen" else 40.0  # the mediastinum has no bowel gas
        bowel = np.where(loops > fat_level + 0.9, gas, np.where(loops > fat_level, 40.0, -95.0))
        ct[cavity] = bowel.astype(np.float32)[cavity]
    # Stool: mottled gas inside the fluid part of the colon (only in the colon's box).
    stool = labels == LABELS["colon lumen"]
    if stool.any():
        lo, hi = _extent(stool)
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        mottle = _texture(rng, stool[box].shape, 1.0)
        ct[box][stool[box]] += (np.where(mottle > 0.35, -500.0, 0.0) + 60.0 * mottle)[stool[box]]
    texture = _texture(rng, labels.shape, 1.2)
    soft = (ct > -200) & (ct < 300)
    ct += np.where(soft, 14.0 * texture, 0.0).astype(np.float32)
    ct = ndimage.gaussian_filter(ct, sigma=[0.6 * 1.5 / s for s in spacing], truncate=2.5)
    ct += 12.0 * rng.standard_normal(labels.shape, dtype=np.float32)
    return ct.astype(np.float32)


def _texture(rng, shape, sigma_vox: float) -> np.ndarray:
    """Fine-grained smooth noise (a short Gaussian kernel: texture, not shape)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    return ndimage.gaussian_filter(white, sigma_vox, truncate=2.0)
