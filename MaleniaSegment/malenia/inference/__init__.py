"""Inference: encode a CT once, then segment lesions from descriptions cheaply.

The names below are loaded on first use (PEP 562), so that `malenia segment` can check its
inputs in milliseconds before torch is imported."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CancelToken": "malenia.cancel",
    "EncodedVolume": "malenia.inference.encoded",
    "Engine": "malenia.inference.engine",
    "SegmentationResult": "malenia.inference.encoded",
    "default_weights_path": "malenia.inference.engine",
    "LesionInfo": "malenia.inference.postprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'malenia.inference' has no attribute {name!r}")
