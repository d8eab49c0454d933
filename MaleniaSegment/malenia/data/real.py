"""MSD (Task03 Liver, Task06 Lung, Task07 Pancreas, Task10 Colon) and KiTS23 readers.

MSD: ``<root>/<Task>/dataset.json`` + ``imagesTr/<case>.nii.gz`` + ``labelsTr/<case>.nii.gz``;
lesion label = 2 for liver and pancreas (1 is the organ), 1 for lung and colon.
KiTS23: ``<root>/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``; tumour = 2, cyst = 3.
Each case is joined with its Malenia record (same case id) to get the lesion description;
cases without a record are skipped, because a lesion without attributes teaches nothing here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malenia.attributes.records import AttributeRecord, load_records
from malenia.preprocessing import normalize_ct, to_model_grid

MSD_LESION_LABEL = {"Task03_Liver": 2, "Task07_Pancreas": 2, "Task06_Lung": 1, "Task10_Colon": 1}
KITS_LESION_LABELS = {"renal cell carcinoma": 2, "renal cyst": 3}


@dataclass
class RealCase:
    case_id: str
    image: Path
    label: Path
    lesion_labels: tuple[int, ...]
    record: AttributeRecord


def _records_by_case() -> dict[str, list[AttributeRecord]]:
    table: dict[str, list[AttributeRecord]] = {}
    for record in load_records():
        table.setdefault(record.case_id, []).append(record)
    return table


def discover_cases(root: str | Path, layout: str = "msd") -> list[RealCase]:
    """Every case under ``root`` that has an image, a label and a Malenia record."""
    root, records = Path(root), _records_by_case()
    cases = []
    if layout == "msd":
        for task_json in sorted(root.glob("Task*/dataset.json")):
            task = task_json.parent
            lesion_label = MSD_LESION_LABEL.get(task.name)
            if lesion_label is None:
                continue
            for item in json.loads(task_json.read_text(encoding="utf-8")).get("training", []):
                image, label = task / item["image"], task / item["label"]
                case_id = Path(item["image"]).name.removesuffix(".nii.gz")
                for record in records.get(case_id, []):
                    if image.is_file() and label.is_file():
                        cases.append(RealCase(case_id, image, label, (lesion_label,), record))
    elif layout == "kits23":
        for folder in sorted(root.glob("case_*")):
            for record in records.get(folder.name, []):
                label_values = (KITS_LESION_LABELS.get(record.category, 2),)
                if (folder / "imaging.nii.gz").is_file():
                    cases.append(
                        RealCase(
                            folder.name,
                            folder / "imaging.nii.gz",
                            folder / "segmentation.nii.gz",
                            label_values,
                            record,
                        )
                    )
    else:
        raise ValueError(f"layout must be 'msd' or 'kits23', not {layout!r}")
    return cases


class RealLesionDataset:
    """Patches around the annotated lesion of real cases, in the synthetic dataset's format."""

    def __init__(
        self,
        root,
        layout="msd",
        patch=(64, 64, 64),
        spacing=(2.0, 2.0, 2.0),
        seed=0,
        categories=None,
    ) -> None:
        self.cases = [
            c
            for c in discover_cases(root, layout)
            if categories is None or c.record.category in categories
        ]
        if not self.cases:
            raise FileNotFoundError(f"No {layout} cases with Malenia records under {root}.")
        self.patch, self.spacing, self.seed = tuple(patch), tuple(spacing), seed

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        import SimpleITK as sitk

        from malenia.io import read_volume

        case = self.cases[index % len(self.cases)]
        rng = np.random.default_rng(self.seed * 1_000_003 + index)
        volume = read_volume(case.image)
        image = to_model_grid(volume, self.spacing)
        label = sitk.Resample(
            sitk.ReadImage(str(case.label)), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0
        )
        hu, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)
        lesion = np.isin(labels, case.lesion_labels)
        centre = (
            np.argwhere(lesion).mean(0).astype(int) if lesion.any() else np.array(hu.shape) // 2
        )
        centre = centre + rng.integers(-8, 9, size=3)
        start = [
            int(np.clip(c - p // 2, 0, max(n - p, 0)))
            for c, p, n in zip(centre, self.patch, hu.shape, strict=True)
        ]
        box = tuple(slice(s, s + p) for s, p in zip(start, self.patch, strict=True))
        crop = np.full(self.patch, -1024.0, np.float32)
        mask = np.zeros(self.patch, np.int16)
        region = tuple(
            slice(0, min(p, n - s)) for s, p, n in zip(start, self.patch, hu.shape, strict=True)
        )
        crop[region] = hu[box]
        mask[region] = lesion[box]
        return {
            "image": normalize_ct(crop)[None],
            "instance_mask": mask,
            "descriptions": [case.record.description] if mask.any() else [],
            "categories": [case.record.category] if mask.any() else [],
            "reports": [case.record.report] if mask.any() else [],
        }
