"""The one place the server calls the inference engine, so an engine change touches one file.

The server's `VolumeStore` is the cache of encoded volumes (bounded by a memory budget), so
the engine's own small content cache is switched off here: two uploads of the same volume
then never share one `EncodedVolume` across threads.
"""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np

from malenia.inference import CancelToken, Engine

__all__ = ["CancelToken", "EngineBackend", "encoded_nbytes", "result_payload"]


class EngineBackend:
    """A loaded `Engine` seen through the few calls the server needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        engine.cache_size = 0  # the store is the cache (see module docstring)

    @classmethod
    def load(
        cls, weights: str | Path | None, device: str, organ_features: str | None = None
    ) -> EngineBackend:
        return cls(Engine.load(weights, device, organ_features))

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def card(self) -> dict:
        return self.engine.card

    @property
    def default_threshold(self) -> float:
        return self.engine.default_threshold

    @property
    def anatomy_grounding(self) -> bool:
        return self.engine.anatomy_grounding

    @property
    def organ_source(self) -> str:
        return self.engine.organ_source

    @property
    def device_note(self) -> str:
        return self.engine.device_note

    @property
    def device_type(self) -> str:
        return self.engine.device.type

    def encode(self, volume, roi, progress, cancel: CancelToken):
        return self.engine.encode(volume, roi=roi, progress=progress, cancel=cancel)

    @staticmethod
    def segment(encoded, query, threshold: float | None):
        return encoded.segment(query, threshold)

    @staticmethod
    def recut(encoded, result, threshold: float):
        return encoded.recut(result, threshold)

    @staticmethod
    def find_lesions(encoded, threshold: float | None):
        return encoded.find_lesions(threshold)

    @staticmethod
    def dicom_seg(result) -> bytes:
        """The result as DICOM SEG file bytes (the volume must come from a DICOM series)."""
        import tempfile

        from malenia.inference.dicom_seg import write_dicom_seg

        with tempfile.TemporaryDirectory(prefix="malenia-seg-") as folder:
            path = Path(folder) / "result.seg.dcm"
            write_dicom_seg(result, path)
            return path.read_bytes()


def _nbytes(value, depth: int = 0) -> int:
    """Bytes held by arrays / tensors in a value (lists, dicts, dataclasses, CTVolume)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # a torch tensor
        return int(value.numel() * value.element_size())
    if depth >= 2:
        return 0
    if isinstance(value, dict):
        return sum(_nbytes(v, depth + 1) for v in list(value.values()))
    if isinstance(value, list | tuple):
        return sum(_nbytes(v, depth + 1) for v in list(value))
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(_nbytes(v, depth + 1) for v in list(vars(value).values()))
    return 0


def encoded_nbytes(encoded) -> int:
    """Memory an encoded volume holds: cached window features and tokens, blend weights,
    cached probability maps, and the input volume it keeps to resample results back.
    Counted from its array / tensor attributes, so new engine caches are counted too."""
    if hasattr(encoded, "nbytes"):
        return int(encoded.nbytes)
    return sum(
        _nbytes(value)
        for name, value in list(vars(encoded).items())
        if name != "engine"  # shared by every volume
    )


def result_nbytes(result) -> int:
    """Memory a kept result holds (its model-grid maps and, once made, its labelmap)."""
    total = int(result.labels_model.nbytes)
    labelmap = getattr(result, "_labelmap", None)
    return total + (int(labelmap.nbytes) if labelmap is not None else 0)


def result_payload(result, result_id: str) -> dict:
    """JSON envelope: the lesion report plus the labelmap on the input grid, int16 [k, j, i],
    zlib-compressed and base64-encoded (`shape`, `dtype` say how to unpack it)."""
    labelmap = np.ascontiguousarray(result.labelmap, dtype=np.int16)
    payload = result.to_dict()
    payload.update(
        {
            "result_id": result_id,
            "shape": list(labelmap.shape),
            "dtype": "<i2",
            "mask_encoding": "zlib+base64",
            "mask_zlib_b64": base64.b64encode(zlib.compress(labelmap.tobytes(), 3)).decode(),
        }
    )
    return payload
