"""The organ-region step of a grounded re-query, against scipy's operations in the same run.

    python benchmarks/bench_grounding_region.py [--weights W]

Encodes the bundled sample CT once, then for each organ times the region the answer is
grounded in (largest piece, holes filled, grown by ``ORGAN_MARGIN_MM``) two ways: with
``grounding.fill_holes`` / ``grow_by_ellipsoid`` (what the engine runs) and with
``ndimage.binary_fill_holes`` / ``binary_dilation`` (the reference). Prints both times, their
ratio, and whether the voxels are identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

LOCATIONS = ("right liver lobe", "left liver lobe", "spleen", "left kidney", "right kidney")


def reference_region(organ: np.ndarray, radius) -> np.ndarray:
    from malenia.inference.grounding import ellipsoid

    return ndimage.binary_dilation(ndimage.binary_fill_holes(organ), structure=ellipsoid(radius))


def best_of(function, repeats: int = 3) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        tick = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - tick)
    return min(times), result


def main() -> None:
    from malenia.inference.engine import Engine
    from malenia.inference.grounding import (
        LOCATION_THRESHOLD,
        _largest_piece,
        fill_holes,
        grow_by_ellipsoid,
        margin_voxels,
    )
    from malenia.inference.postprocess import foreground_box
    from malenia.io import read_volume
    from malenia.paths import resource

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    engine = Engine.load(args.weights, device="cpu")
    encoded = engine.encode(read_volume(resource("SampleData", "sample_ct.nii.gz")))
    radius = margin_voxels(encoded.spacing_mm)
    print(f"{engine.model_id}; model grid {encoded.shape}; margin {radius} voxels")
    total_fast = total_reference = 0.0
    for location in LOCATIONS:
        organ = _largest_piece(encoded.location_probability(location) > LOCATION_THRESHOLD)
        box = foreground_box(organ, max(radius))
        if box is None:
            print(f"{location:18s} not found")
            continue
        piece = organ[box]
        fast_s, fast = best_of(lambda piece=piece: grow_by_ellipsoid(fill_holes(piece), radius))
        reference_s, reference = best_of(lambda piece=piece: reference_region(piece, radius))
        total_fast, total_reference = total_fast + fast_s, total_reference + reference_s
        print(
            f"{location:18s} box {piece.size / 1e6:5.2f} M voxels  engine {fast_s * 1e3:6.1f} ms  "
            f"scipy {reference_s * 1e3:6.1f} ms  ratio {reference_s / fast_s:4.1f}x  "
            f"identical {np.array_equal(fast, reference)}"
        )
    print(
        f"all organs: engine {total_fast:.3f} s, scipy {total_reference:.3f} s, "
        f"ratio {total_reference / max(total_fast, 1e-9):.1f}x"
    )


if __name__ == "__main__":
    main()
