"""Inference speed and memory on a 512 x 512 x 300 CT at 0.8 x 0.8 x 2.5 mm (a phantom body),
against a MONAI SwinUNETR-48 sliding-window baseline measured in the same run.

    python benchmarks/bench_inference.py [--weights W] [--device auto] [--baseline-windows 3]

Prints seconds and peak RSS (sampled while each step runs) for: encode (whole CT), a first
query, a re-query (new description), a threshold re-cut, the labelmap on the input grid,
auto mode, and ROI-only inference (10 cm cube, encode + query). The phantom is built in a
child process and cached in the temp folder, so its memory does not count. On CPU the
baseline times a few 96^3 windows at 1.5 mm (0.5 overlap) and extrapolates to the number
of windows the whole volume needs, which its output says; with a GPU it runs the whole
volume.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

SHAPE_ZYX = (300, 512, 512)
SPACING_XYZ = (0.8, 0.8, 2.5)
TARGETS = {  # issue 6 targets (CPU)
    "re-query": 0.5,
    "threshold re-cut": 0.2,
    "ROI inference (10 cm cube)": 10.0,
    "end to end (whole CT)": 60.0,
}


class PeakRSS:
    """Samples this process's resident memory every 10 ms while a step runs."""

    def __enter__(self) -> PeakRSS:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def timed(label: str, function, rows: list):
    with PeakRSS() as rss:
        start = time.perf_counter()
        value = function()
        seconds = time.perf_counter() - start
    rows.append((label, seconds, rss.peak / 2**30))
    print(f"{label:42s} {seconds:8.2f} s   peak RSS {rss.peak / 2**30:5.2f} GB", flush=True)
    return value, seconds


def _build_phantom(path: str) -> None:
    from malenia.synth.phantom import make_phantom

    phantom = make_phantom(1, SHAPE_ZYX, tuple(reversed(SPACING_XYZ)))
    np.save(path, phantom.ct.astype(np.int16))


def phantom_ct() -> np.ndarray:
    """The 512x512x300 abdomen phantom (HU, int16), built once in a child process."""
    path = Path(tempfile.gettempdir()) / "malenia_bench_phantom_512x512x300_seed1.npy"
    if not path.is_file():
        print("building the 512x512x300 phantom in a child process (once; cached in temp)")
        child = multiprocessing.get_context("spawn").Process(
            target=_build_phantom, args=(str(path),)
        )
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit("building the phantom failed")
    return np.load(path)


def baseline(volume, device: torch.device, windows: int, rows: list) -> tuple[float, str]:
    """SwinUNETR-48 (62 M) on 96^3 windows at 1.5 mm, 0.5 overlap (MONAI sliding window)."""
    import SimpleITK as sitk
    from malenia.preprocessing import normalize_ct, to_model_grid
    from monai.data.utils import dense_patch_slices
    from monai.inferers import sliding_window_inference
    from monai.inferers.utils import _get_scan_interval
    from monai.networks.nets import SwinUNETR

    roi = (96, 96, 96)
    model = SwinUNETR(in_channels=1, out_channels=2, feature_size=48).eval().to(device)

    def resample():
        return normalize_ct(sitk.GetArrayFromImage(to_model_grid(volume, (1.5, 1.5, 1.5))))

    grid, resample_s = timed("baseline: resample to 1.5 mm", resample, rows)
    total = len(
        dense_patch_slices(grid.shape, roi, _get_scan_interval(grid.shape, roi, 3, (0.5,) * 3))
    )
    image = torch.from_numpy(grid)[None, None]
    with torch.no_grad():
        if device.type == "cuda":
            run = lambda: sliding_window_inference(  # noqa: E731
                image, roi, 4, model, overlap=0.5, mode="gaussian", sw_device=device, device="cpu"
            ).argmax(1)  # fmt: skip
            _, seconds = timed(f"baseline: whole volume, {total} windows", run, rows)
            return resample_s + seconds, f"{total} windows, whole volume on {device}"
        patch = image[..., : roi[0], : roi[1], : roi[2]].contiguous()
        model(patch)  # warm-up

        def some_windows():
            for _ in range(windows):
                model(patch)

        _, seconds = timed(f"baseline: {windows} of {total} windows", some_windows, rows)
    estimate = resample_s + seconds / windows * total
    return estimate, f"{total} windows; timed {windows} and extrapolated to all {total}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="default: the bundled weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--baseline-windows", type=int, default=3)
    parser.add_argument(
        "--organ-features",
        default=None,
        help="model | astra (the extra's encoder; its maps are made in the first grounded query)",
    )
    parser.add_argument(
        "--overlap", type=float, default=None, help="window overlap (default: the engine's)"
    )
    parser.add_argument(
        "--baseline-only",
        type=float,
        default=None,
        metavar="SECONDS",
        help="only run the baseline; compare with an end-to-end time measured before",
    )
    args = parser.parse_args()
    from malenia.inference import Engine
    from malenia.io import CTVolume

    torch.set_num_threads(min(torch.get_num_threads(), psutil.cpu_count() or 1))
    array = phantom_ct()
    volume = CTVolume(
        array, SPACING_XYZ, (-204.8, -204.8, -375.0), tuple(np.eye(3).ravel()), "bench"
    )
    rows: list = []
    if args.baseline_only:
        from malenia.inference.device import pick_device

        estimate, how = baseline(volume, pick_device(args.device)[0], args.baseline_windows, rows)
        print(f"baseline ({how}): {estimate:.1f} s; ratio {estimate / args.baseline_only:.1f}x")
        return
    engine = Engine.load(args.weights, args.device, args.organ_features)
    if args.overlap is not None:
        engine.overlap = args.overlap
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {engine.device_note}")
    print(f"weights: {engine.weights_path} ({engine.model_id}); organ maps: {engine.organ_source}")
    print(f"CT {array.shape[::-1]} voxels at {SPACING_XYZ} mm; RSS before: ", end="")
    print(f"{psutil.Process().memory_info().rss / 2**30:.2f} GB")
    encoded, encode_s = timed("encode whole CT (heavy pass)", lambda: engine.encode(volume), rows)
    print(
        f"  {len(encoded.windows)} windows run (empty ones skipped; overlap {engine.overlap}),"
        f" model grid {encoded.shape}"
    )
    first, first_s = timed("first query (preset)", lambda: encoded.segment("renal cyst"), rows)
    print(f"  {len(first.lesions)} lesions at threshold {first.threshold} (the model's default)")
    _, requery_s = timed(
        "re-query (new description, new location)",
        lambda: encoded.segment({"location": "right liver lobe", "density": "hypodense"}),
        rows,
    )
    timed(
        "re-query, attribute edited (same location)",
        lambda: encoded.segment({"location": "right liver lobe", "density": "hyperdense"}),
        rows,
    )
    timed(
        "re-query, prompt branch alone (no grounding)",
        lambda: encoded.segment(
            {"location": "left kidney", "density": "hyperdense"}, grounding=False
        ),
        rows,
    )
    _, recut_s = timed("threshold re-cut", lambda: encoded.recut(first, 0.7), rows)
    _, labelmap_s = timed(
        "labelmap on the 512x512x300 input grid",
        lambda: encoded.recut(first, 0.6).labelmap,
        rows,
    )
    timed("auto mode (find_lesions)", lambda: encoded.find_lesions(), rows)
    encoded = first = None  # free the whole-CT cache before the ROI run
    engine._cache.clear()
    roi = ((0.0, 0.0, 0.0), (100.0, 100.0, 100.0))
    _, roi_s = timed(
        "ROI inference (10 cm cube)",
        lambda: engine.encode(volume, roi=roi).segment("renal cyst").labelmap,
        rows,
    )
    engine._cache.clear()
    end_to_end = encode_s + first_s + labelmap_s
    estimate, how = baseline(volume, engine.device, args.baseline_windows, rows)
    peak = max(r[2] for r in rows)
    print()
    print(f"MaleniaSegment end to end (encode + query + labelmap): {end_to_end:.1f} s")
    print(f"baseline SwinUNETR-48, 96^3 @1.5 mm, overlap 0.5 ({how}): {estimate:.1f} s")
    print(
        f"ratio baseline / MaleniaSegment end to end: {estimate / end_to_end:.1f}x (target >= 3x)"
    )
    figures = {
        "re-query": requery_s,
        "threshold re-cut": recut_s,
        "ROI inference (10 cm cube)": roi_s,
        "end to end (whole CT)": end_to_end,
    }
    for name, limit in TARGETS.items():
        verdict = "meets" if figures[name] < limit else "MISSES"
        print(f"  {name:28s} {figures[name]:7.2f} s  target < {limit:g} s: {verdict}")
    print(
        f"  peak RSS over all steps     {peak:7.2f} GB target < 4 GB: {'meets' if peak < 4 else 'MISSES'}"
    )


if __name__ == "__main__":
    main()
