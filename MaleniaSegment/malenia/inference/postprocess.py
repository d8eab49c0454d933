"""Probability map -> lesion instances with measurements a radiologist reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class LesionInfo:
    """One lesion of a result. Measurements are taken on the model grid."""

    index: int  # label value in the labelmap
    name: str
    category_ranking: list[tuple[str, float]]
    score: float  # mean probability inside the lesion
    volume_ml: float
    diameter_mm: float  # longest axial (in-plane) diameter
    centroid_ras: tuple[float, float, float]
    attributes: dict = field(default_factory=dict)
    bbox_model: tuple = ()  # slices on the model grid (internal)

    @property
    def category(self) -> str | None:
        return self.category_ranking[0][0] if self.category_ranking else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("bbox_model")
        out["category"] = self.category
        out["category_ranking"] = [
            {"category": c, "probability": round(p, 4)} for c, p in self.category_ranking
        ]
        out["centroid_ras"] = [round(v, 2) for v in self.centroid_ras]
        return out


def measured_lesion(
    index: int, box, mask: np.ndarray, probability: np.ndarray, spacing_zyx, voxel_ml: float,
    to_lps, name: str, ranking, attributes: dict,
) -> LesionInfo:  # fmt: skip
    """Lesion ``index``, ``mask`` inside ``box`` of the model grid (``probability``: the
    map inside ``box``), measured: mean probability, volume, longest axial diameter and
    centre in RAS (``to_lps``: continuous (i, j, k) index -> LPS point of the grid)."""
    centroid = np.array([s.start for s in box]) + np.argwhere(mask).mean(0)
    lps = to_lps(tuple(float(c) for c in centroid[::-1]))
    return LesionInfo(
        index=index,
        name=name,
        category_ranking=list(ranking or []),
        score=round(float(probability[mask].mean()), 4),
        volume_ml=round(float(mask.sum()) * voxel_ml, 3),
        diameter_mm=round(longest_axial_diameter(mask, spacing_zyx), 1),
        centroid_ras=(-lps[0], -lps[1], lps[2]),
        attributes=attributes,
        bbox_model=box,
    )


def foreground_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The box holding every True voxel of ``mask``, grown by ``margin`` voxels and clipped
    to the array; None when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        low, high = int(hit[0]) - margin, int(hit[-1]) + margin + 1
        box.append(slice(max(0, low), min(mask.shape[axis], high)))
    return tuple(box)


def components(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, list[tuple[slice, ...]]]:
    """Connected components (26-connectivity) of at least ``min_voxels``, relabelled 1..n
    by decreasing size. Relabelling writes only inside each kept component's box."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    out = np.zeros(mask.shape, np.int16)
    if count == 0:
        return out, []
    sizes = np.bincount(labels.ravel())[1:]
    objects = ndimage.find_objects(labels)
    boxes = []
    for old in np.argsort(-sizes, kind="stable"):
        if sizes[old] < min_voxels or len(boxes) == np.iinfo(np.int16).max:
            break
        box = objects[old]
        out[box][labels[box] == old + 1] = len(boxes) + 1
        boxes.append(box)
    return out, boxes


def longest_axial_diameter(mask: np.ndarray, spacing_zyx) -> float:
    """Largest in-plane extent over the axial slices of a binary mask, in mm."""
    # The farthest pair of a slice lies on its edge: one in-plane erosion for all slices.
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    edges = mask & ~ndimage.binary_erosion(mask, in_plane)
    # Slices whose edge is empty (one-voxel-thin) fall back to all their voxels.
    thin = mask.any(axis=(1, 2)) & ~edges.any(axis=(1, 2))
    edges[thin] = mask[thin]
    z, y, x = np.nonzero(edges)
    points = np.stack([y, x], 1).astype(np.float64) * np.asarray(spacing_zyx[1:])
    best = 0.0
    for slice_points in np.split(points, np.flatnonzero(np.diff(z)) + 1):
        if len(slice_points) > 400:
            slice_points = slice_points[np.linspace(0, len(slice_points) - 1, 400).astype(int)]
        if len(slice_points) >= 2:
            difference = slice_points[:, None, :] - slice_points[None, :, :]
            best = max(best, float(np.sqrt((difference**2).sum(-1)).max()))
    return best + float(np.mean(spacing_zyx[1:]))  # voxel extent, not centre distance
