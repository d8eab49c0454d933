"""`malenia eval`: held-out synthetic test set, metrics, baseline A, controls, ablations."""

from malenia.evaluation.metrics import (
    DETECTION_IOU,
    NSD_TOLERANCE_MM,
    Detection,
    dice,
    lesion_detection,
    nsd,
)
from malenia.evaluation.run import EvaluationError, evaluate, register, summarise
from malenia.evaluation.testset import (
    HeldOutCase,
    HeldOutSetError,
    control_b_prompt,
    held_out_cases,
    make_case,
)

__all__ = [
    "DETECTION_IOU",
    "NSD_TOLERANCE_MM",
    "Detection",
    "EvaluationError",
    "HeldOutCase",
    "HeldOutSetError",
    "control_b_prompt",
    "dice",
    "evaluate",
    "held_out_cases",
    "lesion_detection",
    "make_case",
    "nsd",
    "register",
    "summarise",
]
