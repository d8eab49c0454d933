"""A rendered lesion as a thick-slice scan would have recorded it.

A lesion drawn into a real CT resampled to the model grid is sharp along z, while everything
the scanner recorded in a 5 mm scan is averaged over 5 mm slabs and interpolated between slice
centres: a sharp z edge inside such a scan is a cue no real lesion has. ``through_slices``
passes what rendering changed (lesion, texture, mass effect) through that acquisition; the
scan's own noise, which the renderer leaves in place, keeps the profile it already has.
"""

from __future__ import annotations

import numpy as np

# Below this ratio of slice spacing to grid spacing the profile is within one grid voxel.
MIN_SLICE_TO_GRID = 1.25


def slice_profile_matrix(
    n: int, grid_mm: float, slice_mm: float, phase_mm: float = 0.0
) -> np.ndarray:
    """[n, n] weights taking values on a z grid of ``n`` voxels ``grid_mm`` apart to what a
    scan with ``slice_mm`` slabs (centres at ``phase_mm`` + k * ``slice_mm``) records there
    after linear interpolation back onto the grid. Rows sum to 1."""
    z = np.arange(n) * grid_mm
    centres = np.arange(phase_mm - 2 * slice_mm, z[-1] + 2 * slice_mm, slice_mm)
    # Slab average: each slab weighs a grid voxel by how much of [z - g/2, z + g/2] it covers.
    lo = np.maximum(centres[:, None] - slice_mm / 2, z[None] - grid_mm / 2)
    hi = np.minimum(centres[:, None] + slice_mm / 2, z[None] + grid_mm / 2)
    slab = np.clip(hi - lo, 0.0, None)
    covered = slab.sum(axis=1) > 0
    centres, slab = centres[covered], slab[covered]
    slab /= slab.sum(axis=1, keepdims=True)
    # Linear interpolation from the slab centres back to each grid voxel.
    upper = np.clip(np.searchsorted(centres, z), 1, len(centres) - 1)
    t = np.clip((z - centres[upper - 1]) / slice_mm, 0.0, 1.0)
    back = np.zeros((n, len(centres)))
    back[np.arange(n), upper - 1] = 1.0 - t
    back[np.arange(n), upper] += t
    return back @ slab


def through_slices(
    before: np.ndarray,
    after: np.ndarray,
    grid_mm: float,
    slice_mm: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """``after`` (a rendered window, z first) with what rendering changed from ``before``
    blurred along z as slabs of ``slice_mm`` would record it, at a random slice phase.
    Unchanged where the scan's slices are no thicker than the grid (or unknown)."""
    if slice_mm is None or slice_mm < MIN_SLICE_TO_GRID * grid_mm:
        return after
    weights = slice_profile_matrix(
        after.shape[0], grid_mm, slice_mm, float(rng.uniform(0.0, slice_mm))
    ).astype(np.float32)
    change = (after - before).astype(np.float32)
    return before + np.tensordot(weights, change, axes=(1, 0))
