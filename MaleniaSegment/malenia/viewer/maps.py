"""What the page downloads, as bytes: the CT as NIfTI, the result's probability map packed for
re-cutting in the browser, the engine's own output files, and volumes read from a zip."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np

from malenia.display import DEFAULT_COLOR, lesion_color
from malenia.io import CTVolume

# The lowest threshold on the page's slider: the probability is sent for every voxel around
# the model voxels above it, so any threshold from there up re-cuts in the browser.
PROBABILITY_FLOOR = 0.05
DOWNLOADS = {
    "seg.nrrd": "application/octet-stream",
    "labelmap.nii.gz": "application/gzip",
    "report.json": "application/json",
}


def image_nifti(volume: CTVolume) -> bytes:
    """The CT on its own grid as a gzipped NIfTI (what the page shows under the overlay)."""
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="malenia-view-") as folder:
        path = Path(folder) / "ct.nii"
        sitk.WriteImage(volume.to_sitk(), str(path))
        return gzip.compress(path.read_bytes(), compresslevel=1)


def probability_package(result, floor: float = PROBABILITY_FLOOR) -> tuple[bytes, dict]:
    """(body, meta) for re-cutting ``result`` in the browser without the server.

    body: gzip of two uint8 arrays on the input voxels of ``meta["box"]`` ([k0, k1], [j0, j1],
    [i0, i1]), C order: the probability times 255 (rounded), then a colour index per voxel
    (1-based into ``meta["colors"]``, from the lesion the voxel belongs to at the result's own
    threshold; 0 where no lesion was, which the page draws in ``meta["default_color"]``).
    The page shows a voxel when probability > threshold, the engine's rule on the input grid."""
    encoded = result.encoded
    categories: list[str | None] = []
    for lesion in result.lesions:
        if lesion.category not in categories:
            categories.append(lesion.category)
    colors = [list(lesion_color(c)) for c in categories]
    if result.mode == "prompt" and result.ranking:
        default = list(lesion_color(result.ranking[0][0]))
    else:
        default = list(DEFAULT_COLOR)
    meta = {
        "box": None,
        "colors": colors,
        "categories": categories,
        "default_color": default,
        "floor": floor,
        "threshold": result.threshold,
        "shape": list(result.volume.array.shape),
    }
    maps = encoded.input_maps(result.probability, result.labels_model, result.probability > floor)
    if maps is None:
        return gzip.compress(b""), meta
    box, probability, ids = maps
    quantised = np.clip(np.rint(probability * 255.0), 0, 255).astype(np.uint8)
    lookup = np.zeros(max(len(result.lesions), int(ids.max(initial=0))) + 1, np.uint8)
    for lesion in result.lesions:
        lookup[lesion.index] = categories.index(lesion.category) + 1
    color_index = lookup[np.clip(ids, 0, len(lookup) - 1)]
    meta["box"] = [[s.start, s.stop] for s in box]
    body = np.ascontiguousarray(quantised).tobytes() + np.ascontiguousarray(color_index).tobytes()
    return gzip.compress(body, compresslevel=3), meta


def output_file(result, kind: str) -> bytes:
    """One of the engine's own output files (``malenia.inference.outputs``), as the CLI
    writes it: ``seg.nrrd``, ``labelmap.nii.gz`` or ``report.json``."""
    from malenia.inference.outputs import write_labelmap, write_report, write_seg_nrrd

    writers = {
        "seg.nrrd": write_seg_nrrd,
        "labelmap.nii.gz": write_labelmap,
        "report.json": write_report,
    }
    with tempfile.TemporaryDirectory(prefix="malenia-view-") as folder:
        path = Path(folder) / f"result.{kind}"
        writers[kind](result, path)
        return path.read_bytes()


def file_stem(result) -> str:
    """A file name stem from the volume's name and the query, e.g. sample_ct_renal-cyst."""
    stem = Path(result.volume.name or "volume").name
    for suffix in (".gz", ".nii", ".nrrd", ".mha", ".zip"):
        stem = stem.removesuffix(suffix)
    query = "".join(c if c.isalnum() else "-" for c in result.query.lower())[:40].strip("-")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "volume"
    return f"{safe}_{query or 'lesions'}"


def dumps(meta: dict) -> str:
    """Compact JSON for a response header."""
    return json.dumps(meta, separators=(",", ":"))
