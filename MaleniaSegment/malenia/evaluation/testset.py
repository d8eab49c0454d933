"""The fixed-seed held-out synthetic test set.

Case ``i`` of category ``c`` is a pure function of (TEST_SET_SEED, c, i, shape, spacing):
adding a category or asking for more cases never changes the existing ones. Each volume holds
one target lesion of ``c`` drawn from its real attribute records (its preset when it has
none), sometimes a second lesion of the same category, and sometimes a distractor lesion of
another category in the same body region, so that a prompt has something to choose between.

Ground-truth rule: the answer to a prompt made from the target lesion's description is the
union of every lesion of the target's category in the volume.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np

from malenia.attributes import LesionDescription
from malenia.errors import MaleniaError

SECOND_SAME_CATEGORY_P = 0.25
DISTRACTOR_P = 0.5
CENTRE_JITTER_MM = 15.0
MAX_ATTEMPTS = 20
LESION_NOISE = ("white", "scanner")


class HeldOutSetError(MaleniaError):
    """The test set cannot be built as asked (unknown category, volume too small)."""


@dataclass
class HeldOutCase:
    category: str
    index: int
    ct: np.ndarray  # HU [z, y, x]
    labels: np.ndarray  # phantom organ labels [z, y, x]
    instances: np.ndarray  # int16, lesion i = i
    categories: list[str]  # category of lesion i at index i - 1
    descriptions: list[LesionDescription]
    spacing_zyx: tuple[float, float, float]
    phase: str
    # Scanner position (z, y, x) of voxel [0, 0, 0]: the body centre is at 0, as a patient
    # lies at the gantry centre, so the volume's geometry is that of a real scan.
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def prompt(self) -> LesionDescription:
        """The target lesion's own description (lesion 1 is always the target)."""
        return self.descriptions[0]

    @property
    def target_ids(self) -> list[int]:
        return [i + 1 for i, c in enumerate(self.categories) if c == self.category]

    @property
    def truth(self) -> np.ndarray:
        return np.isin(self.instances, self.target_ids)

    @property
    def name(self) -> str:
        return f"{self.category.replace(' ', '_')}-{self.index:03d}"


@cache
def _pool(category: str):
    from malenia.synth.dataset import lesion_pool

    return tuple(lesion_pool(category))


def _region(description: LesionDescription) -> str:
    from malenia.synth.anatomy import CHEST_LOCATIONS

    return "chest" if description.location in CHEST_LOCATIONS else "abdomen"


def _draw(rng: np.random.Generator, category: str):
    from malenia.synth.lesions import LesionRecord

    pool = _pool(category)
    chosen = pool[int(rng.integers(len(pool)))]
    return LesionRecord(chosen.category, chosen.description, chosen.report, chosen.size_mm)


def other_categories_in_region(category: str, region: str) -> list[str]:
    """Categories other than ``category`` with lesions in the same body region (sorted)."""
    from malenia.attributes import load_presets

    return sorted(
        c
        for c in load_presets()
        if c != category and any(_region(r.description) == region for r in _pool(c))
    )


def check_categories(categories: list[str]) -> None:
    from malenia.attributes import load_presets

    known = load_presets()
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise HeldOutSetError(
            f"Unknown categories {unknown}. Use canonical category names: {', '.join(known)}."
        )


def make_case(
    category: str,
    index: int,
    shape: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    seed: int | None = None,
    distractor_categories: tuple[str, ...] | None = None,
    lesion_noise: str = "white",
) -> HeldOutCase:
    """Case ``index`` of ``category``; redrawn (deterministically) until the target renders.

    ``seed`` defaults to the test set's; the validation set uses its own seed and draws
    distractors from the training categories only (``distractor_categories``).
    ``lesion_noise``: "white" (the published benchmark: each lesion gets fresh white noise)
    or "scanner" (each lesion keeps the phantom's own noise, as real lesions keep their
    scan's). A model that scores on "white" only has learnt the renderer's noise, not the
    lesion (docs/EVALUATION.md, stage 23)."""
    from malenia.synth.lesions import render_lesions
    from malenia.synth.phantom import LOCATION_CENTRES, make_phantom
    from malenia.synth.split import TEST_SET_SEED

    check_categories([category])
    if lesion_noise not in LESION_NOISE:
        raise HeldOutSetError(f"lesion_noise must be one of {LESION_NOISE}, not {lesion_noise!r}")
    seed = TEST_SET_SEED if seed is None else seed
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, zlib.crc32(category.encode()), index, attempt])
        target = _draw(rng, category)
        d = target.description
        region = _region(d)
        phase = "non_contrast" if d.enhancement == "non-contrast CT" else "portal_venous"
        centre = np.asarray(LOCATION_CENTRES[d.location]) + rng.uniform(
            -CENTRE_JITTER_MM, CENTRE_JITTER_MM, 3
        )
        phantom = make_phantom(
            int(rng.integers(2**31)), tuple(shape), tuple(spacing_zyx), region, phase, tuple(centre)
        )
        records = [target]
        if rng.random() < SECOND_SAME_CATEGORY_P:
            records.append(_draw(rng, category))
        others = other_categories_in_region(category, region)
        if distractor_categories is not None:
            others = [c for c in others if c in distractor_categories]
        if others and rng.random() < DISTRACTOR_P:
            records.append(_draw(rng, others[int(rng.integers(len(others)))]))
        ct, instances, rendered = render_lesions(
            phantom.ct, phantom.labels, records, rng, tuple(spacing_zyx),
            keep_scanner_noise=lesion_noise == "scanner",
        )  # fmt: skip
        if rendered and rendered[0] is target:
            return HeldOutCase(
                category,
                index,
                ct,
                phantom.labels,
                instances,
                [r.category for r in rendered],
                [r.description for r in rendered],
                tuple(spacing_zyx),
                phase,
                tuple(float(o) for o in phantom.origin_mm),
            )
    raise HeldOutSetError(
        f"Could not place a '{category}' lesion in {MAX_ATTEMPTS} phantoms of shape {shape} at "
        f"{spacing_zyx} mm; use a larger --shape so the host organ is in the field of view."
    )


def held_out_cases(
    categories: list[str],
    n_per_category: int,
    shape: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    seed: int | None = None,
    distractor_categories: tuple[str, ...] | None = None,
    lesion_noise: str = "white",
):
    """Yield the test set (or, with another seed, the validation set) category by category."""
    check_categories(categories)
    for category in categories:
        for index in range(n_per_category):
            yield make_case(
                category, index, shape, spacing_zyx, seed, distractor_categories, lesion_noise
            )


def control_b_prompt(case: HeldOutCase) -> LesionDescription:
    """Control B: the full description of a lesion of another category in the same body
    region: the distractor's own when the volume has one, otherwise a record drawn with a
    fixed seed. A model that reads the description must not return the target for it."""
    for category, description in zip(case.categories, case.descriptions, strict=True):
        if category != case.category and description != case.prompt:
            return description
    region = _region(case.prompt)
    others = other_categories_in_region(case.category, region) or sorted(
        c for c in _all_categories() if c != case.category
    )
    rng = np.random.default_rng([zlib.crc32(case.name.encode()), 2])
    for _ in range(50):
        description = _draw(rng, others[int(rng.integers(len(others)))]).description
        if description != case.prompt:
            return description
    raise HeldOutSetError(f"no other-category description differs from the prompt of {case.name}")


def _all_categories() -> list[str]:
    from malenia.attributes import load_presets

    return list(load_presets())
