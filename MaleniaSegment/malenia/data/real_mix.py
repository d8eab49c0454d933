"""The training mixture that teaches real anatomy: windows of real CT with synthetic lesions
rendered into their real organs, their real lesions (HCC tumours, LIDC nodules with the
readers' ratings as descriptions), real lesion-free windows (whose every prompt has an empty
answer) and the synthetic phantoms, so the 13-category benchmark keeps its targets.

Only training splits are read (``malenia.data.real_ct``): HCC 0697 / 2022, the LIDC training
patients and the TotalSegmentator example CT. Items have the synthetic dataset's format plus
``labels`` / ``origin_mm`` / ``known_locations`` for the location head where organs are known.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np
from scipy import ndimage

from malenia.data.nodule_paste import (
    PASTE_DIAMETER_MM,
    PASTE_MAX_SCALE,
    enlarged_nodule,
    equivalent_diameter_mm,
    paste,
)
from malenia.data.real_ct import (
    LUNG_LOBES,
    RealScan,
    load_lidc,
    load_training_scans,
    nodule_description,
)
from malenia.preprocessing import normalize_ct, roi_spacing_mm
from malenia.synth.anatomy import LOCATION_LABEL
from malenia.synth.slice_profile import through_slices

# Where each training category can be rendered in real anatomy.
CATEGORY_LOCATIONS = {
    "liver cancer": ("right liver lobe", "left liver lobe"),
    "renal cell carcinoma": ("right kidney", "left kidney"),
    "pancreatic cyst": ("pancreatic head", "pancreatic body", "pancreatic tail"),
    "lung cancer": LUNG_LOBES,
}
DEFAULT_MIX = {"phantom": 0.3, "real_synthetic": 0.3, "real_lesion": 0.1, "lidc": 0.2,
               "real_negative": 0.1}  # fmt: skip
LIDC_CATEGORY = "lung nodule"
SOFT_TISSUE_CATEGORY = "soft-tissue mass"
# Diameters (mm) of the masses rendered into muscle: soft-tissue tumours are found late,
# mostly 3-10 cm.
SOFT_TISSUE_SIZE_MM = (25.0, 90.0)
# Share of lesions rendered into real tissue (organs, muscle) that differ only a little from
# their host, in mean HU and in texture alike, and the range of that scale (1 = the
# renderer's full difference, e.g. 40-75 HU for hypodense, a 40 HU heterogeneous mottle).
SUBTLE_SHARE, SUBTLE_CONTRAST = 0.5, (0.2, 0.8)
# Lung cancers in real lungs: many abut the pleura, mediastinum or diaphragm (a share of the
# renders is centred within PLEURAL_DEPTH_MM of non-lung tissue), and the masses found on a
# chest CT reach well past the phantom pool's 50 mm.
PLEURAL_SHARE, PLEURAL_DEPTH_MM = 0.5, 12.0
REAL_LUNG_CANCER_MM = (10.0, 70.0)
# Lung masses that lie broadly on the mediastinum, chest wall or diaphragm. In a real scan
# the renderer keeps a lung lesion to the lung found from HU (the tissue around it is
# unlabelled), so no training lung mass ever met soft tissue without air between them,
# while real ones often do (the chest CT's 48 ml mass lies on the aorta and spine, and the
# weights find only its part surrounded by air). For a share of lung renders (the data
# option ``lung_contact_share``, 0 unless a config asks), the unlabelled soft tissue within
# CONTACT_DEPTH_MM of the lung is opened to the mass, which is centred under the pleura.
CONTACT_DEPTH_MM, CONTACT_HU = 20.0, (-300.0, 250.0)
# Share of the liver cancers rendered into real livers drawn as in the arterial phase:
# brighter than the liver (hyperenhancement) and described so. The Malenia records call
# liver cancer hypodense in 36 of 39 cases (portal and equilibrium phases), yet real HCC
# scans come in every phase: the arterial-phase tumour of RadCTTACEomics_2022 (28 HU
# brighter than its liver) got probability 1e-4 from weights that had trained on it.
ARTERIAL_LIVER_CANCER_SHARE = 0.35
# Share of the lesion-free windows centred in a real lung: pasted masses teach lung lesions
# at whole-scan scale, and without lung windows whose answer is empty nothing taught that
# lung vessels and fissures are not lesions (stage 15 marked more outside lung lesions).
NEGATIVE_LUNG_SHARE = 0.4
# Whole-scan answers ask a lesion type in every window of its organ, nearly all of them
# lesion-free; yet stage 27's mixture asked "liver cancer" in a window holding liver about 50
# times with a lesion there for each time without (runs of ``organ_negative`` items fix that:
# an organ window with no lesion, asked for that organ's own lesion type). A share of them are
# muscle windows asked for a mass, as the sarcoma queries are.
MUSCLE_NEGATIVE_SHARE = 0.15


def draw_contrast(rng: np.random.Generator) -> float:
    """How far a lesion rendered into real tissue differs from its host (its mean offset
    and its texture, ``LesionRecord.contrast``): ``SUBTLE_SHARE`` of them subtle."""
    return float(rng.uniform(*SUBTLE_CONTRAST)) if rng.random() < SUBTLE_SHARE else 1.0


def soft_tissue_description(rng: np.random.Generator):
    """A mass in muscle described by its elemental attributes only: no location of the
    vocabulary names muscle, so the prompt never has one. Attributes vary independently,
    so the model learns what each means in this tissue (not one tumour type's look)."""
    from malenia.attributes.schema import LesionDescription

    def pick(values, weights):
        return values[int(rng.choice(len(values), p=np.array(weights) / sum(weights)))]

    features = tuple(f for f, p in (("necrosis", 0.2), ("calcification", 0.1)) if rng.random() < p)
    return LesionDescription(
        shape=pick(("irregular", "round-like"), (0.6, 0.4)),
        density=pick(("isodense", "hypodense", "hyperdense"), (0.5, 0.3, 0.2)),
        density_variation=pick(("heterogeneous", "homogeneous"), (0.7, 0.3)),
        surface=pick(("ill-defined margin", "well-defined margin"), (0.5, 0.5)),
        enhancement=pick(("contrast-enhanced CT", "non-contrast CT"), (0.6, 0.4)),
        specific_features=features,
    )


def hosts_a_mass(scan) -> bool:
    """Whether a training scan has enough labelled skeletal muscle to host a mass."""
    return scan.muscle is not None and scan.muscle.sum() > 1000


def muscle_host_tissue(hu: np.ndarray, organs: np.ndarray, muscle: np.ndarray) -> np.ndarray:
    """The renderer's tissue map for a mass in skeletal muscle: soft tissue and fat around the
    muscle are free space for it, bone and organs are not."""
    from malenia.synth.anatomy import LABELS

    tissue = np.where(organs > 0, LABELS["aorta"], 0).astype(np.uint8)
    tissue[(organs == 0) & (hu > -300) & (hu < 250)] = LABELS["body"]
    tissue[(organs == 0) & (hu >= 250)] = LABELS["aorta"]
    tissue[muscle] = LABELS["muscle"]
    return tissue


def liver_cancer_phase(description, rng: np.random.Generator):
    """A liver cancer's description as its contrast phase shows it: hyperdense
    (``ARTERIAL_LIVER_CANCER_SHARE`` of them), else as the record has it."""
    if rng.random() >= ARTERIAL_LIVER_CANCER_SHARE:
        return description
    return replace(description, density="hyperdense", enhancement="contrast-enhanced CT")


def augment_hu(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanner variation: HU gain and offset, noise, sometimes a slight blur (resolution)."""
    out = hu * rng.uniform(0.95, 1.05) + rng.uniform(-15, 15)
    if rng.random() < 0.3:
        out = ndimage.gaussian_filter(out, rng.uniform(0.3, 0.8))
    if rng.random() < 0.7:
        out = out + rng.normal(0, rng.uniform(2, 18), out.shape).astype(np.float32)
    return out.astype(np.float32)


def in_real_lung(records, labels, spacing, rng):
    """(records to render, placement) for lung lesions in a real lung. 'Closely related to
    surrounding organs' is drawn as touching the pleura, mediastinum or diaphragm: in a real
    scan the renderer's reading of it (free to grow into the neighbour, as in the phantoms)
    put half of a basal mass inside the liver, a liver lesion labelled lung cancer. Related
    masses, and ``PLEURAL_SHARE`` of the others, are centred under the pleura and kept in
    the lung; the prompt still says what the description says."""
    related = records[0].description.relation == "closely related to surrounding organs"
    placement = subpleural(labels, spacing) if related or rng.random() < PLEURAL_SHARE else None
    kept = "not closely related to surrounding organs"
    return [
        replace(r, description=replace(r.description, relation=kept)) for r in records
    ], placement


def subpleural(labels: np.ndarray, spacing) -> np.ndarray:
    """Lung voxels within ``PLEURAL_DEPTH_MM`` of anything that is not lung (chest wall,
    mediastinum, diaphragm): where a juxtapleural mass is centred."""
    from malenia.synth.lesions import LUNG_LABELS

    lung = np.isin(labels, list(LUNG_LABELS))
    return lung & (ndimage.distance_transform_edt(lung, sampling=spacing) <= PLEURAL_DEPTH_MM)


def soft_tissue_open_to_lung_masses(labels: np.ndarray, hu: np.ndarray, spacing) -> np.ndarray:
    """``labels`` with the unlabelled soft tissue (``CONTACT_HU``: not air, not bone) within
    ``CONTACT_DEPTH_MM`` of the lung relabelled "body", where the renderer lets a mass grow;
    labelled organs (the liver, the TotalSegmentator organs) stay closed to it."""
    from malenia.synth.anatomy import LABELS
    from malenia.synth.lesions import LUNG_LABELS

    lung = np.isin(labels, list(LUNG_LABELS))
    if not lung.any():
        return labels
    near = ndimage.distance_transform_edt(~lung, sampling=spacing) <= CONTACT_DEPTH_MM
    soft = (labels == LABELS["air"]) & (hu > CONTACT_HU[0]) & (hu < CONTACT_HU[1])
    opened = labels.copy()
    opened[near & soft] = LABELS["body"]
    return opened


def crop_window(array: np.ndarray, start, size, mode="edge") -> np.ndarray:
    """``array[start:start+size]`` with edge padding where the box leaves the array."""
    inside = tuple(
        slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, size, array.shape, strict=True)
    )
    pad = [
        (max(-s, 0), max(s + p - n, 0)) for s, p, n in zip(start, size, array.shape, strict=True)
    ]
    return np.pad(array[inside], pad, mode=mode)


def random_voxel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random voxel index (z, y, x) of ``mask``, on every second voxel (cheap on a whole
    scan); the centre of the array when the mask is empty."""
    points = np.argwhere(mask[::2, ::2, ::2]) * 2
    if not len(points):
        return np.array(mask.shape) // 2
    return points[int(rng.integers(len(points)))]


def _category_weights(weights: dict[str, float] | None) -> dict[str, float] | None:
    if weights is None:
        return None
    unknown = sorted(set(weights) - set(CATEGORY_LOCATIONS))
    if unknown or any(float(w) < 0 for w in weights.values()) or not sum(weights.values()):
        raise ValueError(
            f"data.real_synthetic_categories: give non-negative weights, not all zero, for "
            f"{', '.join(CATEGORY_LOCATIONS)} (unknown: {unknown or 'none'})"
        )
    return {c: float(w) for c, w in weights.items()}


class RealMixDataset:
    """Item i is deterministic given (seed, i); the real scans are loaded once, lazily."""

    KINDS = ("phantom", "real_synthetic", "real_lesion", "lidc", "real_negative", "soft_tissue",
             "lidc_paste", "organ_negative")  # fmt: skip

    def __init__(self, categories, seed: int = 0, shape=(64, 64, 64), spacing=(2.0, 2.0, 2.0),
                 mix: dict | None = None, max_lesions: int = 2, distractor_prob: float = 0.5,
                 lung_contact_share: float = 0.0, keep_scanner_noise: bool = False,
                 phantom_scanner_noise: bool | float = False, slice_profile: bool = False,
                 real_synthetic_categories: dict[str, float] | None = None) -> None:  # fmt: skip
        from malenia.synth import SyntheticLesionDataset

        self.categories = tuple(categories)
        self.seed, self.shape, self.spacing = seed, tuple(shape), tuple(spacing)
        self.lung_contact_share = float(lung_contact_share)  # see CONTACT_DEPTH_MM
        # Lesions rendered into real CT keep its noise (synth.lesions.SCANNER_NOISE_SIGMA_VOX),
        # lung lesions and pasted nodules get noise like its soft tissue; False (older
        # configs) draws them with white noise, as for phantoms, and pastes nodules as they are.
        # ``phantom_scanner_noise``: the phantoms' lesions keep the phantom's noise too (their
        # white noise is a little louder than the phantom's own, and lacks its smooth grain);
        # a float is the share of phantoms drawn that way, the rest keep the white noise.
        self.keep_scanner_noise = bool(keep_scanner_noise)
        # Lesions drawn into a thick-slice scan blurred along z as its slices are (slice_profile).
        self.slice_profile = bool(slice_profile)
        # How often each category is rendered into real organs: None (older configs) draws a
        # (category, location) pair uniformly, so a category with many location names (lung
        # cancer: five lobes) is drawn more often than one with two (liver cancer).
        self.real_synthetic_categories = _category_weights(real_synthetic_categories)
        mix = dict(mix or DEFAULT_MIX)
        unknown = set(mix) - set(self.KINDS)
        if unknown:
            raise ValueError(
                f"unknown kinds {sorted(unknown)} in data.mix: use {', '.join(self.KINDS)}"
            )
        self.kinds = sorted(mix)
        weights = np.array([mix[k] for k in self.kinds], float)
        self.weights = weights / weights.sum()
        self.phantoms = SyntheticLesionDataset(
            self.categories, seed, 10**9, self.shape, self.spacing, max_lesions, distractor_prob,
            keep_scanner_noise=phantom_scanner_noise,
        )  # fmt: skip
        self._scans: list[RealScan] | None = None
        self._nodules = None

    def __len__(self) -> int:
        return 10**9

    @property
    def scans(self) -> list[RealScan]:
        if self._scans is None:
            self._scans = load_training_scans(self.spacing)
        return self._scans

    @cached_property
    def muscle_scans(self) -> list[RealScan]:
        """The training scans with enough labelled skeletal muscle to host a mass."""
        return [s for s in self.scans if hosts_a_mass(s)]

    @property
    def nodules(self):
        if self._nodules is None:
            self._nodules = load_lidc("train")
        return self._nodules

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index, 29])
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.weights))]
        if kind == "phantom":
            item = {**self.phantoms[index], "known_locations": tuple(LOCATION_LABEL)}
        elif kind == "lidc":
            item = self._lidc_item(rng)
        elif kind == "soft_tissue":
            item = self._soft_tissue_item(rng)
        elif kind == "lidc_paste":
            item = self._lidc_paste_item(rng)
        elif kind == "organ_negative":
            item = self._organ_negative_item(rng)
        else:
            item = self._scan_item(kind, rng)
        return {"source": kind, **item}  # the mixture's part (a phantom's own tag wins)

    # ------------------------------------------------------------------ real scans
    def _scan_item(self, kind: str, rng: np.random.Generator) -> dict:
        from malenia.synth.dataset import lesion_pool
        from malenia.synth.lesions import LesionRecord, render_lesions

        scans = self.scans
        if kind == "real_lesion":
            scans = [s for s in scans if s.descriptions] or scans
        scan = scans[int(rng.integers(len(scans)))]
        records = []
        if kind == "real_synthetic":
            options = self._organ_options(scan)
            if options:
                category, location = self._pick_real_synthetic(options, rng)
                pool = lesion_pool(category)
                record = pool[int(rng.integers(len(pool)))]
                description = replace(record.description, location=location)
                if category == "liver cancer":
                    description = liver_cancer_phase(description, rng)
                contrast = draw_contrast(rng)
                size_mm = REAL_LUNG_CANCER_MM if location in LUNG_LOBES else record.size_mm
                records.append(
                    LesionRecord(category, description, record.report, size_mm, contrast=contrast)
                )
                centre = random_voxel(scan.labels == LOCATION_LABEL[location], rng)
            else:
                kind = "real_negative"
        if kind == "real_lesion" and scan.descriptions:
            lesion = int(rng.integers(len(scan.descriptions))) + 1
            centre = random_voxel(scan.instances == lesion, rng)
        elif kind != "real_synthetic":
            centre = self._negative_centre(scan, rng)
        start = self._window_start(scan, centre, rng)
        hu = crop_window(scan.hu, start, self.shape)
        labels = crop_window(scan.labels, start, self.shape, mode="constant")
        real = crop_window(scan.instances, start, self.shape, mode="constant")
        prompts = [r.description for r in records]  # in_real_lung draws some differently
        placement, render_labels = None, labels
        if records and records[0].description.location in LUNG_LOBES:
            records, placement = in_real_lung(records, labels, self.spacing, rng)
            if self.lung_contact_share and rng.random() < self.lung_contact_share:
                render_labels = soft_tissue_open_to_lung_masses(labels, hu, self.spacing)
                placement = subpleural(labels, self.spacing)
        before = hu
        hu, instances, rendered = render_lesions(
            hu,
            render_labels,
            records,
            rng,
            self.spacing,
            placement=placement,
            keep_scanner_noise=self.keep_scanner_noise,
        )
        if self.slice_profile and rendered:
            hu = through_slices(before, hu, self.spacing[0], scan.slice_mm, rng)
        descriptions = [prompts[records.index(r)] for r in rendered]
        categories = [r.category for r in rendered]
        for lesion in np.unique(real[real > 0]):
            if (real == lesion).sum() < 8:
                continue
            instances[(real == lesion) & (instances == 0)] = len(descriptions) + 1
            descriptions.append(scan.descriptions[lesion - 1])
            categories.append(scan.categories[lesion - 1])
        return training_item(hu, instances, descriptions, categories, rng, scan, labels, start)

    def _organ_options(self, scan: RealScan) -> list[tuple[str, str]]:
        """(category, location) pairs this scan can host: its organ is labelled (> 500 voxels)."""
        return [
            (c, loc) for c in self.categories for loc in CATEGORY_LOCATIONS.get(c, ())
            if (scan.labels == LOCATION_LABEL[loc]).sum() > 500
        ]  # fmt: skip

    def _window_start(self, scan: RealScan, centre, rng: np.random.Generator) -> list[int]:
        """Corner of a window around ``centre``, moved up to 20 voxels, kept in the scan."""
        jitter = rng.integers(-20, 21, size=3)
        start = [int(c + j - p // 2) for c, j, p in zip(centre, jitter, self.shape, strict=True)]
        return [int(np.clip(s, 0, max(n - p, 0))) for s, p, n in zip(start, self.shape, scan.hu.shape, strict=True)]  # fmt: skip

    def _organ_negative_item(self, rng: np.random.Generator) -> dict:
        """A window of a real organ (or muscle) holding no lesion, asked for that organ's own
        lesion type (the item's ``ask``; its answer is empty): see MUSCLE_NEGATIVE_SHARE."""
        from malenia.synth.dataset import lesion_pool

        if self.muscle_scans and rng.random() < MUSCLE_NEGATIVE_SHARE:
            scan = self.muscle_scans[int(rng.integers(len(self.muscle_scans)))]
            host, ask = scan.muscle, (SOFT_TISSUE_CATEGORY, soft_tissue_description(rng))
        else:
            scan = self.scans[int(rng.integers(len(self.scans)))]
            options = self._organ_options(scan)
            if not options:
                return self._scan_item("real_negative", rng)
            category, location = self._pick_real_synthetic(options, rng)
            pool = lesion_pool(category)
            description = replace(pool[int(rng.integers(len(pool)))].description, location=location)
            if category == "liver cancer":
                description = liver_cancer_phase(description, rng)
            host, ask = scan.labels == LOCATION_LABEL[location], (category, description)
        for _ in range(8):  # a window clear of the scan's real lesions
            start = self._window_start(scan, random_voxel(host, rng), rng)
            real = crop_window(scan.instances, start, self.shape, mode="constant")
            if not real.any():
                break
        else:
            return self._scan_item("real_negative", rng)
        hu = crop_window(scan.hu, start, self.shape)
        labels = crop_window(scan.labels, start, self.shape, mode="constant")
        return training_item(hu, real, [], [], rng, scan, labels, start, ask=ask)

    def _pick_real_synthetic(self, options: list, rng: np.random.Generator) -> tuple[str, str]:
        """One (category, location) of ``options``: uniformly, or the category by
        ``real_synthetic_categories`` (among those this scan can host), then its location."""
        weights = self.real_synthetic_categories
        if weights is None:
            return options[int(rng.integers(len(options)))]
        present = sorted({c for c, _ in options if weights.get(c, 0.0) > 0})
        if not present:
            return options[int(rng.integers(len(options)))]
        p = np.array([weights[c] for c in present])
        category = present[int(rng.choice(len(present), p=p / p.sum()))]
        locations = [loc for c, loc in options if c == category]
        return category, locations[int(rng.integers(len(locations)))]

    def _negative_centre(self, scan: RealScan, rng: np.random.Generator) -> np.ndarray:
        """Centre of a lesion-free window: in the lung for ``NEGATIVE_LUNG_SHARE`` of them
        (where the scan has enough), else anywhere in the body."""
        for host, lung, _ in self.lung_scans:
            if host is scan and rng.random() < NEGATIVE_LUNG_SHARE:
                return random_voxel(lung, rng)
        return random_voxel(scan.hu > -500, rng)

    def _soft_tissue_item(self, rng: np.random.Generator) -> dict:
        """A mass rendered into the real skeletal muscle of a training scan (gluteal,
        paraspinal, iliopsoas), free to grow into the fat around it but not into bone or
        organs, prompted without a location."""
        from malenia.synth.lesions import LesionRecord, RenderError, render_in_host

        scans = self.muscle_scans
        if not scans:
            return self._scan_item("real_negative", rng)
        scan = scans[int(rng.integers(len(scans)))]
        # Render in a box 1.5 windows wide around a muscle voxel, then cut the window around
        # the mass (the renderer places it anywhere in its host).
        big = tuple(int(p * 1.5) for p in self.shape)
        centre = random_voxel(scan.muscle, rng)
        start = [int(np.clip(c - p // 2, 0, max(n - p, 0))) for c, p, n in zip(centre, big, scan.hu.shape, strict=True)]  # fmt: skip
        hu = crop_window(scan.hu, start, big)
        organs = crop_window(scan.labels, start, big, mode="constant")
        muscle = crop_window(scan.muscle, start, big, mode="constant")
        tissue = muscle_host_tissue(hu, organs, muscle)
        description = soft_tissue_description(rng)
        record = LesionRecord(SOFT_TISSUE_CATEGORY, description, "", SOFT_TISSUE_SIZE_MM,
                              contrast=draw_contrast(rng))  # fmt: skip
        try:
            rendered, instances = render_in_host(hu, tissue, muscle, record, rng, self.spacing,
                                                 self.keep_scanner_noise)  # fmt: skip
        except RenderError:
            return self._scan_item("real_negative", rng)
        if self.slice_profile:
            rendered = through_slices(hu, rendered, self.spacing[0], scan.slice_mm, rng)
        hu = rendered
        middle = np.array(record.rendered["centre_voxel"]) + rng.integers(-10, 11, size=3)
        inner = [int(np.clip(m - p // 2, 0, b - p)) for m, p, b in zip(middle, self.shape, big, strict=True)]  # fmt: skip
        cut = tuple(slice(i, i + p) for i, p in zip(inner, self.shape, strict=True))
        hu, instances, organs = hu[cut], instances[cut], organs[cut]
        start = [s + i for s, i in zip(start, inner, strict=True)]
        found = bool(instances.any())
        return training_item(hu, instances, [description] if found else [],
                             [SOFT_TISSUE_CATEGORY] if found else [], rng, scan, organs, start)  # fmt: skip

    # ------------------------------------------------------------------ LIDC
    @cached_property
    def lung_scans(self) -> list[tuple[RealScan, np.ndarray, np.ndarray]]:
        """(scan, lung, its subpleural part) of each training scan with enough real lung to
        host a pasted nodule: worked out once, not per item."""
        from malenia.synth.lesions import LUNG_LABELS

        hosts = []
        for scan in self.scans:
            lung = np.isin(scan.labels, list(LUNG_LABELS))
            if lung.sum() > 20_000:
                hosts.append((scan, lung, subpleural(scan.labels, scan.spacing_zyx)))
        return hosts

    @cached_property
    def nodule_diameters_mm(self) -> np.ndarray:
        """Equivalent-sphere diameter of each training nodule's mask."""
        return np.array([equivalent_diameter_mm(n) for n in self.nodules])

    def _lidc_paste_item(self, rng: np.random.Generator) -> dict:
        """A real training nodule, enlarged to 12-70 mm and pasted into a real lung of a
        training scan (half of them under the pleura), in a whole-scan window at 2 mm; its
        prompt is the readers' description with the lobe it lands in."""
        hosts = self.lung_scans
        if not hosts:
            return self._lidc_item(rng)
        scan, lung, near = hosts[int(rng.integers(len(hosts)))]
        # The diameter first, then a nodule big enough to reach it: most LIDC nodules are
        # 4-10 mm, and a random one would rarely make a mass.
        diameter = float(rng.uniform(*PASTE_DIAMETER_MM))
        big_enough = np.flatnonzero(self.nodule_diameters_mm * PASTE_MAX_SCALE >= diameter)
        if not len(big_enough):
            big_enough = [int(np.argmax(self.nodule_diameters_mm))]
        nodule = self.nodules[int(big_enough[int(rng.integers(len(big_enough)))])]
        hu, mask = enlarged_nodule(nodule, self.spacing, diameter, rng)
        host = lung
        if rng.random() < PLEURAL_SHARE and near.any():
            host = near
        centre = random_voxel(host, rng)
        jitter = rng.integers(-12, 13, size=3)
        start = [int(np.clip(c + j - p // 2, 0, max(n - p, 0)))
                 for c, j, p, n in zip(centre, jitter, self.shape, scan.hu.shape, strict=True)]  # fmt: skip
        window = crop_window(scan.hu, start, self.shape)
        labels = crop_window(scan.labels, start, self.shape, mode="constant")
        at = [int(c - s) for c, s in zip(centre, start, strict=True)]
        window, lesion = paste(window, crop_window(lung, start, self.shape, mode="constant"),
                               hu, mask, at, rng if self.keep_scanner_noise else None)  # fmt: skip
        found = bool(lesion.sum() >= 8)
        description = nodule_description(nodule)
        if found:
            values, counts = np.unique(labels[lesion], return_counts=True)
            names = {LOCATION_LABEL[lobe]: lobe for lobe in LUNG_LOBES}
            lobe = names.get(int(values[np.argmax(counts)]))
            description = replace(description, location=lobe or "lung")
        return training_item(window, lesion.astype(np.int16), [description] if found else [],
                             [LIDC_CATEGORY] if found else [], rng, scan, labels, start,
                             compatible=("lung cancer",))  # fmt: skip

    def _lidc_item(self, rng: np.random.Generator) -> dict:
        """A nodule crop as the engine sees an ROI query of it: resampled so the ROI fills
        most of the window (``roi_spacing_mm``), centred, edge-padded."""
        nodule = self.nodules[int(rng.integers(len(self.nodules)))]
        hu, mask = zoom_crop(nodule.hu, nodule.mask, nodule.spacing_zyx, self.spacing, self.shape)
        offset = rng.integers(-3, 4, size=3)
        hu, mask = np.roll(hu, offset, (0, 1, 2)), np.roll(mask, offset, (0, 1, 2))
        if rng.random() < 0.5:  # no location in these prompts: mirroring is free
            hu, mask = hu[:, :, ::-1].copy(), mask[:, :, ::-1].copy()
        found = mask.any()
        # A lung-cancer prompt may well mean this nodule: never a negative for it.
        return training_item(hu, mask.astype(np.int16),
                             [nodule_description(nodule)] if found else [],
                             [LIDC_CATEGORY] if found else [], rng, compatible=("lung cancer",))  # fmt: skip


def training_item(hu, instances, descriptions, categories, rng, scan=None, labels=None,
                  start=None, **extra) -> dict:  # fmt: skip
    """What every kind returns: the window with scanner variation, normalised; one
    description and category per instance (none: every prompt's answer is empty); and for a
    window of a real scan, its organ labels and position for the location head."""
    item = {
        "image": normalize_ct(augment_hu(hu, rng))[None],
        "instance_mask": instances,
        "descriptions": descriptions,
        "categories": categories,
        "reports": [""] * len(descriptions),
        **extra,
    }
    if scan is not None:
        item.update(labels=labels, origin_mm=scan.position_of(start),
                    known_locations=scan.known_locations)  # fmt: skip
    return item


def zoom_crop(hu: np.ndarray, mask: np.ndarray, spacing_zyx, model_spacing, shape):
    """A crop as the engine encodes an ROI query of exactly its extent: resampled to
    ``roi_spacing_mm`` by the engine's own stage, centred in a ``shape`` window and padded
    with its edge voxels (``Engine._encode_windows``)."""
    from malenia.preprocessing import resample_array

    extent = [n * s for n, s in zip(hu.shape, spacing_zyx, strict=True)]
    target = roi_spacing_mm(extent, model_spacing, shape)
    hu_z = resample_array(hu, spacing_zyx, target)
    mask_z = resample_array(mask, spacing_zyx, target, default=0.0)
    start = [
        -((p - n) // 2) if n < p else (n - p) // 2 for n, p in zip(hu_z.shape, shape, strict=True)
    ]
    return crop_window(hu_z, start, shape), crop_window(mask_z, start, shape) > 0.5
