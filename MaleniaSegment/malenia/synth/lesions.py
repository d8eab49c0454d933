"""Render lesions into a CT (phantom or real) from their attribute records.

Each attribute has a visible, measurable effect: location picks the host sub-region, shape
the outline (ellipsoid vs lobulated/spiculated), density the HU relative to the host organ,
density variation the internal texture, surface the edge sharpness, relation whether the
lesion stays inside its organ or reaches into a neighbour, and specific features add
calcification, septation, necrosis, fat, cavitation, capsule, haemorrhage, colonic wall
thickening, duct dilatation or pleural traction. Every lesion pushes its surroundings aside
(mass effect), so an isodense lesion still shows through displaced vessels and outlines, a
faint capsule and a texture of its own, as in real CT.

Everything is computed inside a box around the lesion, so the cost does not depend on the
size of the volume (a whole real CT costs the same as a training patch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy import ndimage, special

from malenia.attributes.schema import LesionDescription
from malenia.synth.anatomy import LABELS, LOCATION_LABEL

NON_ORGAN: frozenset[int] = frozenset(
    LABELS[n]
    for n in (
        "air", "body", "subcutaneous fat", "muscle", "colon lumen", "stomach lumen",
        "renal sinus", "bowel gas", "spinal canal",
    )
)  # fmt: skip
_CYSTS = {"renal cyst", "pancreatic cyst", "hepatic cyst", "splenic cyst"}
LUNG_LABELS: frozenset[int] = frozenset(
    LABELS[n]
    for n in ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
              "left lower lobe")
)  # fmt: skip
_PANCREAS = (LABELS["pancreatic head"], LABELS["pancreatic body"], LABELS["pancreatic tail"])
_COLON = {
    LABELS[n]
    for n in ("ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum")
}
_LUMEN = (LABELS["colon lumen"], LABELS["bowel gas"])


@dataclass
class LesionRecord:
    """What to render: a category, its description, report text and a diameter range."""

    category: str
    description: LesionDescription
    report: str = ""
    size_mm: tuple[float, float] = (10.0, 40.0)
    rendered: dict = field(default_factory=dict)  # filled in: centre, diameter, host HU...
    # Scales every difference from its host that the density and texture attributes make
    # (solid tissue only): the mean HU offset, the heterogeneous mottle, the isodense grain
    # and capsule. Real lesions range from marked to barely visible (an HCC in its
    # equilibrium phase is 5-15 HU below the liver, with the liver's own grain; a sarcoma
    # can match its muscle within a few HU). Named features (necrosis, calcification...)
    # stay as they are; the phantoms keep 1.0.
    contrast: float = 1.0


# A lesion rendered into a real CT keeps the scanner's noise where it is: the noise is the
# part of the CT a Gaussian of this width (voxels) removes, clipped at 3 robust standard
# deviations so that vessel and organ edges stay with the anatomy. Drawn as fresh white
# noise instead (as for phantoms, whose own noise is white), every rendered lesion carried a
# texture no real tissue has, and weights trained on them learnt that texture: a -40 HU
# blob in a real training liver got probability 0.000 with the liver's own grain and 1.000
# with white noise (docs/EVALUATION.md, stage 23).
SCANNER_NOISE_SIGMA_VOX = 1.5


class RenderError(ValueError):
    """The requested lesion cannot be placed in this volume (e.g. its organ is absent)."""


def _smooth_field(rng, shape, sigma_vox) -> np.ndarray:
    noise = ndimage.gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32), sigma_vox, truncate=3.0
    )
    return noise / (noise.std() + 1e-6)


def _host_box(host: np.ndarray, margin: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the host organ grown by ``margin`` voxels per axis."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(host.any(axis=other))
        lo = max(int(present[0]) - int(margin[axis]), 0)
        hi = min(int(present[-1]) + int(margin[axis]) + 1, host.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def _pick_centre(host, labels, radius_vox, related: bool, rng, taken, placement=None) -> np.ndarray:
    """A voxel inside the host: deep inside normally, at a border with another organ when
    the lesion is 'closely related to surrounding organs'; among ``placement``'s voxels
    when it has free ones in the host."""
    box = _host_box(host, np.ceil(radius_vox) + 2)
    offset = np.array([s.start for s in box])
    free = host[box] & ~taken[box]
    if placement is not None:
        candidates = np.argwhere(free & placement[box])
        if len(candidates):
            return offset + candidates[rng.integers(len(candidates))]
    if related:
        box_labels = labels[box]
        other_organ = ~np.isin(box_labels, list(NON_ORGAN)) & ~host[box]
        reach = max(2, int(radius_vox.mean() * 0.5))
        near_other = ndimage.binary_dilation(other_organ, iterations=reach)
        candidates = np.argwhere(free & near_other)
        if len(candidates):
            return offset + candidates[rng.integers(len(candidates))]
    depth = ndimage.distance_transform_edt(free)
    for fraction in (0.6, 0.35, 0.0):
        candidates = np.argwhere(depth > fraction * radius_vox.min())
        if len(candidates):
            return offset + candidates[rng.integers(len(candidates))]
    raise RenderError("no free voxel in the host organ")


def render_lesions(
    ct: np.ndarray,
    labels: np.ndarray,
    records: list[LesionRecord],
    rng: np.random.Generator,
    spacing: tuple[float, float, float],
    location_labels: dict[str, int] | None = None,
    placement: np.ndarray | None = None,
    keep_scanner_noise: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[LesionRecord]]:
    """Insert one lesion per record. Returns (new ct, instance mask int16, rendered records).

    ``labels`` may be a phantom label map or a real CT's organ labels converted with
    ``synth.real_ct.labels_from_totalseg`` (or any map with ``location_labels``: canonical
    location -> label id). ``placement``: where in its host a lesion's centre may go (e.g.
    under the pleura); None, or no free voxel of it in the host, places it anywhere there.
    ``keep_scanner_noise`` (for real CT): the lesion keeps the scan's own noise instead of
    fresh white noise (see SCANNER_NOISE_SIGMA_VOX). Records whose organ is not in the
    volume are skipped; the returned list holds only lesions actually rendered, in the order
    of their instance ids. ``labels`` is not modified (organ outlines near a lesion move by
    its mass effect in ``ct`` only).
    """
    location_labels = location_labels or LOCATION_LABEL
    ct = ct.astype(np.float32, copy=True)
    instances = np.zeros(ct.shape, dtype=np.int16)
    spacing_arr = np.asarray(spacing, dtype=np.float32)
    rendered: list[LesionRecord] = []
    for record in records:
        location = record.description.location
        label = location_labels.get(location or "")
        if label is None:
            continue
        host = labels == label
        if host.sum() < 20:
            continue
        try:
            instance = len(rendered) + 1
            _render_one(ct, labels, instances, host, record, rng, spacing_arr, instance, placement,
                        keep_scanner_noise)  # fmt: skip
        except RenderError:
            continue
        rendered.append(record)
    return ct, instances, rendered


def render_in_host(
    ct: np.ndarray,
    labels: np.ndarray,
    host: np.ndarray,
    record: LesionRecord,
    rng: np.random.Generator,
    spacing: tuple[float, float, float],
    keep_scanner_noise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One lesion inside ``host`` (a mask, for tissue no location names, e.g. muscle).
    Returns (new ct, instance mask with the lesion as 1); RenderError when it cannot be placed."""
    ct = ct.astype(np.float32, copy=True)
    instances = np.zeros(ct.shape, dtype=np.int16)
    if host.sum() < 20:
        raise RenderError("the host tissue is not in this volume")
    spacing_arr = np.asarray(spacing, dtype=np.float32)
    _render_one(ct, labels, instances, host, record, rng, spacing_arr, 1,
                keep_scanner_noise=keep_scanner_noise)  # fmt: skip
    return ct, instances


# --------------------------------------------------------------------------- one lesion


def _render_one(
    ct,
    labels,
    instances,
    host,
    record: LesionRecord,
    rng,
    spacing,
    instance_id: int,
    placement: np.ndarray | None = None,
    keep_scanner_noise: bool = False,
) -> None:
    d = record.description
    features = set(d.specific_features)
    host_extent_mm = (np.ptp(np.argwhere(host), axis=0) + 1) * spacing
    diameter = float(rng.uniform(*record.size_mm))
    diameter = min(diameter, 0.8 * float(np.sort(host_extent_mm)[1]))
    diameter = max(diameter, 3.0 * float(spacing.max()))
    radius_mm = diameter / 2
    axes = radius_mm * rng.uniform(0.8, 1.15, size=3)
    radius_vox = axes / spacing
    related = d.relation == "closely related to surrounding organs"
    centre = _pick_centre(host, labels, radius_vox, related, rng, instances > 0, placement)

    margin = np.ceil(radius_vox * 2.0 + 4).astype(int)
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
    distance = _outline(d, features, distance, rng, radius_vox, host[box], labels[box])

    box_labels = labels[box]
    host_box = host[box]
    colon_wall = int(labels[tuple(centre)]) in _COLON
    alpha = _opacity(d, distance, rng, radius_mm, spacing)
    if colon_wall:
        alpha = alpha * _colon_wall_region(box_labels, host_box, spacing, rng)
    elif not related:
        # Stay within the host (and fat / free space): no invasion of neighbours.
        allowed = host_box | np.isin(box_labels, list(NON_ORGAN))
        alpha = alpha * ndimage.binary_dilation(allowed, iterations=1)
    alpha *= box_labels != LABELS["air"]
    alpha = _keep_main_part(alpha, distance)

    # Host statistics from the box (cheap on a whole real CT): median HU and noise level.
    host_values = ct[box][host_box]
    host_hu = float(np.median(host_values)) if host_values.size else float(np.median(ct[host]))
    host_noise = lesion_noise = 0.0
    if keep_scanner_noise:
        # The anatomy moves and the lesion replaces it; the noise stays where the scanner put
        # it. A lung's fine grain is mostly its own vessels and septa (4-5x the noise of its
        # soft tissue), so a lesion in the lung gets noise like the scan's soft tissue instead.
        in_lung = host_hu < -500
        if in_lung:  # measured before the box gives up its noise
            lesion_noise = matched_scanner_noise(ct, distance.shape, rng)
        ct[box], host_noise = split_scanner_noise(ct[box], host_box)
        if not in_lung:
            lesion_noise = host_noise
    else:
        noise_sigma = _noise_sigma(ct[box], host_box)

    if not colon_wall:
        _mass_effect(ct, box, grid, axes, spacing, d, rng)
    lesion_hu = _lesion_intensity(record, d, features, host_hu, rng, distance, radius_vox)
    if not keep_scanner_noise:
        lesion_hu += noise_sigma * rng.standard_normal(distance.shape, dtype=np.float32)
    _add_features(features, distance, local, lesion_hu, rng, spacing, host_hu)

    ct[box] = (ct[box] + host_noise) * (1.0 - alpha) + (lesion_hu + lesion_noise) * alpha
    mask = (alpha > 0.5) & (instances[box] == 0)
    instances[box][mask] = instance_id
    if "duct dilatation" in features:
        _dilate_duct(ct, labels, host, centre, radius_mm, spacing, rng, instances)
    if "pleural traction" in features:
        _pleural_traction(ct, labels, centre, spacing, rng, instances)
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


def _outline(d, features, distance, rng, radius_vox, host_box, box_labels) -> np.ndarray:
    """Shape: ellipsoid (round-like), lobulated (irregular / lobulation), spiculated."""
    if d.shape == "irregular" or "lobulation" in features:
        amplitude = 0.3 if d.shape == "irregular" else 0.15
        lobes = _smooth_field(rng, distance.shape, max(1.0, float(radius_vox.mean()) * 0.35))
        distance = distance * (1.0 + amplitude * lobes)
    in_lung = bool(np.isin(box_labels[host_box], list(LUNG_LABELS)).any())
    if "spiculation" in features or (in_lung and d.surface == "ill-defined margin"):
        spikes = _smooth_field(rng, distance.shape, 0.7)
        distance = distance - 0.3 * np.clip(spikes - 1.2, 0, None) * (distance < 1.7)
    return distance


def _opacity(d, distance, rng, radius_mm, spacing) -> np.ndarray:
    """Lesion fraction per voxel: a sharp edge, or a wide, uneven, infiltrating one (the
    unevenness moves the edge, so the mask stays one smooth piece)."""
    ill = d.surface == "ill-defined margin"
    edge_mm = 3.5 if ill else 0.35 * float(spacing.mean())
    width = edge_mm / radius_mm
    if ill:
        distance = distance + min(0.25, 4.0 / radius_mm) * _smooth_field(rng, distance.shape, 1.5)
    alpha = special.expit((1.0 - distance) / max(width, 1e-3) * 1.7)  # no overflow far out
    return alpha.astype(np.float32)


def _colon_wall_region(box_labels, host_box, spacing, rng) -> np.ndarray:
    """Colon cancer grows in the wall and into the lumen: wall + lumen within a few mm of it
    + a thin rim outside, so the lumen narrows."""
    lumen = np.isin(box_labels, _LUMEN)
    from_wall = ndimage.distance_transform_edt(~host_box, sampling=spacing)
    inward = float(rng.uniform(4.0, 9.0))
    region = host_box | (lumen & (from_wall < inward)) | (~lumen & (from_wall < 2.5))
    return ndimage.gaussian_filter(region.astype(np.float32), 0.7)


def _keep_main_part(alpha, distance) -> np.ndarray:
    """One lesion, one connected piece: drop fragments cut off by organ borders or spikes."""
    core = alpha > 0.5
    components, count = ndimage.label(core)
    if count <= 1:
        return alpha
    sizes = ndimage.sum_labels(core, components, index=np.arange(1, count + 1))
    keep = components == (int(np.argmax(sizes)) + 1)
    support = ndimage.gaussian_filter(
        ndimage.binary_dilation(keep, iterations=2).astype(np.float32), 0.8
    )
    return alpha * np.minimum(support * 1.3, 1.0)


def split_scanner_noise(ct_box: np.ndarray, host_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anatomy, noise) with anatomy + noise == ``ct_box``: the noise is what a Gaussian of
    SCANNER_NOISE_SIGMA_VOX leaves, clipped at 3 robust standard deviations of the host's
    (the excess at vessel and organ edges stays with the anatomy)."""
    residual = ct_box - ndimage.gaussian_filter(ct_box, SCANNER_NOISE_SIGMA_VOX)
    values = residual[host_box] if host_box.sum() >= 50 else residual.ravel()
    sigma = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    noise = np.clip(residual, -3.0 * sigma, 3.0 * sigma).astype(np.float32)
    return (ct_box - noise).astype(np.float32), noise


def matched_scanner_noise(ct: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    """Noise like ``ct``'s own where its soft tissue is flat (no edge within a few mm, so
    the fine grain there is noise): its level and, per axis, how much neighbours agree (a
    5 mm scan on a 2 mm grid is smooth along z: 0.8-0.9 against 0.0-0.2 in-plane in the HCC
    training scans), drawn as white noise through a Gaussian of the matching width per axis."""
    residual = ct - ndimage.gaussian_filter(ct, SCANNER_NOISE_SIGMA_VOX)
    smooth = ndimage.gaussian_filter(ct, 2.0)
    flat = (smooth > -50) & (smooth < 150) & (ndimage.gaussian_gradient_magnitude(ct, 2.0) < 3.0)
    level, widths = 8.0, (0.5, 0.5, 0.5)  # a typical CT when the box has no flat soft tissue
    if flat.sum() >= 500:
        values = residual[flat]
        level = 1.4826 * float(np.median(np.abs(values - np.median(values))))
        widths = tuple(
            _width_for_correlation(_neighbour_correlation(residual, flat, axis))
            for axis in range(3)
        )
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), widths)
    fine = noise - ndimage.gaussian_filter(noise, SCANNER_NOISE_SIGMA_VOX)
    return (noise * (level / max(float(fine.std()), 1e-6))).astype(np.float32)


def _neighbour_correlation(field: np.ndarray, mask: np.ndarray, axis: int) -> float:
    ahead = [slice(None)] * 3
    behind = [slice(None)] * 3
    ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
    pairs = mask[tuple(ahead)] & mask[tuple(behind)]
    if pairs.sum() < 100:
        return 0.0
    return float(np.corrcoef(field[tuple(ahead)][pairs], field[tuple(behind)][pairs])[0, 1])


@cache
def _correlation_by_width() -> tuple[np.ndarray, np.ndarray]:
    """Neighbour correlation of the fine grain (as split_scanner_noise takes it) of white
    noise blurred along one axis by each width: the table matched_scanner_noise inverts."""
    widths = np.linspace(0.0, 2.0, 17)
    white = np.random.default_rng(0).standard_normal((40, 40, 40)).astype(np.float32)
    correlations = []
    for width in widths:
        noise = ndimage.gaussian_filter(white, (float(width), 0.0, 0.0))
        fine = noise - ndimage.gaussian_filter(noise, SCANNER_NOISE_SIGMA_VOX)
        correlations.append(_neighbour_correlation(fine, np.ones(fine.shape, bool), 0))
    rising = np.array(correlations) > np.maximum.accumulate([-1.0, *correlations[:-1]])
    return np.array(correlations)[rising], widths[rising]


def _width_for_correlation(correlation: float) -> float:
    correlations, widths = _correlation_by_width()
    return float(np.interp(correlation, correlations, widths))


def _noise_sigma(ct_box, host_box) -> float:
    if host_box.sum() < 50:
        return 12.0
    residual = ct_box - ndimage.uniform_filter(ct_box, 3)
    return float(np.clip(np.std(residual[host_box]) * 1.15, 6.0, 40.0))


def _mass_effect(ct, box, grid, axes, spacing, d, rng) -> None:
    """Push the surroundings radially outward: a point at radius r came from
    (r^3 - k R^3)^(1/3), i.e. the lesion's volume fraction k was added, not substituted."""
    k = 0.45 if d.surface == "well-defined margin" else 0.2  # infiltration replaces tissue
    if d.density == "isodense":
        k += 0.15  # the main sign of an isodense mass is what it displaces
    k *= float(rng.uniform(0.7, 1.2))
    radius = float(np.cbrt(np.prod(axes)))
    r = np.sqrt(sum(g**2 for g in grid)) + 1e-3
    scale = np.cbrt(np.maximum(r**3 - k * radius**3, 0.0)) / r
    coords = [(g * scale - g.min()) / s for g, s in zip(grid, spacing, strict=True)]
    ct[box] = ndimage.map_coordinates(ct[box], coords, order=1, mode="nearest")


def _lesion_intensity(record, d, features, host_hu, rng, distance, radius_vox) -> np.ndarray:
    in_lung = host_hu < -500
    shape_box = distance.shape
    if in_lung:
        base = {
            "hypodense": -600.0,
            "isodense": 35.0,
            "hyperdense": 110.0,
            "mixed ground-glass and solid": -550.0,
        }.get(d.density or "", 35.0)
    elif record.category in _CYSTS and d.density == "hypodense":
        base = float(rng.uniform(-2, 10))  # simple fluid (0-10 HU), whatever the phase
    else:
        offset = {
            "hypodense": -rng.uniform(40, 75),
            "isodense": rng.uniform(-5, 5),
            "hyperdense": rng.uniform(35, 70),
        }
        base = host_hu + record.contrast * float(offset.get(d.density or "", rng.uniform(-40, 40)))
    hu = np.full(shape_box, base, dtype=np.float32)
    if d.density == "mixed ground-glass and solid":
        hu = np.where(distance < rng.uniform(0.3, 0.55), 30.0, hu).astype(np.float32)
    grain = max(1.0, float(radius_vox.mean()) * 0.25)
    texture = 1.0 if in_lung else record.contrast  # see LesionRecord.contrast
    if d.density_variation == "heterogeneous":
        amplitude = 120.0 if in_lung else 40.0 * texture
        hu += amplitude * _smooth_field(rng, shape_box, grain)
        if not in_lung and "necrosis" not in features and rng.random() < 0.5:
            hu = np.where(distance < 0.4, hu - 35.0 * texture, hu)
    else:
        hu += 3.0 * _smooth_field(rng, shape_box, 1.0)
    if d.density == "isodense" and not in_lung:
        # Same mean as the host, but its own mottled texture, and a faint capsule if sharp.
        hu += 9.0 * texture * _smooth_field(rng, shape_box, 1.3)
        if d.surface != "ill-defined margin":
            hu = np.where((distance > 0.86) & (distance < 1.0), hu - 20.0 * texture, hu)
    if "necrosis" in features:
        hu = np.where(distance < 0.45, min(base, host_hu) - 45.0, hu)
    if "cavitation" in features:
        hu = np.where(distance < rng.uniform(0.25, 0.45), -900.0, hu)
    if "fat" in features:
        fat = _smooth_field(rng, shape_box, 1.5) > 0.3
        hu = np.where(fat & (distance < 0.9), -80.0, hu)
    if "hemorrhage" in features:
        blood = _smooth_field(rng, shape_box, 1.5) > 0.8
        hu = np.where(blood & (distance < 0.8), 65.0, hu)
    if "capsule" in features:
        hu = np.where((distance > 0.88) & (distance < 1.0), host_hu + 15.0, hu)
    return hu.astype(np.float32)


def _add_features(features, distance, local, lesion_hu, rng, spacing, host_hu) -> None:
    inside = distance < 0.85
    if "calcification" in features and inside.any():
        points = np.argwhere(inside)
        index_grid = np.indices(distance.shape, dtype=np.float32)
        for index in rng.choice(len(points), size=min(4, len(points)), replace=False):
            p = points[index]
            spot = (
                sum(((index_grid[i] - p[i]) * spacing[i]) ** 2 for i in range(3))
                <= rng.uniform(1.0, 2.5) ** 2
            )
            lesion_hu[spot] = rng.uniform(350, 700)
    if "septation" in features:
        for _ in range(int(rng.integers(1, 3))):
            normal = rng.standard_normal(3)
            normal /= np.linalg.norm(normal)
            plane = np.abs(sum(normal[i] * local[i] for i in range(3))) < 0.9
            lesion_hu[plane & inside] = host_hu + 20.0


def _dilate_duct(ct, labels, host, centre, radius_mm, spacing, rng, instances) -> None:
    """A fluid-filled duct upstream of the lesion, following the organ's own course.

    Pancreas: the main duct along the gland's centreline from the lesion towards the tail.
    Liver: dilated bile ducts (branching fluid tubes) around the lesion.
    """
    pancreas = np.isin(labels, _PANCREAS)
    if host[tuple(centre)] and pancreas[tuple(centre)]:
        _pancreatic_duct(ct, pancreas, centre, spacing, rng, instances)
    elif int(labels[tuple(centre)]) in (LABELS["right liver lobe"], LABELS["left liver lobe"]):
        from malenia.synth.phantom import tube_network

        reach = np.ceil(3.0 * radius_mm / spacing).astype(int) + 2
        lo = np.maximum(centre - reach, 0)
        hi = np.minimum(centre + reach + 1, ct.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        tubes = tube_network(rng, host[box].shape, tuple(spacing), 18.0, 1.6)
        ducts = tubes & host[box] & (instances[box] == 0)
        ct[box][ducts] = np.float32(rng.uniform(5, 20))


def _pancreatic_duct(ct, pancreas, centre, spacing, rng, instances) -> None:
    columns = np.flatnonzero(pancreas.any(axis=(0, 1)))
    tail_side = 1 if (columns.max() - centre[2]) >= (centre[2] - columns.min()) else -1
    xs = np.arange(centre[2], columns.max() + 1 if tail_side > 0 else columns.min() - 1, tail_side)
    radius = float(rng.uniform(2.0, 3.5))  # mm; normal main duct < 3 mm
    reach_z = int(np.ceil((radius + 2) / spacing[0]))
    reach_y = int(np.ceil((radius + 2) / spacing[1]))
    zz = np.arange(ct.shape[0])[:, None]
    yy = np.arange(ct.shape[1])[None, :]
    previous = np.array(centre[:2], dtype=np.float32)
    for x in xs:
        plane = pancreas[:, :, x]
        if not plane.any():
            break
        points = np.argwhere(plane)
        target = points.mean(0)
        previous = 0.7 * previous + 0.3 * target  # a smooth course, not a staircase
        z0, y0 = previous
        zs = slice(max(int(z0) - reach_z, 0), int(z0) + reach_z + 2)
        ys = slice(max(int(y0) - reach_y, 0), int(y0) + reach_y + 2)
        dist = np.sqrt(((zz[zs] - z0) * spacing[0]) ** 2 + ((yy[:, ys] - y0) * spacing[1]) ** 2)
        fraction = np.clip(radius - dist + 0.5, 0.0, 1.0)
        fraction *= plane[zs, ys] & (instances[zs, ys, x] == 0)
        ct[zs, ys, x] = ct[zs, ys, x] * (1 - fraction) + 10.0 * fraction


def _pleural_traction(ct, labels, centre, spacing, rng, instances) -> None:
    """A thin soft-tissue strand from the lesion to the nearest pleura (chest wall/fissure)."""
    reach = np.ceil(45.0 / spacing).astype(int)
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, ct.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    lung = np.isin(labels[box], list(LUNG_LABELS)) | (instances[box] > 0)
    if lung.all():
        return
    _, nearest = ndimage.distance_transform_edt(lung, sampling=spacing, return_indices=True)
    local_centre = tuple(centre - lo)
    target = np.array([nearest[i][local_centre] for i in range(3)], dtype=np.float32)
    start = np.asarray(local_centre, dtype=np.float32)
    length_mm = float(np.linalg.norm((target - start) * spacing))
    steps = max(int(length_mm / (0.5 * float(spacing.min()))), 2)
    bend = rng.normal(0, 2.0, size=3) / spacing  # a slightly curved strand
    thickness = float(rng.uniform(0.8, 1.5))
    for t in np.linspace(0.0, 1.0, steps):
        p = start + t * (target - start) + np.sin(np.pi * t) * bend
        q = np.round(p).astype(int)
        if not (np.all(q >= 0) and np.all(q < lung.shape)) or not lung[tuple(q)]:
            continue
        if instances[box][tuple(q)] > 0:
            continue
        patch = tuple(  # 3-voxel neighbourhood (clipped to the grid), graded by distance
            slice(max(c - 1, 0), min(c + 2, n)) for c, n in zip(q + lo, ct.shape, strict=True)
        )
        zz, yy, xx = np.meshgrid(*[np.arange(s.start, s.stop) for s in patch], indexing="ij")
        dist = np.sqrt(
            ((zz - p[0] - lo[0]) * spacing[0]) ** 2
            + ((yy - p[1] - lo[1]) * spacing[1]) ** 2
            + ((xx - p[2] - lo[2]) * spacing[2]) ** 2
        )
        fraction = np.clip(thickness - dist, 0.0, 1.0) * (instances[patch] == 0)
        ct[patch] = np.maximum(ct[patch], ct[patch] * (1 - fraction) + (-60.0) * fraction)
