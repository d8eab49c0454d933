"""On-the-fly synthetic training samples drawn from the real attribute records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from malenia.attributes.presets import load_presets
from malenia.attributes.records import load_records
from malenia.preprocessing import normalize_ct
from malenia.synth.anatomy import CHEST_LOCATIONS
from malenia.synth.lesions import LesionRecord, render_lesions
from malenia.synth.phantom import LOCATION_CENTRES, make_phantom


@dataclass
class Sample:
    ct: np.ndarray  # HU [z, y, x]
    labels: np.ndarray
    instance_mask: np.ndarray  # int16, lesion i = i
    lesions: list[LesionRecord]
    spacing: tuple[float, float, float]
    phase: str
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # body frame (z, y, x) of voxel 0


def lesion_pool(category: str) -> list[LesionRecord]:
    """Real annotated records of a category, or its preset when it has no records."""
    preset = load_presets()[category]
    records = [
        LesionRecord(r.category, r.description, r.report, preset.size_mm)
        for r in load_records()
        if r.category == category and r.description.location in LOCATION_CENTRES
    ]
    return records or [LesionRecord(category, preset.description, "", preset.size_mm)]


def make_sample(
    seed: int,
    categories: tuple[str, ...],
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    max_lesions: int = 2,
    distractor_prob: float = 0.0,
    keep_scanner_noise: bool = False,
) -> Sample:
    """One volume around a lesion of a random category in ``categories`` (+ maybe others).

    With ``distractor_prob`` a lesion of another of ``categories`` in the same body region is
    added: a volume holding two kinds of lesion is what makes the description matter.
    ``keep_scanner_noise``: the lesions keep the phantom's own noise (render_lesions); the
    benchmark volumes are drawn without it, as every published figure was."""
    rng = np.random.default_rng(seed)
    first = _draw(rng, categories)
    location = first.description.location
    region = "chest" if location in CHEST_LOCATIONS else "abdomen"
    phase = (
        "non_contrast" if first.description.enhancement == "non-contrast CT" else "portal_venous"
    )
    centre = np.array(LOCATION_CENTRES[location]) + rng.uniform(-20, 20, size=3)
    phantom = make_phantom(int(rng.integers(2**31)), shape, spacing, region, phase, tuple(centre))
    records = [first]
    same_region = [
        c
        for c in categories
        if c != first.category and _region(lesion_pool(c)[0].description.location) == region
    ]
    if same_region and rng.random() < distractor_prob:
        records.append(_draw(rng, tuple(same_region)))
    for _ in range(int(rng.integers(0, max_lesions))):
        other = _draw(rng, categories)
        if (other.description.location in CHEST_LOCATIONS) == (region == "chest"):
            records.append(other)
    ct, instances, rendered = render_lesions(
        phantom.ct, phantom.labels, records, rng, spacing, keep_scanner_noise=keep_scanner_noise
    )
    return Sample(ct, phantom.labels, instances, rendered, spacing, phase, phantom.origin_mm)


def _region(location: str | None) -> str:
    return "chest" if location in CHEST_LOCATIONS else "abdomen"


def _draw(rng, categories) -> LesionRecord:
    category = categories[int(rng.integers(len(categories)))]
    pool = lesion_pool(category)
    chosen = pool[int(rng.integers(len(pool)))]
    return LesionRecord(chosen.category, chosen.description, chosen.report, chosen.size_mm)


class SyntheticLesionDataset:
    """A torch-style map dataset: item i is deterministic given (seed, i).

    Items: image float32 [1, D, H, W] (normalised), instance_mask int16 [D, H, W],
    descriptions / categories / reports per lesion (lesion i -> index i - 1).
    """

    def __init__(
        self,
        categories: tuple[str, ...],
        seed: int = 0,
        length: int = 100_000,
        shape: tuple[int, int, int] = (64, 64, 64),
        spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
        max_lesions: int = 2,
        distractor_prob: float = 0.0,
        keep_scanner_noise: bool | float = False,
    ) -> None:
        self.categories, self.seed, self.length = tuple(categories), seed, length
        self.shape, self.spacing, self.max_lesions = shape, spacing, max_lesions
        self.distractor_prob = distractor_prob
        # True / False: every lesion keeps the phantom's noise, or none; a float in [0, 1] is
        # the share of items whose lesions keep it (drawn per item, so item i stays fixed).
        if not isinstance(keep_scanner_noise, bool) and not 0.0 <= keep_scanner_noise <= 1.0:
            raise ValueError(
                f"keep_scanner_noise={keep_scanner_noise!r}: use true, false or a share in [0, 1]"
            )
        self.keep_scanner_noise = keep_scanner_noise

    def _keeps_scanner_noise(self, index: int) -> bool:
        if isinstance(self.keep_scanner_noise, bool):
            return self.keep_scanner_noise
        return bool(
            np.random.default_rng([self.seed, index, 31]).random() < self.keep_scanner_noise
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        keeps_noise = self._keeps_scanner_noise(index)
        for attempt in range(10):  # a sample whose lesion could not be placed is redrawn
            sample = make_sample(
                self.seed * 1_000_003 + index * 17 + attempt,
                self.categories,
                self.shape,
                self.spacing,
                self.max_lesions,
                self.distractor_prob,
                keeps_noise,
            )
            if sample.lesions:
                break
        return {
            "image": normalize_ct(sample.ct)[None],
            "instance_mask": sample.instance_mask,
            "descriptions": [r.description for r in sample.lesions],
            "categories": [r.category for r in sample.lesions],
            "reports": [r.report for r in sample.lesions],
            "labels": sample.labels,  # for a location-head loss alongside (task "lesions")
            "origin_mm": sample.origin_mm,
            # Lesions drawn with fresh white noise (as the published benchmark draws them) or
            # keeping the phantom's own: per-source losses tell them apart.
            "source": "phantom_scanner_noise" if keeps_noise else "phantom",
        }


class KeptItems:
    """Item i is ``_make(i)``; with ``distinct`` set, only that many items are made, once,
    and then cycled: the location head trained on them is small, and the anatomy task keeps
    each kept window's frozen features (``training.anatomy``), while a window costs about a
    second to make."""

    def __init__(self, distinct: int | None = None) -> None:
        self.distinct, self._kept = distinct, {}

    def __len__(self) -> int:
        return self.distinct or 10**9

    def __getitem__(self, index: int) -> dict:
        if self.distinct is None:
            return self._make(index)
        index %= self.distinct
        if index not in self._kept:
            self._kept[index] = self._make(index)
        return self._kept[index]

    def _make(self, index: int) -> dict:
        raise NotImplementedError


class AnatomyDataset(KeptItems):
    """Windows for the location head: image + organ label map, no lesion labels used.

    Half the items are training-category samples (windows around their lesions, which the
    organ label still covers); the other half are phantoms centred on any canonical
    location, so organs no training lesion lies in (spleen, adrenals, colon) are seen as
    often as the rest. Most of those carry lesions too: training-category records moved to
    an organ in view (``relocated_lesions``). An organ with a mass in it is still that organ;
    a head that only ever saw masses in the training organs learns the opposite for the
    others, and then leaves out exactly the lesion a description asks for."""

    def __init__(
        self,
        categories: tuple[str, ...],
        seed: int = 0,
        shape: tuple[int, int, int] = (64, 64, 64),
        spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
        distinct: int | None = None,
    ) -> None:
        super().__init__(distinct)
        self.categories, self.seed = tuple(categories), seed
        self.shape, self.spacing = shape, spacing

    def _make(self, index: int) -> dict:
        if index % 2 == 0:
            rng = np.random.default_rng([self.seed, index, 7])
            sample = make_sample(
                int(rng.integers(2**31)), self.categories, self.shape, self.spacing
            )
            return {
                "image": normalize_ct(sample.ct)[None],
                "labels": sample.labels,
                "origin_mm": sample.origin_mm,
            }
        rng = np.random.default_rng([self.seed, index, 11])
        locations = sorted(LOCATION_CENTRES)
        location = locations[int(rng.integers(len(locations)))]
        centre = np.array(LOCATION_CENTRES[location]) + rng.uniform(-25, 25, size=3)
        region = _region(location)
        phase = ("portal_venous", "non_contrast")[int(rng.random() < 0.3)]
        phantom = make_phantom(
            int(rng.integers(2**31)), self.shape, self.spacing, region, phase, tuple(centre)
        )
        records = relocated_lesions(rng, self.categories, phantom.labels, location)
        ct, _, _ = render_lesions(phantom.ct, phantom.labels, records, rng, self.spacing)
        return {
            "image": normalize_ct(ct)[None],
            "labels": phantom.labels,  # organ labels are not changed by a lesion in them
            "origin_mm": phantom.origin_mm,
        }


# Lesions per lesion-bearing anatomy window, and how often the window's own organ gets one.
RELOCATED_LESIONS = (0, 1, 1, 2)
CENTRE_ORGAN_P = 0.6


def relocated_lesions(
    rng: np.random.Generator, categories: tuple[str, ...], labels: np.ndarray, centre: str
) -> list[LesionRecord]:
    """Records of the (training) ``categories`` moved to organs in view: their appearance
    (density, shape, margin...) is kept, their location replaced; mostly the organ the window
    is centred on. Only organ masks are learnt from such a window, never the lesion."""
    from dataclasses import replace

    from malenia.synth.anatomy import LOCATION_LABEL

    in_view = set(np.unique(labels).tolist())
    organs = sorted(name for name, label in LOCATION_LABEL.items() if label in in_view)
    if not organs:
        return []
    records = []
    for _ in range(RELOCATED_LESIONS[int(rng.integers(len(RELOCATED_LESIONS)))]):
        record = _draw(rng, categories)
        if centre in organs and rng.random() < CENTRE_ORGAN_P:
            organ = centre
        else:
            organ = organs[int(rng.integers(len(organs)))]
        description = replace(record.description, location=organ)
        records.append(LesionRecord(record.category, description, "", record.size_mm))
    return records
