"""Sliding windows over the encoded box: where they sit, which voxels each one owns, and
the predictor MONAI's ``sliding_window_inference`` calls.

Tiling rule: every window owns a *core*, the voxels nearer to its centre than to any other
window's. Cores tile the encoded box, so a later query computes every voxel once, from one
window's cached features, with no blending. Only the prompt-free "any lesion" map is blended
(by MONAI), because ``find_lesions`` reads it once per volume.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from malenia.cancel import CancelToken

# A window with nothing denser than this is air: the network is not run on it.
EMPTY_WINDOW_HU = -500.0

Position = tuple[int, int, int]  # a window's start on the model grid (z, y, x)
Slices = tuple[slice, slice, slice]


@dataclass
class Window:
    """What a query needs of one sliding window: its final mask tokens and the mask
    features F4 of its core."""

    slices: Slices  # the core, on the model grid
    tokens: torch.Tensor  # [N, E] final mask tokens
    objectness: torch.Tensor  # [N]
    f4: torch.Tensor  # [C, d, h, w] float32 mask features of the core
    # Location features of the whole window at 1/4 resolution (None without a location
    # head) and where the core lies inside the window.
    location: torch.Tensor | None = None
    local: Slices | None = None


def crop_box(region: Slices, patch) -> tuple[list[int], list[int]]:
    """Start and size of the box MONAI slides over: the region, grown to at least one
    patch per axis (centred; may reach outside the grid, where ``extract`` repeats the edge)."""
    starts, sizes = [], []
    for r, p in zip(region, patch, strict=True):
        length = r.stop - r.start
        starts.append(r.start - max(0, p - length) // 2)
        sizes.append(max(length, p))
    return starts, sizes


def window_positions(box_start, box_size, patch, overlap: float) -> list[Position]:
    """Window starts on the model grid, in the order and spacing MONAI slides them."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval  # MONAI's own stepping rule

    interval = _get_scan_interval(box_size, patch, 3, (overlap,) * 3)
    return [
        tuple(c.start + s for c, s in zip(window, box_start, strict=True))
        for window in dense_patch_slices(box_size, patch, interval)
    ]


def axis_cores(starts: list[int], patch: int, length: int) -> dict[int, slice]:
    """Per window start on one axis: the part of the axis nearest to that window's centre
    (boundaries half-way between neighbouring centres), clipped to the grid."""
    ordered = sorted(set(starts))
    bounds = [max(ordered[0], 0)]
    bounds += [(a + b + patch) // 2 for a, b in itertools.pairwise(ordered)]
    bounds.append(min(ordered[-1] + patch, length))
    return {s: slice(bounds[i], bounds[i + 1]) for i, s in enumerate(ordered)}


def window_cores(positions: list[Position], patch, shape) -> dict[Position, Slices]:
    """The core of each window: per axis ``axis_cores``, combined."""
    per_axis = [axis_cores([p[a] for p in positions], patch[a], shape[a]) for a in range(3)]
    return {p: tuple(per_axis[a][p[a]] for a in range(3)) for p in positions}


def grid_overlap(start, size, shape) -> tuple[Slices, Slices]:
    """(part of the grid, same part inside a box at ``start``) where the box meets the grid."""
    grid, box = [], []
    for s, p, n in zip(start, size, shape, strict=True):
        low, high = max(s, 0), min(s + p, n)
        grid.append(slice(low, high))
        box.append(slice(low - s, high - s))
    return tuple(grid), tuple(box)


def extract(hu: np.ndarray, start, size) -> np.ndarray:
    """A box at ``start``; where it reaches outside the grid (a volume smaller than one
    window), the edge voxels are repeated: the model was trained on windows full of body, and
    a wall of air cutting through the abdomen makes it see nothing."""
    inside, in_box = grid_overlap(start, size, hu.shape)
    pad = [(b.start, n - b.stop) for b, n in zip(in_box, size, strict=True)]
    return np.pad(hu[inside].astype(np.float32, copy=False), pad, mode="edge")


# run_batch(images [B, 1, *patch], [(start, core)]) -> (windows, prompt-free maps [*patch])
RunBatch = Callable[[torch.Tensor, list], tuple[list[Window], list[torch.Tensor]]]


@dataclass
class WindowEncoder:
    """The predictor handed to MONAI: runs the network once per window (``run_batch``),
    keeps each window's ``Window`` in ``done`` and returns its prompt-free map for blending.
    MONAI may ask for a window again (after a GPU out-of-memory the engine retries with
    smaller batches): finished windows are answered from ``done``, never recomputed."""

    run_batch: RunBatch
    box_start: list[int]
    cores: dict[Position, Slices]
    patch: tuple[int, int, int]
    empty_level: float  # EMPTY_WINDOW_HU, normalised as the network's input
    progress: Callable[[str, int, int], None] | None = None
    cancel: CancelToken | None = None  # checked before each network batch
    done: dict[Position, Window | None] = field(default_factory=dict)  # None: air, skipped
    any_lesion_of: dict[Position, torch.Tensor] = field(default_factory=dict)

    def __call__(self, batch: torch.Tensor, coords) -> torch.Tensor:
        out = torch.zeros((len(coords), 1, *self.patch))
        todo = []
        for b, coord in enumerate(coords):
            key = tuple(c.start + s for c, s in zip(coord[2:], self.box_start, strict=True))
            if key in self.done:
                if key in self.any_lesion_of:
                    out[b, 0] = self.any_lesion_of[key]
            elif float(batch[b].max()) < self.empty_level:
                self.done[key] = None
            else:
                todo.append((b, key))
        if todo:
            if self.cancel:
                self.cancel.check()
            windows, maps = self.run_batch(
                batch[[b for b, _ in todo]], [(k, self.cores[k]) for _, k in todo]
            )
            for (b, key), window, window_map in zip(todo, windows, maps, strict=True):
                self.done[key] = window
                self.any_lesion_of[key] = out[b, 0] = window_map
        if self.progress:
            self.progress("encoding", len(self.done), len(self.cores))
        return out

    @property
    def windows(self) -> list[Window]:
        """The encoded windows (air windows left out)."""
        return [w for w in self.done.values() if w is not None]
