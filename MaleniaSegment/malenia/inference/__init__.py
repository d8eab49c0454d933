"""Inference: encode a CT once, then segment lesions from descriptions cheaply."""

from malenia.inference.engine import (
    CancelToken,
    EncodedVolume,
    Engine,
    SegmentationResult,
    default_weights_path,
)
from malenia.inference.postprocess import LesionInfo

__all__ = [
    "CancelToken",
    "EncodedVolume",
    "Engine",
    "LesionInfo",
    "SegmentationResult",
    "default_weights_path",
]
