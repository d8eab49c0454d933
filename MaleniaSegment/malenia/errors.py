"""Every error a user can see. Each message says what is wrong *and* what to do."""

from __future__ import annotations


class MaleniaError(Exception):
    """Base class: caught by the CLI, the server and the Slicer module and shown as text."""


class InvalidVolumeError(MaleniaError):
    """The image is not a usable 3D CT (2D, RGB, NaN, MR-like range, absurd size...)."""


class UnknownAttributeValueError(MaleniaError, ValueError):
    """An attribute key or value is not in the vocabulary; the message lists allowed ones."""


class InvalidRequestError(MaleniaError, ValueError):
    """A query option is out of range: a threshold outside (0, 1), an ROI off the volume."""


class WeightsError(MaleniaError):
    """Weights are missing, corrupt, or do not match their model card."""


class CancelledError(MaleniaError):
    """The user cancelled a running job; nothing was changed."""


class EngineUnavailableError(MaleniaError):
    """The engine process is not reachable or died during a job."""
