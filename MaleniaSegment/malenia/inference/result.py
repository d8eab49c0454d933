"""What one query answers: the probability map and lesions on the model grid, the labelmap
on the input grid made on first use (so that a re-cut stays cheap), and what the answer
says about its grounding and the words it did not understand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from malenia.attributes import LesionDescription
from malenia.inference.postprocess import LesionInfo
from malenia.io import CTVolume

if TYPE_CHECKING:
    from malenia.inference.encoded import EncodedVolume


@dataclass
class SegmentationResult:
    """Probabilities and lesions of one query; the labelmap on the input grid is made on
    first access (so that a re-cut stays cheap)."""

    encoded: EncodedVolume
    probability: np.ndarray  # model grid, float32
    labels_model: np.ndarray  # model grid, int16
    lesions: list[LesionInfo]
    threshold: float
    description: LesionDescription | None
    mode: str  # "prompt" or "auto"
    query: str = ""
    min_volume_ml: float = 0.1
    ranking: list | None = None  # category ranking of a prompt (kept for re-cuts)
    # The location the answer was grounded in (``malenia.inference.grounding``), or None
    # when the prompt branch answered alone.
    grounded_in: str | None = None
    # Set when the grounding region is larger than its organ can be (``region_warning``).
    grounding_warning: str | None = None
    # Free-text words the parser did not use, and its notes (what it inferred, conflicts).
    not_understood: list[str] = field(default_factory=list)
    query_notes: list[str] = field(default_factory=list)
    # The probability before its lesions grew (``lesion_rules.grow_to_density``), which a
    # re-cut grows again from; None when nothing grew.
    grown_from: np.ndarray | None = field(default=None, repr=False)
    _labelmap: np.ndarray | None = field(default=None, repr=False)

    @property
    def labelmap(self) -> np.ndarray:
        """int16 [k, j, i] on the input grid: 0 background, lesion i = i."""
        if self._labelmap is None:
            self._labelmap = self.encoded.to_input_labelmap(
                self.probability, self.labels_model, self.threshold
            )
        return self._labelmap

    @property
    def volume(self) -> CTVolume:
        return self.encoded.volume

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "query": self.query,
            "threshold": self.threshold,
            "grounded_in": self.grounded_in,
            "grounding_warning": self.grounding_warning,
            "not_understood": list(self.not_understood),
            "query_notes": list(self.query_notes),
            "description": self.description.to_dict() if self.description else None,
            "model": self.encoded.engine.model_id,
            "lesions": [lesion.to_dict() for lesion in self.lesions],
        }
