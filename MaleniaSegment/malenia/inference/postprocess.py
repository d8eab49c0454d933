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


def components(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, list[tuple[slice, ...]]]:
    """Connected components (26-connectivity) of at least ``min_voxels``, relabelled 1..n
    by decreasing size."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count == 0:
        return labels.astype(np.int16), []
    sizes = np.bincount(labels.ravel())[1:]
    order = [i + 1 for i in np.argsort(-sizes) if sizes[i] >= min_voxels]
    remap = np.zeros(count + 1, np.int16)
    for new, old in enumerate(order, start=1):
        remap[old] = new
    relabelled = remap[labels]
    boxes = ndimage.find_objects(relabelled)
    return relabelled, [b for b in boxes if b is not None]


def longest_axial_diameter(mask: np.ndarray, spacing_zyx) -> float:
    """Largest in-plane extent over the axial slices of a binary mask, in mm."""
    best = 0.0
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        edge = mask[z] & ~ndimage.binary_erosion(mask[z])  # the farthest pair lies on the edge
        points = np.argwhere(edge if edge.any() else mask[z]).astype(np.float64) * np.asarray(
            spacing_zyx[1:]
        )
        if len(points) > 400:
            points = points[np.linspace(0, len(points) - 1, 400).astype(int)]
        if len(points) >= 2:
            difference = points[:, None, :] - points[None, :, :]
            best = max(best, float(np.sqrt((difference**2).sum(-1)).max()))
    return best + float(np.mean(spacing_zyx[1:]))  # voxel extent, not centre distance
