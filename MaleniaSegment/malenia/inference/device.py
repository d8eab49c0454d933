"""Device choice (CUDA, then Apple MPS, then CPU) and running a step with OOM fallback."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("malenia")


def pick_device(request: str = "auto") -> tuple[torch.device, str]:
    """Return (device, a sentence saying which and why)."""
    request = (request or "auto").lower()
    if request in ("auto", "gpu", "cuda"):
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return torch.device("cuda", 0), f"using GPU {name} (CUDA {torch.version.cuda})"
        if (
            request == "auto"
            and getattr(torch.backends, "mps", None)
            and torch.backends.mps.is_available()
        ):
            return torch.device("mps"), "using Apple GPU (MPS)"
        if request in ("gpu", "cuda"):
            return torch.device("cpu"), "no CUDA GPU available (torch build: " + (
                torch.version.cuda or "CPU-only"
            ) + "); using CPU"
        return torch.device("cpu"), "no GPU found; using CPU"
    if request == "mps":
        return torch.device("mps"), "using Apple GPU (MPS)"
    return torch.device("cpu"), "using CPU (as requested)"


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()
