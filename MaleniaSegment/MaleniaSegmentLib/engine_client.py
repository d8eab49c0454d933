"""What the Slicer logic needs from an engine, and an in-process implementation.

The module normally talks to the local engine server (``malenia.client.EngineHTTPClient``,
same methods) so that Slicer stays responsive; ``InProcessEngineClient`` runs the engine in
this process (tests, or scripting without a server).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class EngineResult:
    """A labelmap on the input grid ([k, j, i], 0 = background, i = lesion i) + lesions."""

    labelmap: np.ndarray
    lesions: list[dict]
    query: str
    threshold: float
    model_id: str
    result_id: str = ""
    description: dict | None = None
    extra: dict = field(default_factory=dict)


class EngineClient(Protocol):
    def encode(
        self,
        array: np.ndarray,
        ijk_to_ras: np.ndarray,
        roi=None,
        progress: Callable | None = None,
        cancel: Any = None,
    ) -> str: ...

    def segment(self, volume_id: str, query, threshold: float | None) -> EngineResult: ...

    def recut(self, volume_id: str, result_id: str, threshold: float) -> EngineResult: ...

    def find_lesions(self, volume_id: str, threshold: float | None) -> EngineResult: ...


class InProcessEngineClient:
    """The engine in this Python process (imports torch)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self._volumes: dict[str, Any] = {}
        self._results: dict[str, Any] = {}

    def encode(self, array, ijk_to_ras, roi=None, progress=None, cancel=None) -> str:
        from malenia.io import CTVolume

        volume = CTVolume.from_ijk_to_ras(array, ijk_to_ras, "slicer-volume")
        encoded = self.engine.encode(volume, roi=roi, progress=progress, cancel=cancel)
        volume_id = volume.key()
        self._volumes[volume_id] = encoded
        return volume_id

    def _wrap(self, result) -> EngineResult:
        result_id = f"r{len(self._results) + 1}"
        self._results[result_id] = result
        return EngineResult(
            labelmap=result.labelmap,
            lesions=[lesion.to_dict() for lesion in result.lesions],
            query=result.query,
            threshold=result.threshold,
            model_id=self.engine.model_id,
            result_id=result_id,
            description=result.description.to_dict() if result.description else None,
            extra={
                "grounded_in": getattr(result, "grounded_in", None),
                "grounding_warning": getattr(result, "grounding_warning", None),
                "not_understood": list(getattr(result, "not_understood", [])),
                "query_notes": list(getattr(result, "query_notes", [])),
            },
        )

    def segment(self, volume_id, query, threshold) -> EngineResult:
        return self._wrap(self._volumes[volume_id].segment(query, threshold))

    def recut(self, volume_id, result_id, threshold) -> EngineResult:
        return self._wrap(self._volumes[volume_id].recut(self._results[result_id], threshold))

    def find_lesions(self, volume_id, threshold) -> EngineResult:
        return self._wrap(self._volumes[volume_id].find_lesions(threshold))
