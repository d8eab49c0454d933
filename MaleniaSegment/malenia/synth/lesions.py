"""Render lesions into a CT (phantom or real) from their attribute records.

Each attribute has a visible, measurable effect: location picks the host sub-region, shape
the outline (ellipsoid vs lobulated/spiculated), density the HU relative to the host organ,
density variation the internal texture, surface the edge sharpness, relation whether the
lesion stays inside its organ or reaches into a neighbour, and specific features add
calcification, septation, duct dilatation or pleural traction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from malenia.attributes.schema import LesionDescription
from malenia.synth.anatomy import LABELS, LOCATION_LABEL

_NON_ORGAN = {
    LABELS[n] for n in ("air", "body", "subcutaneous fat", "muscle", "colon lumen", "stomach lumen")
}
_CYSTS = {"renal cyst", "pancreatic cyst", "hepatic cyst", "splenic cyst"}
_LUNG = {
    LABELS[n]
    for n in (
        "right upper lobe",
        "right middle lobe",
        "right lower lobe",
        "left upper lobe",
        "left lower lobe",
    )
}


@dataclass
class LesionRecord:
    """What to render: a category, its description, report text and a diameter range."""

    category: str
    description: LesionDescription
    report: str = ""
    size_mm: tuple[float, float] = (10.0, 40.0)
    rendered: dict = field(default_factory=dict)  # filled in: centre, diameter, host HU...


class RenderError(ValueError):
    """The requested lesion cannot be placed in this volume (e.g. its organ is absent)."""


def _smooth_field(rng, shape, sigma_vox) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return noise / (noise.std() + 1e-6)


def _pick_centre(
    host: np.ndarray,
    labels: np.ndarray,
    radius_vox: np.ndarray,
    related: bool,
    rng,
    taken: np.ndarray,
) -> np.ndarray:
    """A voxel inside the host: deep inside normally, at a border with another organ when
    the lesion is 'closely related to surrounding organs'."""
    free = host & ~taken
    if related:
        other_organ = ~np.isin(labels, list(_NON_ORGAN)) & ~host
        near_other = ndimage.binary_dilation(
            other_organ, iterations=max(2, int(radius_vox.mean() * 0.5))
        )
        candidates = np.argwhere(free & near_other)
        if len(candidates):
            return candidates[rng.integers(len(candidates))]
    depth = ndimage.distance_transform_edt(free)
    for fraction in (0.6, 0.35, 0.0):
        candidates = np.argwhere(depth > fraction * radius_vox.min())
        if len(candidates):
            return candidates[rng.integers(len(candidates))]
    raise RenderError("no free voxel in the host organ")


def render_lesions(
    ct: np.ndarray,
    labels: np.ndarray,
    records: list[LesionRecord],
    rng: np.random.Generator,
    spacing: tuple[float, float, float],
    location_labels: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[LesionRecord]]:
    """Insert one lesion per record. Returns (new ct, instance mask int16, rendered records).

    ``labels`` may be a phantom label map or a real CT's organ labels converted with
    ``location_labels`` (canonical location -> label id). Records whose organ is not in the
    volume are skipped; the returned list holds only lesions actually rendered, in the
    order of their instance ids.
    """
    location_labels = location_labels or LOCATION_LABEL
    ct = ct.astype(np.float32, copy=True)
    instances = np.zeros(ct.shape, dtype=np.int16)
    spacing_arr = np.asarray(spacing, dtype=np.float32)
    rendered: list[LesionRecord] = []
    for record in records:
        location = record.description.location
        label = location_labels.get(location or "")
        host = labels == label if label is not None else np.zeros(ct.shape, bool)
        if host.sum() < 20:
            continue
        try:
            _render_one(ct, labels, instances, host, record, rng, spacing_arr, len(rendered) + 1)
        except RenderError:
            continue
        rendered.append(record)
    return ct, instances, rendered


def _render_one(
    ct, labels, instances, host, record: LesionRecord, rng, spacing, instance_id: int
) -> None:
    d = record.description
    host_extent_mm = (np.ptp(np.argwhere(host), axis=0) + 1) * spacing
    diameter = float(rng.uniform(*record.size_mm))
    diameter = min(diameter, 0.8 * float(np.sort(host_extent_mm)[1]))
    diameter = max(diameter, 3.0 * float(spacing.max()))
    radius_mm = diameter / 2
    axes = radius_mm * rng.uniform(0.8, 1.15, size=3)
    radius_vox = axes / spacing
    related = d.relation == "closely related to surrounding organs"
    centre = _pick_centre(host, labels, radius_vox, related, rng, instances > 0)

    margin = np.ceil(radius_vox * 1.8 + 3).astype(int)
    lo = np.maximum(centre - margin, 0)
    hi = np.minimum(centre + margin + 1, ct.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grid = np.meshgrid(
        *[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing, strict=True)],
        indexing="ij",
    )
    rotation = _random_rotation(rng)
    local = [sum(rotation[i, j] * grid[j] for j in range(3)) for i in range(3)]
    distance = np.sqrt(sum((local[i] / axes[i]) ** 2 for i in range(3)))  # 1.0 at the edge
    shape_box = distance.shape

    if d.shape == "irregular":
        lobes = _smooth_field(rng, shape_box, sigma_vox=max(1.0, float(radius_vox.mean()) * 0.35))
        distance = distance * (1.0 + 0.28 * lobes)
    spiculated = (
        "spiculation" in d.specific_features
        or (host & np.isin(labels, list(_LUNG))).any()
        and d.surface == "ill-defined margin"
    )
    if spiculated:
        spikes = _smooth_field(rng, shape_box, sigma_vox=0.7)
        distance = distance - 0.25 * np.clip(spikes - 1.2, 0, None) * (distance < 1.6)

    edge_mm = 0.5 * float(spacing.mean()) if d.surface != "ill-defined margin" else 3.0
    width = edge_mm / radius_mm
    alpha = 1.0 / (1.0 + np.exp(-(1.0 - distance) / max(width, 1e-3) * 1.7))
    if d.surface == "ill-defined margin":
        alpha *= np.clip(1.0 + 0.25 * _smooth_field(rng, shape_box, 1.0), 0, 1.2)
        alpha = np.clip(alpha, 0, 1)

    box_labels = labels[box]
    host_box = host[box]
    if not related:
        # Stay within the host (and fat / free space): no invasion of neighbours.
        allowed = host_box | np.isin(box_labels, list(_NON_ORGAN))
        alpha = alpha * ndimage.binary_dilation(allowed, iterations=1)
    alpha *= box_labels != LABELS["air"]

    host_hu = float(np.median(ct[host]))
    lesion_hu = _lesion_intensity(
        record, d, host_hu, host_box, labels, rng, shape_box, radius_vox, distance
    )
    noise_sigma = (
        float(np.std(ct[host] - ndimage.uniform_filter(ct, 3)[host])) if host.sum() > 50 else 12.0
    )
    lesion_hu = lesion_hu + rng.normal(0, max(noise_sigma, 6.0), size=shape_box).astype(np.float32)
    _add_features(
        d, ct, labels, box, local, axes, distance, alpha, lesion_hu, rng, spacing, centre, host_hu
    )

    ct[box] = ct[box] * (1.0 - alpha) + lesion_hu * alpha
    mask = (alpha > 0.5) & (instances[box] == 0)
    instances[box][mask] = instance_id
    record.rendered = {
        "instance": instance_id,
        "centre_voxel": [int(v) for v in centre],
        "diameter_mm": round(diameter, 1),
        "host_hu": round(host_hu, 1),
        "lesion_hu": round(float(np.median(lesion_hu[mask])) if mask.any() else float("nan"), 1),
        "voxels": int(mask.sum()),
    }


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _lesion_intensity(
    record, d, host_hu, host_box, labels, rng, shape_box, radius_vox, distance
) -> np.ndarray:
    in_lung = host_hu < -500
    if in_lung:
        base = {
            "hypodense": -600.0,
            "isodense": 35.0,
            "hyperdense": 110.0,
            "mixed ground-glass and solid": -550.0,
        }.get(d.density or "", 35.0)
    elif record.category in _CYSTS and d.density == "hypodense":
        base = float(rng.uniform(2, 18))
    else:
        offset = {
            "hypodense": -rng.uniform(40, 75),
            "isodense": rng.uniform(-6, 6),
            "hyperdense": rng.uniform(35, 70),
        }
        base = host_hu + float(offset.get(d.density or "", rng.uniform(-40, 40)))
    hu = np.full(shape_box, base, dtype=np.float32)
    if d.density == "mixed ground-glass and solid":
        hu = np.where(distance < 0.45, 30.0, hu).astype(np.float32)
    if d.density_variation == "heterogeneous":
        amplitude = 120.0 if in_lung else 40.0
        hu += amplitude * _smooth_field(rng, shape_box, max(1.0, float(radius_vox.mean()) * 0.25))
        if not in_lung and "necrosis" not in d.specific_features and rng.random() < 0.5:
            hu = np.where(distance < 0.4, hu - 35.0, hu)
    else:
        hu += 3.0 * _smooth_field(rng, shape_box, 1.0)
    if d.density == "isodense" and d.surface != "ill-defined margin":
        hu = np.where((distance > 0.85) & (distance < 1.0), hu - 18.0, hu)  # thin pseudocapsule
    if "necrosis" in d.specific_features:
        hu = np.where(distance < 0.45, min(base, host_hu) - 45.0, hu)
    if "fat" in d.specific_features:
        fat = _smooth_field(rng, shape_box, 1.5) > 0.3
        hu = np.where(fat & (distance < 0.9), -80.0, hu)
    return hu.astype(np.float32)


def _add_features(
    d, ct, labels, box, local, axes, distance, alpha, lesion_hu, rng, spacing, centre, host_hu
) -> None:
    features = set(d.specific_features)
    inside = distance < 0.85
    if "calcification" in features and inside.any():
        points = np.argwhere(inside)
        for index in rng.choice(len(points), size=min(4, len(points)), replace=False):
            p = points[index]
            spot = (
                sum(((np.indices(distance.shape)[i] - p[i]) * spacing[i]) ** 2 for i in range(3))
                <= rng.uniform(1.0, 2.5) ** 2
            )
            lesion_hu[spot] = rng.uniform(350, 700)
    if "septation" in features:
        for _ in range(int(rng.integers(1, 3))):
            normal = rng.standard_normal(3)
            normal /= np.linalg.norm(normal)
            plane = np.abs(sum(normal[i] * local[i] for i in range(3))) < 0.9
            lesion_hu[plane & inside] = host_hu + 20.0
    if "duct dilatation" in features:
        # A dilated, fluid-filled duct leaving the lesion along x (the pancreas' long axis).
        z0, y0, x0 = centre
        radius = max(1, int(round(2.5 / spacing[1])))
        ys, zs = (
            slice(max(y0 - radius, 0), y0 + radius + 1),
            slice(max(z0 - radius, 0), z0 + radius + 1),
        )
        xs = slice(x0, min(x0 + int(60 / spacing[2]), ct.shape[2]))
        tube = np.isin(
            labels[zs, ys, xs],
            [LABELS["pancreatic body"], LABELS["pancreatic tail"], LABELS["pancreatic head"]],
        )
        ct[zs, ys, xs][tube] = 12.0
    if "pleural traction" in features:
        # A thin soft-tissue strand from the lesion to the nearest chest wall.
        z0, y0, x0 = centre
        x_wall = 0 if x0 < ct.shape[2] // 2 else ct.shape[2] - 1
        step = -1 if x_wall == 0 else 1
        for x in range(x0, x_wall, step):
            if labels[z0, y0, x] not in _LUNG:
                break
            ct[z0, max(y0 - 1, 0) : y0 + 1, x] = -100.0
