"""Synthetic-world generation speed and memory.

python benchmarks/bench_synth.py
"""

from __future__ import annotations

import resource
import time

from malenia.synth.dataset import make_sample
from malenia.synth.phantom import make_phantom
from malenia.synth.split import SEEN_CATEGORIES


def main() -> None:
    for shape, spacing in (
        ((64, 64, 64), (2.0, 2.0, 2.0)),
        ((96, 96, 96), (1.5, 1.5, 1.5)),
        ((160, 256, 256), (1.5, 1.5, 1.5)),
        ((120, 512, 512), (2.5, 0.8, 0.8)),
    ):
        start = time.perf_counter()
        make_phantom(0, shape, spacing)
        print(f"phantom {shape} @ {spacing} mm: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    for i in range(10):
        make_sample(i, SEEN_CATEGORIES, (64, 64, 64), (2.0, 2.0, 2.0))
    print(
        f"training sample 64^3 with lesions: {(time.perf_counter() - start) / 10:.2f} s each (mean of 10)"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
