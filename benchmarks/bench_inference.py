"""Inference speed and memory on a 512 x 512 x 300 CT at 0.8 x 0.8 x 2.5 mm (a phantom body),
against a MONAI SwinUNETR-48 sliding-window baseline measured in the same run.

    python benchmarks/bench_inference.py [--weights W] [--baseline-windows 3]

Prints seconds and peak RSS for: encode (whole CT), a re-query (new description), a
threshold re-cut (lesion list), the labelmap on the input grid, and ROI-only inference
(10 cm cube). The baseline times a few 96^3 windows at 1.5 mm (0.5 overlap) and
extrapolates to the whole volume, which its output says.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def timed(label: str, function):
    start = time.perf_counter()
    value = function()
    seconds = time.perf_counter() - start
    print(f"{label:38s} {seconds:8.2f} s   peak RSS {peak_rss_gb():5.2f} GB", flush=True)
    return value, seconds


def baseline_seconds(volume, windows: int) -> tuple[float, int]:
    """SwinUNETR-48 (62 M) on 96^3 windows at 1.5 mm, 0.5 overlap: time ``windows`` of them."""
    from malenia.preprocessing import to_model_grid
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from monai.networks.nets import SwinUNETR

    model = SwinUNETR(in_channels=1, out_channels=2, feature_size=48).eval()
    import SimpleITK as sitk

    grid = sitk.GetArrayFromImage(to_model_grid(volume, (1.5, 1.5, 1.5)))
    roi = (96, 96, 96)
    total = len(dense_patch_slices(grid.shape, roi, _get_scan_interval(grid.shape, roi, 3, 0.5)))
    patch = torch.zeros(1, 1, *roi)
    with torch.no_grad():
        model(patch)  # warm-up
        start = time.perf_counter()
        for _ in range(windows):
            model(patch)
        per_window = (time.perf_counter() - start) / windows
    return per_window * total, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--baseline-windows", type=int, default=3)
    args = parser.parse_args()
    from malenia.inference import Engine
    from malenia.io import CTVolume
    from malenia.synth.phantom import make_phantom

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device: {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    phantom, _ = timed(
        "make 512x512x300 phantom (not timed below)",
        lambda: make_phantom(1, (300, 512, 512), (2.5, 0.8, 0.8)),
    )
    volume = CTVolume(
        phantom.ct.astype(np.int16),
        (0.8, 0.8, 2.5),
        (-204.8, -204.8, -375.0),
        tuple(np.eye(3).ravel()),
        "bench",
    )
    del phantom
    engine = Engine.load(args.weights)
    encoded, encode_s = timed("encode whole CT (heavy pass)", lambda: engine.encode(volume))
    print(f"  windows: {len(encoded.windows)}, model grid {encoded.shape}")
    first, first_s = timed("first query (preset)", lambda: encoded.segment("renal cyst"))
    _, requery_s = timed(
        "re-query (new description)",
        lambda: encoded.segment({"location": "right liver lobe", "density": "hypodense"}),
    )
    _, recut_s = timed("threshold re-cut (lesion list)", lambda: encoded.recut(first, 0.7))
    _, labelmap_s = timed(
        "labelmap on the 512x512x300 input grid", lambda: encoded.recut(first, 0.6).labelmap
    )
    engine._cache.clear()
    roi = ((0.0, 0.0, 0.0), (100.0, 100.0, 100.0))
    roi_encoded, roi_s = timed(
        "ROI inference, 10 cm cube (encode+query)",
        lambda: engine.encode(volume, roi=roi).segment("renal cyst"),
    )
    end_to_end = encode_s + first_s + labelmap_s
    print(f"MaleniaSegment end to end (encode + query + labelmap): {end_to_end:.1f} s")
    estimate, total = baseline_seconds(volume, args.baseline_windows)
    print(
        f"baseline SwinUNETR-48, 96^3 @1.5 mm, overlap 0.5: {total} windows, timed {args.baseline_windows} and extrapolated: {estimate:.1f} s"
    )
    print(f"ratio baseline / MaleniaSegment end to end: {estimate / end_to_end:.1f}x")
    print(f"peak RSS of this process: {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
