"""`malenia eval` and `malenia calibrate`: held-out synthetic test set, metrics, baseline A,
controls, ablations; the default threshold chosen on a validation set."""

from malenia.evaluation import calibrate as _calibrate
from malenia.evaluation.metrics import (
    DETECTION_IOU,
    NSD_TOLERANCE_MM,
    Detection,
    dice,
    lesion_detection,
    nsd,
)
from malenia.evaluation.run import EvaluationError, evaluate, summarise
from malenia.evaluation.run import register as _register_eval
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


def register(subparsers) -> None:
    _register_eval(subparsers)
    _calibrate.register(subparsers)
