"""Windows of the real training scans with their organ labels, for the location head's own
training (``task: "anatomy"``, ``data.type: "real_anatomy"``).

The joint real mixture trains the location head only on the windows that happen to come by,
most of them phantoms, with the organ in view by chance: on the TotalSegmentator example its
137 ml left kidney came out as scattered pieces whose grounding region was about 1000 ml. Here every window is
centred on an organ the scan labels completely (each organ as often as the next, so a kidney
is seen as often as the liver) or on any body voxel, with the real-mix intensity
augmentation; a share of phantom windows keeps the head right on the synthetic benchmark.

Only training scans are read (``malenia.data.real_ct``): HCC 0697 / 2022 and the
TotalSegmentator example CT.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from malenia.data.real_ct import RealScan, load_training_scans
from malenia.data.real_mix import augment_hu, crop_window, random_voxel
from malenia.preprocessing import normalize_ct
from malenia.synth.anatomy import LOCATION_LABEL
from malenia.synth.dataset import AnatomyDataset, KeptItems

# Voxels of an organ needed for a window to be centred on it (2 mm grid: 0.4 ml).
MIN_ORGAN_VOXELS = 50
# Largest shift (voxels) of a window's centre from the organ voxel it was drawn on.
CENTRE_JITTER = 12


class RealAnatomyDataset(KeptItems):
    """Item i is deterministic given (seed, i); the scans are loaded once, lazily.

    ``phantom_share`` of the items are the phantom anatomy windows (``AnatomyDataset``);
    of the real ones, ``organ_share`` are centred on a labelled organ, the rest anywhere in
    the body (organs at window edges, and windows with none of the asked organs)."""

    def __init__(
        self,
        categories,
        seed: int = 0,
        shape=(64, 64, 64),
        spacing=(2.0, 2.0, 2.0),
        phantom_share: float = 0.3,
        organ_share: float = 0.7,
        scans: list[RealScan] | None = None,
        distinct: int | None = None,
    ) -> None:
        if not 0.0 <= phantom_share <= 1.0 or not 0.0 <= organ_share <= 1.0:
            raise ValueError("phantom_share and organ_share are shares: use values in [0, 1]")
        self.seed, self.shape, self.spacing = seed, tuple(shape), tuple(spacing)
        self.phantom_share, self.organ_share = phantom_share, organ_share
        self.phantoms = AnatomyDataset(tuple(categories), seed, self.shape, self.spacing)
        self._scans = scans
        super().__init__(distinct)

    @property
    def scans(self) -> list[RealScan]:
        if self._scans is None:
            self._scans = load_training_scans(self.spacing)
        return self._scans

    @cached_property
    def organs(self) -> list[tuple[str, list[RealScan]]]:
        """Every organ some scan labels completely (enough of it to centre on), with those
        scans: a window is centred on an organ drawn from this list, so each organ comes as
        often as the next whichever scans label it."""
        holders: dict[str, list[RealScan]] = {}
        for scan in self.scans:
            for name in scan.known_locations:
                if np.count_nonzero(scan.labels == LOCATION_LABEL[name]) >= MIN_ORGAN_VOXELS:
                    holders.setdefault(name, []).append(scan)
        return sorted(holders.items(), key=lambda pair: pair[0])

    def _make(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index, 31])
        if rng.random() < self.phantom_share:
            return {**self.phantoms[index], "known_locations": tuple(LOCATION_LABEL)}
        if self.organs and rng.random() < self.organ_share:
            organ, holders = self.organs[int(rng.integers(len(self.organs)))]
            scan = holders[int(rng.integers(len(holders)))]
            centre = random_voxel(scan.labels == LOCATION_LABEL[organ], rng)
            centre = centre + rng.integers(-CENTRE_JITTER, CENTRE_JITTER + 1, size=3)
        else:
            scan = self.scans[int(rng.integers(len(self.scans)))]
            centre = random_voxel(scan.hu > -500, rng)
        start = [
            int(np.clip(c - p // 2, 0, max(n - p, 0)))
            for c, p, n in zip(centre, self.shape, scan.hu.shape, strict=True)
        ]
        hu = crop_window(scan.hu, start, self.shape)
        return {
            "image": normalize_ct(augment_hu(hu, rng))[None],
            "labels": crop_window(scan.labels, start, self.shape, mode="constant"),
            "origin_mm": scan.position_of(start),
            "known_locations": scan.known_locations,
        }
