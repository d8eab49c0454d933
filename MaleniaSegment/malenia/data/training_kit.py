"""The training split of the real CT as one compact folder, a *training kit*: the training
scans already on the model grid and the LIDC crops of the training patients, and nothing of
the validation split. Training reads it in place of ``../shared/data/real_ct`` when
``MALENIA_REAL_CT`` points at it, without SimpleITK: it is made for the GPU machine lent to
some sessions, which has PyTorch but not SimpleITK and takes at most 64 MiB per call
(``scripts/make_device_kit.py``, ``scripts/device_train.sh``).

The scans' HU are stored rounded to whole HU (int16), as the scanners wrote them; everything
else is stored as read.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

KIT_INDEX = "training_kit.json"
LIDC_FOLDER = "lidc_nodules"


def is_training_kit(root: Path) -> bool:
    """Whether ``root`` is a training kit rather than the real-CT data folder."""
    return (root / KIT_INDEX).is_file()


def write_training_kit(folder: Path, spacing_zyx=(2.0, 2.0, 2.0), root: Path | None = None) -> dict:
    """Write the kit into ``folder`` (new or empty: a user's files are never overwritten)
    from the real-CT data folder ``root`` (default: ``real_ct.real_ct_root()``); returns
    its index."""
    from malenia.data.real_ct import load_training_scans, require_real_ct_root
    from malenia.errors import MaleniaError

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise MaleniaError(f"{folder} is not empty: choose a new folder for the training kit.")
    source = require_real_ct_root(root)
    if is_training_kit(source):
        raise MaleniaError(f"{source} is itself a training kit: make a kit from the real-CT data.")
    folder.mkdir(parents=True, exist_ok=True)
    scans = []
    for scan in load_training_scans(spacing_zyx, source):
        arrays = {"hu": np.round(scan.hu).astype(np.int16), "labels": scan.labels,
                  "instances": scan.instances}  # fmt: skip
        if scan.muscle is not None:
            arrays["muscle"] = scan.muscle
        np.savez_compressed(folder / f"{scan.name}.npz", **arrays)
        scans.append({
            "name": scan.name,
            "descriptions": [d.to_dict() for d in scan.descriptions],
            "categories": list(scan.categories),
            "origin_zyx": list(scan.origin_zyx),
            "known_locations": list(scan.known_locations),
            "slice_mm": scan.slice_mm,
        })  # fmt: skip
    nodules = _write_training_nodules(source / LIDC_FOLDER, folder / LIDC_FOLDER)
    index = {
        "spacing_zyx": list(spacing_zyx),
        "scans": scans,
        "lidc_training_nodules": nodules,
        "contents": "the real-CT training split only (real_ct.load_training_scans and the LIDC "
        "crops of the training patients); no validation case",
    }
    (folder / KIT_INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return index


def _write_training_nodules(source: Path, target: Path) -> int:
    """The LIDC crops of the training patients, laid out as ``real_ct.load_lidc`` reads them."""
    from malenia.data.real_ct import lidc_split

    with open(source / "lidc_nodules.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    rows = [row for row in rows if lidc_split(row["patient_id"]) == "train"]
    prefixes = tuple(row["npz_key_prefix"] for row in rows)
    target.mkdir()
    with np.load(source / "lidc_nodules.npz") as arrays:
        kept = {key: arrays[key] for key in arrays.files if key.startswith(prefixes)}
    np.savez_compressed(target / "lidc_nodules.npz", **kept)
    with open(target / "lidc_nodules.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def read_training_scans(folder: Path, spacing_zyx) -> list:
    """The kit's training scans (``real_ct.RealScan``), on the grid they were stored on."""
    from malenia.attributes.schema import LesionDescription
    from malenia.data.real_ct import RealScan
    from malenia.errors import MaleniaError

    index = json.loads((folder / KIT_INDEX).read_text(encoding="utf-8"))
    if tuple(index["spacing_zyx"]) != tuple(float(s) for s in spacing_zyx):
        raise MaleniaError(
            f"The training kit {folder} holds scans at {index['spacing_zyx']} mm, and training "
            f"asks for {list(spacing_zyx)} mm: make a kit at that spacing "
            "(scripts/make_device_kit.py --spacing)."
        )
    scans = []
    for entry in index["scans"]:
        with np.load(folder / f"{entry['name']}.npz") as arrays:
            muscle = arrays["muscle"] if "muscle" in arrays.files else None
            scans.append(RealScan(
                entry["name"], arrays["hu"].astype(np.float32), arrays["labels"],
                arrays["instances"],
                [LesionDescription.from_dict(d) for d in entry["descriptions"]],
                list(entry["categories"]), tuple(entry["origin_zyx"]), tuple(index["spacing_zyx"]),
                tuple(entry["known_locations"]), muscle, entry["slice_mm"],
            ))  # fmt: skip
    return scans
