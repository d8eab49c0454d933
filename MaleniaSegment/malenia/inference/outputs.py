"""Files a person can open: Slicer .seg.nrrd, labelmap NIfTI, JSON report, overlay PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from malenia.display import lesion_color
from malenia.inference.result import SegmentationResult


def segment_tags(result: SegmentationResult, lesion) -> dict[str, str]:
    return {
        "Malenia.Description": json.dumps(lesion.attributes, ensure_ascii=False),
        "Malenia.Query": result.query,
        "Malenia.Category": lesion.category or "",
        "Malenia.Score": f"{lesion.score:.4f}",
        "Malenia.Threshold": f"{result.threshold:.3f}",
        "Malenia.ModelId": result.encoded.engine.model_id,
    }


def write_seg_nrrd(result: SegmentationResult, path: Path) -> Path:
    """A Slicer segmentation file: one labelmap layer, one segment per lesion. Names and tags
    are UTF-8 (a Chinese query stays Chinese): pynrrd writes ASCII headers only, so each
    non-ASCII text is written as a placeholder and the header is then rewritten in UTF-8,
    which Slicer's reader reads back."""
    import slicerio

    texts: dict[str, str] = {}

    def ascii_safe(text: str) -> str:
        if text.isascii():
            return text
        token = f"@@malenia-utf8-{len(texts)}@@"
        texts[token] = text
        return token

    labelmap = result.labelmap
    volume = result.volume
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.reshape(volume.direction, (3, 3)) @ np.diag(volume.spacing)
    ijk_to_lps[:3, 3] = volume.origin
    from scipy import ndimage

    boxes = ndimage.find_objects(labelmap)
    segments = []
    for lesion in result.lesions:
        box = boxes[lesion.index - 1] if lesion.index <= len(boxes) else None
        if box is None:
            continue  # too small to survive resampling onto the input grid
        low = [s.start for s in box]
        high = [s.stop - 1 for s in box]
        segments.append({
            "id": f"Segment_{lesion.index}",
            "name": ascii_safe(lesion.name),
            "color": [c / 255 for c in lesion_color(lesion.category)],
            "labelValue": int(lesion.index),
            "layer": 0,
            "extent": [int(low[2]), int(high[2]), int(low[1]), int(high[1]), int(low[0]), int(high[0])],
            "tags": {k: ascii_safe(v) for k, v in segment_tags(result, lesion).items()},
        })  # fmt: skip
    segmentation = {
        "voxels": labelmap.astype(np.int16),
        "ijkToLPS": ijk_to_lps,
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
    }
    slicerio.write_segmentation(str(path), segmentation, index_order="C")
    if texts:
        _restore_utf8_header(Path(path), texts)
    return Path(path)


def _restore_utf8_header(path: Path, texts: dict[str, str]) -> None:
    """Replace the placeholders in the NRRD header (the text before the first blank line)
    with their UTF-8 text; the voxel data after it is copied unchanged."""
    content = path.read_bytes()
    end = content.index(b"\n\n") + 2
    header = content[:end].decode("ascii")
    for token, text in texts.items():
        header = header.replace(token, text)
    path.write_bytes(header.encode("utf-8") + content[end:])


def write_labelmap(result: SegmentationResult, path: Path) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(result.labelmap.astype(np.int16))
    image.CopyInformation(result.encoded.input_reference)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)


def write_report(result: SegmentationResult, path: Path) -> Path:
    Path(path).write_text(
        json.dumps(result.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8"
    )
    return Path(path)


def write_dicom_seg(result: SegmentationResult, path: Path) -> Path:
    from malenia.inference.dicom_seg import write_dicom_seg as write

    return write(result, path)


def write_overlay(result: SegmentationResult, path: Path, max_lesions: int = 4) -> Path:
    """Axial, coronal and sagittal slices through each lesion (window -160..240 HU)."""
    import SimpleITK as sitk
    from PIL import Image, ImageDraw

    # Radiological display: reorient to LPS first (anterior up, patient's left on the right).
    def oriented(array: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(result.encoded.input_reference)
        return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))

    ct = oriented(result.volume.array.astype(np.float32))
    labelmap = oriented(result.labelmap)
    rows = []
    targets = result.lesions[:max_lesions] or [None]
    for lesion in targets:
        if lesion is not None and (labelmap == lesion.index).any():
            centre = np.argwhere(labelmap == lesion.index).mean(0).astype(int)
        else:
            centre = np.array(ct.shape) // 2
        views = [
            (ct[centre[0]], labelmap[centre[0]]),
            (ct[:, centre[1]][::-1], labelmap[:, centre[1]][::-1]),
            (ct[:, :, centre[2]][::-1], labelmap[:, :, centre[2]][::-1]),
        ]
        tiles = []
        for image, labels in views:
            grey = np.clip((image + 160) / 400 * 255, 0, 255).astype(np.uint8)
            rgb = np.stack([grey] * 3, -1)
            for other in result.lesions:
                mask = labels == other.index
                edge = mask & ~(
                    np.roll(mask, 1, 0)
                    & np.roll(mask, -1, 0)
                    & np.roll(mask, 1, 1)
                    & np.roll(mask, -1, 1)
                )
                rgb[edge] = lesion_color(other.category)
            tile = Image.fromarray(rgb).resize((256, 256))
            tiles.append(tile)
        row = Image.new("RGB", (768, 276), "black")
        for i, tile in enumerate(tiles):
            row.paste(tile, (256 * i, 20))
        caption = (
            f"{lesion.name}: {lesion.volume_ml:.1f} ml, {lesion.diameter_mm:.0f} mm, score {lesion.score:.2f}"
            if lesion
            else "no lesion found"
        )
        ImageDraw.Draw(row).text((4, 4), caption, fill=(255, 255, 255))
        rows.append(row)
    sheet = Image.new("RGB", (768, 276 * len(rows)), "black")
    for i, row in enumerate(rows):
        sheet.paste(row, (0, 276 * i))
    sheet.save(path)
    return Path(path)
