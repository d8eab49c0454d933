"""Does a model find lesions, or the renderer's noise? Liver lesions are drawn into the real
livers of the *training* scans (never a validation case) three ways, and each answer to
"liver cancer" is scored:

- ``white``: the renderer as stages 5-22 trained on it (the lesion's inside is fresh white
  noise);
- ``scanner``: the same lesion (same seed) keeping the scan's own noise (stage 23 on);
- ``blob -15`` / ``blob -40``: a round blob that differs from its liver only by a mean HU
  offset, with the liver's own grain (what a real hypodense lesion looks like).

A model that learnt lesions scores the four alike; one that learnt the noise finds only
``white``. Prints one line per case and a summary per way.

    python scripts/measure_noise_cue.py [--weights W] [--n 2] [--seed 3]

Needs ../shared/data/real_ct.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))

SPACING = (2.0, 2.0, 2.0)
WAYS = ("white", "scanner", "blob -15", "blob -40")


def drawn_cases(n: int, seed: int):
    """(scan, {way: (hu, lesion mask)}) for ``n`` lesions in each training scan's liver."""
    from malenia.data.real_ct import load_training_scans
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.dataset import lesion_pool
    from malenia.synth.lesions import LesionRecord, render_lesions

    pool = [r for r in lesion_pool("liver cancer") if r.description.density == "hypodense"]
    livers = [LOCATION_LABEL["right liver lobe"], LOCATION_LABEL["left liver lobe"]]
    for scan in load_training_scans(SPACING):
        liver = np.isin(scan.labels, livers) & (scan.instances == 0)
        for k in range(n):
            rng = np.random.default_rng([seed, k])
            template = pool[int(rng.integers(len(pool)))]
            description = replace(template.description, location="right liver lobe")
            record = LesionRecord("liver cancer", description, "", (30.0, 50.0), contrast=0.6)
            ways = {}
            for way, keep in (("white", False), ("scanner", True)):
                hu, instances, done = render_lesions(
                    scan.hu, scan.labels, [record], np.random.default_rng([seed, k, 1]), SPACING,
                    keep_scanner_noise=keep,
                )  # fmt: skip
                if done:
                    ways[way] = (hu, instances == 1)
            if "white" not in ways:
                continue
            blob = ndimage.binary_dilation(ways["white"][1], iterations=1) & liver
            soft = ndimage.gaussian_filter(blob.astype(np.float32), 1.0)
            for offset in (-15, -40):
                ways[f"blob {offset}"] = (scan.hu + offset * soft, blob)
            yield scan, ways


def window_rows(lesion: np.ndarray) -> slice:
    """The 70 slices around a drawn lesion that ``lesion_window`` encodes."""
    centre = int(np.argwhere(lesion)[:, 0].mean())
    return slice(max(centre - 35, 0), min(centre + 35, lesion.shape[0]))


def lesion_window(scan, hu: np.ndarray, lesion: np.ndarray, way: str):
    """(CTVolume, lesion mask) of the 70 slices around a drawn lesion: the liver and its
    neighbours, encoded in seconds."""
    rows = window_rows(lesion)
    return scan.slab(hu[rows], rows.start, f"{scan.name} {way}"), lesion[rows]


def main() -> None:
    from malenia.evaluation.real import score
    from malenia.inference import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--n", type=int, default=2, help="lesions per training scan")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
    for scan, ways in drawn_cases(args.n, args.seed):
        line = []
        for way, (hu, lesion) in ways.items():
            volume, inside = lesion_window(scan, hu, lesion, way)
            answer = engine.encode(volume).segment("liver cancer")
            engine._cache.clear()
            median = float(np.median(answer.probability[inside]))
            dice = score(answer.labelmap > 0, inside, SPACING)["dice"]
            results[way].append((median, dice))
            line.append(f"{way}: p {median:.3f} Dice {dice:.3f}")
        print(f"{scan.name} ({int(lesion.sum() * 8 / 1000)} ml): " + " | ".join(line), flush=True)
    print(f"{'way':>9s}  {'n':>2s}  {'median p inside':>15s}  {'Dice':>5s}")
    for way, rows in results.items():
        if rows:
            p, d = np.mean(rows, axis=0)
            print(f"{way:>9s}  {len(rows):2d}  {p:15.3f}  {d:5.3f}")


if __name__ == "__main__":
    main()
