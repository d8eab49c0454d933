"""DICOM SEG output (highdicom): one binary segment per lesion, referencing the CT series
the volume was read from, so a PACS or viewer places it on the source images.

Only a volume read from a DICOM series (``CTVolume.dicom``) can be referenced; anything else
gets a clear message, never a SEG that points at made-up images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malenia import __version__
from malenia.errors import MaleniaError

HIGHDICOM_REQUIREMENT = "highdicom>=0.28,<0.29"


class NothingToWrite(MaleniaError):
    """The answer has no lesion: a DICOM SEG needs at least one segment."""


def require_highdicom() -> None:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise MaleniaError(
            f"DICOM SEG output needs highdicom, which is not installed here: pip install "
            f"'{HIGHDICOM_REQUIREMENT}' (it is part of MaleniaSegment's default install)."
        ) from None


def no_dicom_reference_message(name: str) -> str:
    return (
        f"A DICOM SEG must reference the DICOM images it segments, and '{name}' was not read "
        "from a DICOM series (NIfTI, NRRD or a raw array carry no patient, study or series "
        "references). Segment the original DICOM folder, or use the .seg.nrrd / labelmap output."
    )


def write_dicom_seg(result, path: Path) -> Path:
    """Write ``result`` as a DICOM SEG: segment labels and colours from the lesions, our
    terminology codes (morphologically altered structure / cyst, carcinoma, ...), and the
    model id as the algorithm's version."""
    require_highdicom()
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from malenia.display import lesion_color
    from malenia.terminology import category_kind, read_codes

    volume = result.volume
    if volume.dicom is None:
        raise MaleniaError(no_dicom_reference_message(volume.name))
    labelmap = np.asarray(result.labelmap)
    present = [int(v) for v in np.unique(labelmap) if v > 0]
    if not present:
        raise NothingToWrite(
            "No lesion was found, so there is no segment to put in a DICOM SEG; it was not written."
        )
    sources = volume.dicom.headers or [
        pydicom.dcmread(f, stop_before_pixels=True) for f in volume.dicom.files
    ]
    if labelmap.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise MaleniaError(
            f"The labelmap {labelmap.shape} does not match the DICOM series "
            f"({len(sources)} slices of {sources[0].Rows}x{sources[0].Columns}); nothing written."
        )
    terminology = read_codes()
    category = terminology.category
    by_index = {lesion.index: lesion for lesion in result.lesions}
    numbers = np.zeros(int(labelmap.max()) + 1, np.uint16)
    model_id = result.encoded.engine.model_id
    algorithm = hd.AlgorithmIdentificationSequence(
        name="MaleniaSegment", version=model_id, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for number, index in enumerate(present, start=1):
        numbers[index] = number
        lesion = by_index.get(index)
        kind = terminology.kinds.get(category_kind(lesion.category if lesion else None))
        kind = kind or terminology.kinds["lesion"]
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=(lesion.name if lesion else f"Lesion {index}")[:64],
            segmented_property_category=hd.sr.CodedConcept(
                category.value, category.scheme, category.meaning
            ),
            segmented_property_type=hd.sr.CodedConcept(kind.value, kind.scheme, kind.meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(
                *lesion_color(lesion.category if lesion else None)
            ),
        )
        descriptions.append(description)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=numbers[labelmap],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MaleniaSegment",
        manufacturer_model_name=model_id[:64],
        software_versions=f"malenia {__version__}",
        device_serial_number="none",
        series_description=f"MaleniaSegment: {result.query}"[:64],
    )
    seg.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the query may be Chinese
    seg.save_as(str(path))
    return Path(path)
