"""Rules that shape an answer's lesions after the cut, each calibrated on training scans
(``malenia calibrate``) and switched on by the weights' card: which lesions a whole-scan lung
answer keeps, which one a small box keeps, whether an organ answer keeps lesions of fat
density, which voxels of a liver answer are as dark (or bright) as its description says, and
how far a lesion in an organ reaches.

``AnswerRules`` holds which of them a card switches on and says which answers each applies
to. Each rule works on the model grid and returns what the answer's probability becomes
((probability, labels, boxes), as ``lesion_maps.without_lesions`` does, or the probability
alone before the cut), so that a re-cut and the browser's slider see the answer the labelmap
shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from malenia.attributes import LesionDescription
from malenia.inference.lesion_maps import without_lesions
from malenia.inference.naming import organ_of_location

# Densities are read on the scan smoothed by this Gaussian (voxels): the grain is not an edge.
SMOOTHING_VOXELS = 1.0
# A lesion whose median density is this close to its organ's is not grown (an isodense lesion
# has no density edge to grow to).
GROWTH_CONTRAST_HU = 15.0
MIN_HOST_VOXELS = 200  # an organ with fewer voxels in a lesion's box says nothing of density


KEEP_MEASURES = ("volume", "mass")  # how ``keep_largest`` sizes a lesion
# Below any fluid (water 0 +- 20 HU, a cyst's noise and partial volume included) and above fat
# (-50 to -120 HU, partial volume with its neighbours included): where ``drop_fat`` cuts.
FAT_HU = -30.0
# The organs whose answers ``drop_fat`` applies to: solid ones. A lesion of a hollow organ lies
# against its gas (colon, stomach) or in its fluid, and its smoothed density with them (stage
# 27k: every organ but the lung lost the white-noise colon cancers, 0.596 -> 0.263).
SOLID_ORGANS = frozenset({"liver", "kidney", "pancreas", "spleen", "adrenal gland"})
# The organs whose location-head map says what their parenchyma's density is, which
# ``keep_density`` reads: on the training scans the liver map's median (smoothed) is 41-93 HU,
# its parenchyma's, while the kidney and pancreas maps hold the fat around them (medians 4-10
# and -28 to -31 HU; runs of scripts/probe_density_rule.py).
DENSITY_REFERENCE_ORGANS = frozenset({"liver"})
# A description's density, relative to its organ: the sign of the lesion's difference.
DENSITY_SIGNS = {"hypodense": -1.0, "hyperdense": 1.0}
# Which differences ``keep_density`` keeps: the described one, or either ("both"). A lesion
# called hypo- or hyperdense differs from its organ, but which way can depend on the contrast
# phase (an HCC is bright in the arterial phase and dark in the portal venous one; the training
# draws follow this, while the "liver cancer" preset says hypodense).
DENSITY_SIDES = ("described", "both")


@dataclass
class AnswerRules:
    """The rules a weights' card switches on (its ``postprocess``; None: off), and which answers
    each applies to. An encoded volume holds a copy that calibration may set rule by rule."""

    lung_keep_share: float | None = None
    lung_keep_by: str = "volume"
    organ_fat_hu: float | None = None
    organ_density_contrast_hu: float | None = None
    organ_density_sides: str = "described"
    organ_growth_mm: float | None = None

    @classmethod
    def from_card(cls, postprocess: dict) -> AnswerRules:
        return cls(
            lung_keep_share=postprocess.get("lung_keep_share"),
            lung_keep_by=postprocess.get("lung_keep_by") or "volume",
            organ_fat_hu=postprocess.get("organ_fat_hu"),
            organ_density_contrast_hu=postprocess.get("organ_density_contrast_hu"),
            organ_density_sides=postprocess.get("organ_density_sides") or "described",
            organ_growth_mm=postprocess.get("organ_growth_mm"),
        )

    @property
    def read_hu(self) -> bool:
        """Whether a rule on reads the scan's densities (fat, density, growth)."""
        return (
            self.organ_fat_hu is not None
            or self.organ_density_contrast_hu is not None
            or bool(self.organ_growth_mm)
        )

    def keeps_largest_lung_lesion(self, names_lung: bool, whole_scan_prompt: bool) -> bool:
        """``keep_largest``: a whole-scan answer naming a lung location."""
        return bool(self.lung_keep_share) and names_lung and whole_scan_prompt

    def drops_fat(self, description: LesionDescription | None, whole_scan_prompt: bool) -> bool:
        """``drop_fat``: a whole-scan answer naming one of the ``SOLID_ORGANS``, whose
        description has no fat."""
        if self.organ_fat_hu is None or not whole_scan_prompt or description is None:
            return False
        organ = organ_of_location(description.location)
        return organ in SOLID_ORGANS and "fat" not in (description.specific_features or ())

    def keeps_density(self, description: LesionDescription, grounded_in: str | None,
                      whole_scan: bool) -> bool:  # fmt: skip
        """``keep_density``: a whole-scan answer grounded in one of the
        ``DENSITY_REFERENCE_ORGANS`` whose description is hypodense or hyperdense."""
        if self.organ_density_contrast_hu is None or not whole_scan or grounded_in is None:
            return False
        return (
            organ_of_location(grounded_in) in DENSITY_REFERENCE_ORGANS
            and description.density in DENSITY_SIGNS
        )

    def grows_in(self, grounded_in: str | None, whole_scan: bool) -> bool:
        """``grow_to_density``: a whole-scan answer grounded in an abdominal organ."""
        if not (self.organ_growth_mm and grounded_in) or not whole_scan:
            return False
        return organ_of_location(grounded_in) != "lung"


def keep_largest(probability, labels, boxes, share: float, by: str = "volume"):
    """Keep the lesions at least ``share`` the size of the largest one (1.0: the largest
    alone), sized by their ``volume`` or by their probability ``mass`` (the sum of their
    probabilities: a large faint answer weighs less than a smaller sure one). Calibrated for
    whole-scan lung answers (``malenia calibrate --lung-keep``): a lung cancer is one mass,
    and the prompt map also lights vessels and fissures around it."""
    if by not in KEEP_MEASURES:
        raise ValueError(f"lesions are sized by one of {KEEP_MEASURES}, not {by!r}")
    sizes = [
        float(probability[box][labels[box] == i].sum() if by == "mass" else
              np.count_nonzero(labels[box] == i))
        for i, box in enumerate(boxes, start=1)
    ]  # fmt: skip
    if len(sizes) < 2:
        return probability, labels, boxes
    dropped = [i for i, size in enumerate(sizes, start=1) if size < share * max(sizes)]
    return without_lesions(probability, labels, boxes, dropped)


def keep_central(probability, labels, boxes, spacing_mm):
    """Keep the lesion nearest the grid's centre. A small box in the lung (the zoomed ROI) is
    drawn around one nodule. Chosen on 120 LIDC nodules of the training patients
    (``scripts/measure_nodule_box_rule.py``): Dice 0.737 -> 0.762, answers marking no more
    than their nodule outside it 108 -> 114 (36 answers had several lesions; keeping the
    largest instead: 0.733)."""
    centre = (np.array(labels.shape) - 1) / 2.0
    distance = [
        np.linalg.norm(
            (np.argwhere(labels[box] == index).mean(0) + [s.start for s in box] - centre)
            * spacing_mm
        )
        for index, box in enumerate(boxes, start=1)
    ]
    nearest = int(np.argmin(distance)) + 1
    dropped = [i for i in range(1, len(boxes) + 1) if i != nearest]
    return without_lesions(probability, labels, boxes, dropped)


def drop_fat(probability, labels, boxes, hu: np.ndarray, below_hu: float):
    """Without the lesions whose median density (smoothed) is below ``below_hu``. Calibrated
    for answers naming one of the ``SOLID_ORGANS`` whose description has no fat (``malenia
    calibrate --organ-fat``): there the prompt-free map also lights renal sinus and
    peripancreatic fat on real CT, and no such description is answered by fat."""
    dropped = []
    for index, box in enumerate(boxes, start=1):
        smooth = ndimage.gaussian_filter(hu[box].astype(np.float32), SMOOTHING_VOXELS)
        if float(np.median(smooth[labels[box] == index])) < below_hu:
            dropped.append(index)
    return without_lesions(probability, labels, boxes, dropped)


def grow_to_density(
    probability, labels, boxes, hu: np.ndarray, organ: np.ndarray, spacing_mm, max_mm: float
) -> np.ndarray:
    """The probability with each lesion grown by at most ``max_mm`` through the voxels of
    ``organ`` (holes filled) connected to it whose smoothed density is nearer the lesion's
    median than the organ's; grown voxels get the lesion's mean probability, so they stay in
    the answer at its threshold. On real CT the model often marks only the surest part of a
    large organ lesion; its density edge bounds the rest. The caller labels the map again."""
    from malenia.inference.grounding import fill_holes

    spacing = np.asarray(spacing_mm, float)
    margin = int(np.ceil(max_mm / spacing.min())) + 2
    grown = probability
    for index, lesion_box in enumerate(boxes, start=1):
        box = _grown_box(lesion_box, margin, labels.shape)
        seed = labels[box] == index
        host = organ[box]
        if not seed.any() or np.count_nonzero(host) < MIN_HOST_VOXELS:
            continue
        host = ndimage.binary_dilation(fill_holes(host))
        smooth = ndimage.gaussian_filter(hu[box].astype(np.float32), SMOOTHING_VOXELS)
        background = smooth[host & ~ndimage.binary_dilation(seed, iterations=2)]
        if background.size < MIN_HOST_VOXELS:
            continue
        lesion_level, organ_level = float(np.median(smooth[seed])), float(np.median(background))
        if abs(lesion_level - organ_level) < GROWTH_CONTRAST_HU:
            continue
        cut = 0.5 * (lesion_level + organ_level)
        like_lesion = smooth < cut if lesion_level < organ_level else smooth > cut
        reach = ndimage.distance_transform_edt(~seed, sampling=spacing) <= max_mm
        parts, _ = ndimage.label((like_lesion & host & reach) | seed, np.ones((3, 3, 3)))
        touching = np.unique(parts[seed])
        added = np.isin(parts, touching[touching > 0]) & (labels[box] == 0)
        if not added.any():
            continue
        if grown is probability:
            grown = probability.copy()
        score = float(probability[box][seed].mean())
        grown[box][added] = np.maximum(grown[box][added], score)
    return grown


def keep_density(
    probability: np.ndarray, hu: np.ndarray, organ: np.ndarray, density: str,
    contrast_hu: float, sides: str = "described",
) -> np.ndarray:  # fmt: skip
    """The answer's ``probability`` where the smoothed density is at least ``contrast_hu``
    below (a hypodense description) or above (hyperdense) the median of ``organ``, or either
    way (``sides`` "both"); 0 elsewhere. On real livers the lesion map is faint everywhere
    (p 0.2-0.3), in the lesion and in isodense parenchyma alike, so the description's density
    tells them apart where the model does not. The caller cuts the map into lesions."""
    if sides not in DENSITY_SIDES:
        raise ValueError(f"keep_density sides: one of {DENSITY_SIDES}, not {sides!r}")
    if not organ.any():  # no organ, no reference density: the answer as it is
        return probability
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), SMOOTHING_VOXELS)
    difference = smooth - float(np.median(smooth[organ]))
    differs = np.abs(difference) if sides == "both" else DENSITY_SIGNS[density] * difference
    return np.where(differs >= contrast_hu, probability, 0).astype(probability.dtype)


def _grown_box(box, margin: int, shape) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, s.start - margin), min(n, s.stop + margin))
        for s, n in zip(box, shape, strict=True)
    )
