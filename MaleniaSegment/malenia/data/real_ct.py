"""Real CT for training and evaluation: the scans in ``../shared/data/real_ct`` on the model
grid, with organ labels in our ids, their real lesions and the fixed splits.

Splits (fixed before any result was seen; ``docs/EVALUATION.md`` explains them):
- HCC: RadCTTACEomics_0697 and _2022 train, **_1720 validation** (the only large tumour, 88 ml:
  scoring it needs a model that never saw it; one CPU run could not train three folds).
- LIDC: by patient, a fifth (``lidc_split(patient) == "validation"``) never trained on.
- lung2 (pyradiomics) and the four sarcoma crops: validation only.
- TotalSegmentator example CT: training (organ labels, no lesion). The bundled sample CT is
  built on this scan, so the sample CT is a demo check, not evidence.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from malenia.attributes.schema import LesionDescription
from malenia.hu_anatomy import GAS_HU, GAS_SHARE, lung_lobe_labels  # noqa: F401 (re-exported)
from malenia.synth.anatomy import LABELS

if TYPE_CHECKING:  # the scans' files are read with SimpleITK; a training kit needs none
    import SimpleITK as sitk

REAL_CT_ENV = "MALENIA_REAL_CT"
# What the real-anatomy weights learnt from, with each source's licence (model card). None
# of it is bundled with the product.
REAL_TRAINING_DATA = [
    {"name": "RadCTTACEomics_0697, RadCTTACEomics_2022 (HCC, contrast CT, manual liver and "
             "tumour masks)", "licence": "unknown (public GitHub course repositories); used for "
             "development and evaluation only, never bundled or published", "use": "train"},
    {"name": "LIDC-IDRI nodule crops, training patients (4/5 by patient hash)",
     "licence": "CC BY 3.0 (Armato et al. 2011; TCIA)", "use": "train"},
    {"name": "TotalSegmentator example CT with its model-made organ labels",
     "licence": "Apache-2.0 (wasserth/TotalSegmentator)", "use": "train"},
    {"name": "RadCTTACEomics_1720, LIDC validation fifth, pyradiomics lung2 (BSD-3-Clause), "
             "IBSI soft-tissue sarcoma crops (CC BY 3.0)", "licence": "as stated",
     "use": "validation only, never trained on"},
]  # fmt: skip
# TotalSegmentator v2 "total" ids of skeletal muscles: gluteus maximus / medius / minimus,
# autochthon and iliopsoas, left and right.
TOTALSEG_MUSCLES = tuple(range(80, 90))
HCC_TRAIN = ("RadCTTACEomics_0697", "RadCTTACEomics_2022")
HCC_VALIDATION = ("RadCTTACEomics_1720",)
LUNG_LOBES = (
    "right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
    "left lower lobe",
)  # fmt: skip


def real_ct_root() -> Path | None:
    """``../shared/data/real_ct`` next to the repository (or $MALENIA_REAL_CT), if present."""
    import os

    if os.environ.get(REAL_CT_ENV):
        root = Path(os.environ[REAL_CT_ENV])
        return root if root.is_dir() else None
    root = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real_ct"
    return root if root.is_dir() else None


def require_real_ct_root(root: Path | None = None) -> Path:
    """``root`` or the real-CT folder, or a clear error saying where it is looked for."""
    from malenia.errors import MaleniaError

    found = root or real_ct_root()
    if found is None:
        raise MaleniaError(
            "The real-CT data folder (../shared/data/real_ct next to the repository, or "
            f"${REAL_CT_ENV}) is not here; real-CT training, calibration and evaluation need it."
        )
    return found


def lidc_split(patient_id: str) -> str:
    """ "validation" for a fixed fifth of the LIDC patients (by hash), else "train"."""
    digest = hashlib.sha256(patient_id.encode()).digest()
    return "validation" if digest[0] % 5 == 0 else "train"


@dataclass
class RealScan:
    """One real CT on the model grid: HU, our organ label ids, real lesion instances."""

    name: str
    hu: np.ndarray  # float32 [z, y, x] at the model spacing
    labels: np.ndarray  # uint8, malenia.synth.anatomy.LABELS ids (0 = unknown)
    instances: np.ndarray  # int16, real lesion i = i
    descriptions: list[LesionDescription]
    categories: list[str]
    origin_zyx: tuple[float, float, float]  # LPS mm of voxel 0
    spacing_zyx: tuple[float, float, float]
    # Locations whose label is complete in this scan: only these are asked of the location
    # head (present ones as their mask, absent ones as empty).
    known_locations: tuple[str, ...] = field(default_factory=tuple)
    # Skeletal muscle (bool, same grid) where the scan's labels have it: the host tissue of
    # soft-tissue masses, which no location of the vocabulary names.
    muscle: np.ndarray | None = None
    # The scan's own slice spacing before resampling (mm): how much a 5 mm scan blurs along z.
    slice_mm: float | None = None

    def position_of(self, index_zyx) -> tuple[float, float, float]:
        """LPS mm (z, y, x) of the voxel at ``index_zyx`` (e.g. a training window's corner)."""
        return tuple(
            o + i * d for o, i, d in zip(self.origin_zyx, index_zyx, self.spacing_zyx, strict=True)
        )

    def slab(self, hu: np.ndarray, first_row: int, name: str):
        """``hu``, slices of this scan's grid from ``first_row`` on (e.g. with a lesion drawn
        in), as a CTVolume: a whole-scan case around one lesion, encoded in seconds."""
        from malenia.io import CTVolume

        oz, oy, ox = self.position_of((first_row, 0, 0))
        return CTVolume(hu.astype(np.int16), tuple(self.spacing_zyx[::-1]), (ox, oy, oz),
                        tuple(np.eye(3).ravel()), name)  # fmt: skip


def _on_grid(image: sitk.Image, spacing_zyx) -> sitk.Image:
    import SimpleITK as sitk

    from malenia.preprocessing import canonical_orientation, resample_to_spacing

    image = canonical_orientation(sitk.Cast(image, sitk.sitkFloat32))
    return resample_to_spacing(image, tuple(reversed(spacing_zyx)))


def _labels_on(label: sitk.Image, grid: sitk.Image) -> np.ndarray:
    import SimpleITK as sitk

    resampled = sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def _liver_lobes(liver: np.ndarray, grid: sitk.Image) -> np.ndarray:
    from malenia.synth.real_ct import labels_from_totalseg

    return labels_from_totalseg(np.where(liver, 5, 0).astype(np.uint8), grid)


@cache
def _liver_cancer_description() -> LesionDescription:
    from malenia.attributes.presets import get_preset

    return get_preset("liver cancer").description


# A real tumour is described hypo- or hyperdense when its mean HU differs from the liver
# around it by more than this; HCC is darker than the liver in the portal and equilibrium
# phases (washout) and brighter in the arterial phase (RadCTTACEomics_2022: 86 vs 58 HU).
DENSITY_DIFFERENCE_HU = 10.0


def density_against_host(hu: np.ndarray, lesion: np.ndarray, host: np.ndarray) -> str:
    """The density attribute a reader gives ``lesion``: its mean HU against the host tissue
    in a 3-voxel ring around it (the liver without tumour), not the preset's word."""
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~lesion & host
    if ring.sum() < 8:
        return _liver_cancer_description().density
    difference = float(hu[lesion].mean() - hu[ring].mean())
    if difference > DENSITY_DIFFERENCE_HU:
        return "hyperdense"
    return "hypodense" if difference < -DENSITY_DIFFERENCE_HU else "isodense"


def _lobe_of(labels: np.ndarray, mask: np.ndarray) -> str | None:
    values, counts = np.unique(labels[mask], return_counts=True)
    for value in values[np.argsort(counts)[::-1]]:
        for name in ("right liver lobe", "left liver lobe"):
            if value == LABELS[name]:
                return name
    return None


def load_hcc(case: str, spacing_zyx=(2.0, 2.0, 2.0), root: Path | None = None) -> RealScan:
    """An HCC case: manual liver (split into lobes along x) and tumour; lungs from HU."""
    import SimpleITK as sitk

    folder = require_real_ct_root(root) / "hcc_liver" / case
    image = sitk.ReadImage(str(folder / "ct.nii.gz"))
    grid = _on_grid(image, spacing_zyx)
    hu = sitk.GetArrayFromImage(grid)
    label = _labels_on(sitk.ReadImage(str(folder / "label.nii.gz")), grid)
    origin = tuple(reversed(grid.GetOrigin()))
    labels = lung_lobe_labels(hu, spacing_zyx, origin)
    liver = _liver_lobes(label > 0, grid)
    labels[liver > 0] = liver[liver > 0]
    tumour_parts, count = ndimage.label(label == 2)
    liver_alone = label == 1  # without tumour: the host a tumour's density is read against
    instances = np.zeros(hu.shape, np.int16)
    descriptions, categories = [], []
    for part in range(1, count + 1):
        mask = tumour_parts == part
        if mask.sum() < 8:
            continue
        instances[mask] = len(descriptions) + 1
        lobe = _lobe_of(labels, ndimage.binary_dilation(mask, iterations=2)) or "right liver lobe"
        density = density_against_host(hu, mask, liver_alone)
        descriptions.append(replace(_liver_cancer_description(), location=lobe, density=density))
        categories.append("liver cancer")
    return RealScan(
        case, hu, labels, instances, descriptions, categories, origin, tuple(spacing_zyx),
        ("right liver lobe", "left liver lobe"), slice_mm=float(image.GetSpacing()[2]),
    )  # fmt: skip


def hcc_training_tumours(root: Path | None = None):
    """(case, CTVolume, tumour mask) of each HCC training scan (``HCC_TRAIN``) on the scan's
    own grid, as a user would load it: for scoring answers there, not for training."""
    import SimpleITK as sitk

    from malenia.io import CTVolume

    for case in HCC_TRAIN:
        folder = require_real_ct_root(root) / "hcc_liver" / case
        image = sitk.ReadImage(str(folder / "ct.nii.gz"))
        tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "label.nii.gz"))) == 2
        yield case, CTVolume.from_sitk(image, case), tumour


def load_totalseg_example(spacing_zyx=(2.0, 2.0, 2.0), root: Path | None = None) -> RealScan:
    """The TotalSegmentator example CT with its (model-made) organ labels; no lesion."""
    import SimpleITK as sitk

    from malenia.synth.real_ct import TOTALSEG_TO_LOCATION, labels_from_totalseg

    folder = require_real_ct_root(root) / "totalseg_example"
    image = sitk.ReadImage(str(folder / "example_ct.nii.gz"))
    grid = _on_grid(image, spacing_zyx)
    organs = _labels_on(sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz")), grid)
    labels = labels_from_totalseg(organs, grid)
    muscle = np.isin(organs, TOTALSEG_MUSCLES)
    known = sorted(set(TOTALSEG_TO_LOCATION.values()))
    known += ["right liver lobe", "left liver lobe", "pancreatic head", "pancreatic body",
              "pancreatic tail"]  # fmt: skip
    return RealScan(
        "totalseg_example", sitk.GetArrayFromImage(grid), labels, np.zeros(labels.shape, np.int16),
        [], [], tuple(reversed(grid.GetOrigin())), tuple(spacing_zyx), tuple(known), muscle,
        float(image.GetSpacing()[2]),
    )  # fmt: skip


def load_training_scans(spacing_zyx=(2.0, 2.0, 2.0), root: Path | None = None) -> list[RealScan]:
    """The whole real scans training may read: the HCC training cases and the
    TotalSegmentator example (never HCC_VALIDATION); from a training kit
    (``malenia.data.training_kit``) when the real-CT folder is one."""
    from malenia.data.training_kit import is_training_kit, read_training_scans

    source = require_real_ct_root(root)
    if is_training_kit(source):
        return read_training_scans(source, spacing_zyx)
    scans = [load_hcc(case, spacing_zyx, source) for case in HCC_TRAIN]
    return [*scans, load_totalseg_example(spacing_zyx, source)]


# --------------------------------------------------------------------------- LIDC


@dataclass
class Nodule:
    uid: str
    patient: str
    hu: np.ndarray  # int16 [z, y, x], native grid
    mask: np.ndarray  # bool
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    ratings: dict[str, float | None]
    texture_class: str
    volume_ml: float


def _rating(row: dict, name: str) -> float | None:
    for column in (f"{name}_median", f"{name}_mode_src"):
        value = row.get(column, "")
        if value not in ("", None):
            try:
                return float(value)
            except ValueError:
                continue
    return None


def load_lidc(split: str | None = None, root: Path | None = None) -> list[Nodule]:
    """The LIDC crops of one split ("train" | "validation" | None = all), file order."""
    folder = require_real_ct_root(root) / "lidc_nodules"
    with open(folder / "lidc_nodules.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    arrays = np.load(folder / "lidc_nodules.npz")
    nodules = []
    for row in rows:
        if split is not None and lidc_split(row["patient_id"]) != split:
            continue
        prefix = row["npz_key_prefix"]
        spacing = tuple(float(v) for v in arrays[prefix + "spacing_zyx"])
        origin = tuple(float(v) for v in arrays[prefix + "origin_lps_xyz"])
        ratings = {
            name: _rating(row, name)
            for name in (
                "sphericity",
                "margin",
                "lobulation",
                "spiculation",
                "texture",
                "calcification",
                "internal_structure",
            )  # fmt: skip
        }
        nodules.append(
            Nodule(
                row["nodule_uid"],
                row["patient_id"],
                arrays[prefix + "image"],
                arrays[prefix + "mask"] > 0,
                spacing,
                origin,
                ratings,
                row["texture_class"],
                float(row["volume_ml"]),
            )  # fmt: skip
        )
    return nodules


def nodule_description(nodule: Nodule) -> LesionDescription:
    """The description a chest radiologist would give, from the readers' ratings (fixed rule:
    sphericity >= 4 and lobulation < 3 round-like; margin >= 4 well-defined; texture solid or
    part-solid isodense (soft tissue), ground-glass hypodense; calcification < 6 hyperdense and
    calcified; spiculation / lobulation >= 3 named). No location: the ROI says where."""
    r = nodule.ratings
    round_like = (r["sphericity"] or 3) >= 4 and (r["lobulation"] or 1) < 3
    calcified = (r["calcification"] or 6) < 6
    density = "hyperdense" if calcified else (
        "hypodense" if nodule.texture_class == "ground_glass" else "isodense"
    )  # fmt: skip
    features = []
    if calcified:
        features.append("calcification")
    if (r["lobulation"] or 1) >= 3:
        features.append("lobulation")
    if (r["spiculation"] or 1) >= 3:
        features.append("spiculation")
    return LesionDescription(
        shape="round-like" if round_like else "irregular",
        density=density,
        density_variation="heterogeneous"
        if nodule.texture_class == "part_solid"
        else "homogeneous",
        surface="well-defined margin" if (r["margin"] or 3) >= 4 else "ill-defined margin",
        specific_features=tuple(features),
    )


def nodule_text(nodule: Nodule) -> str:
    """The same description as free text in a chest radiologist's words."""
    d = nodule_description(nodule)
    texture = {"solid": "solid", "part_solid": "part-solid", "ground_glass": "ground-glass"}
    words = ["round" if d.shape == "round-like" else "irregular",
             texture.get(nodule.texture_class, "solid"), "nodule in the lung,",
             "well-defined margin" if d.surface == "well-defined margin" else "ill-defined margin"]  # fmt: skip
    words += [{"calcification": ", calcified", "lobulation": ", lobulated",
               "spiculation": ", spiculated"}[f] for f in d.specific_features]  # fmt: skip
    return " ".join(words).replace(" ,", ",")
