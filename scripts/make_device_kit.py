"""Prepare ``.devkit/`` for a training chunk on the GPU machine lent to some sessions.

That machine has PyTorch, numpy, scipy, safetensors and transformers, but not MONAI or
SimpleITK, reaches no registry, and takes at most 64 MiB per call (the working tree and the
carried paths together). This writes, in the repository root (ignored through
``.git/info/exclude``):

- ``.devkit/data``: the real-CT training split as a training kit
  (``malenia.data.training_kit``: the training scans on the model grid, the LIDC crops of the
  training patients; no validation case), about 33 MB;
- ``.devkit/wheels``: the wheels training needs there and the machine lacks (MONAI), taken
  from the package registry here for that machine's Python;
- ``.devkit/bench``: with ``--bench``, SimpleITK's wheel as well (53 MB; the engine reads and
  resamples volumes with it), for ``benchmarks/bench_inference.py --device cuda`` in a call
  of its own.

    python scripts/make_device_kit.py [--bench] [--spacing 2]

Then follow "Training on a lent GPU" in docs/TRAINING_GPU.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MaleniaSegment"))

KIT = REPO / ".devkit"
# The machine's Python (docs of the lent machine: Python 3.12, manylinux x86-64).
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TRAINING_WHEELS = ("monai==1.5.1",)
BENCH_WHEELS = ("SimpleITK==2.5.2",)


def download(requirements, folder: Path) -> None:
    """Wheels of ``requirements`` (no dependencies) for the device's Python into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", DEVICE_PYTHON, "--implementation", "cp", *platforms,
         "-d", str(folder), *requirements],
        check=True,
    )  # fmt: skip


def ignore_kit() -> None:
    """Keep ``.devkit/`` out of git (it travels only where a call names it in ``carry``)."""
    exclude = REPO / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if "/.devkit/" not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("\n".join([*lines, "/.devkit/"]) + "\n")


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    from malenia.data.training_kit import write_training_kit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacing", type=float, default=2.0, help="the model grid (mm)")
    parser.add_argument("--bench", action="store_true", help="also SimpleITK for the benchmark")
    args = parser.parse_args()

    ignore_kit()
    if not (KIT / "data").exists():
        write_training_kit(KIT / "data", (args.spacing,) * 3)
    download(TRAINING_WHEELS, KIT / "wheels")
    if args.bench:
        download(BENCH_WHEELS, KIT / "bench")
    for part in ("data", "wheels", "bench"):
        if (KIT / part).exists():
            print(f".devkit/{part}: {size_mb(KIT / part):.1f} MB")


if __name__ == "__main__":
    main()
