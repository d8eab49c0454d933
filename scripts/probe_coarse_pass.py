"""Would a second, coarser encoder pass help whole-scan answers find large lesions? On
*training* scans only: each answer as the card gives it, and with the prompt map and the
prompt-free lesion map replaced by their mean (or maximum) with the same maps from a pass on
a grid ``--factor`` times coarser, brought back to the model grid. A tiny network at 2 mm
sees a 5 cm tumour's inside as texture; at 4 mm the same tumour is the size of the lesions
it learnt.

Cases: the HCC training tumours, N lesions drawn into the training organs, M masses drawn
into training muscle, K solid training nodules enlarged and pasted into training lungs, and
(reported apart, not evidence) the shipped sample CT's two presets. No validation case.

    python scripts/probe_coarse_pass.py [--weights W] [--drawn 12] [--muscle 6] [--lung 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("off", "mean", "max")
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def coarse_maps(engine, volume, factor: float):
    """The encoding of ``volume`` on a grid ``factor`` times coarser than the model's."""
    fine = tuple(engine.config.spacing_mm)
    engine.config.spacing_mm = [s * factor for s in fine]
    try:
        return engine.encode(volume)
    finally:
        engine.config.spacing_mm = list(fine)


def to_fine(coarse_map: np.ndarray, coarse, fine) -> np.ndarray:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(coarse_map.astype(np.float32))
    image.CopyInformation(coarse.model_reference)
    out = sitk.Resample(image, fine.model_reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out)


def combined(encoded, coarse, mode: str) -> None:
    """Make ``encoded`` answer from the fine and coarse maps combined by ``mode``."""
    join = {"mean": lambda a, b: 0.5 * (a + b), "max": np.maximum}[mode]
    fine_any = encoded.__dict__.setdefault("_fine_any", encoded.any_lesion)
    encoded.any_lesion = join(fine_any, to_fine(coarse.any_lesion, coarse, encoded))
    encoded._lesion_components = None
    encoded._aligned_maps.clear()
    encoded._maps.clear()
    fine_prompt = type(encoded)._prompt_map.__get__(encoded)

    def prompt_map(description):
        coarse_prompt = coarse._prompt_probability(description)
        return join(fine_prompt(description), to_fine(coarse_prompt, coarse, encoded))

    encoded._prompt_map = prompt_map


def cases(n_drawn: int, n_muscle: int, n_lung: int):
    from malenia.data.drawn_lesions import drawn_muscle_masses, drawn_organ_lesions
    from malenia.data.nodule_paste import pasted_lung_masses
    from probe_answer_components import training_cases

    for name, volume, query, truth in training_cases(0):
        yield ("demo" if name.startswith("sample") else "hcc train"), name, volume, query, truth
    for name, volume, category, truth in drawn_organ_lesions(n_drawn):
        yield "drawn organ", name, volume, category, truth
    for name, volume, description, truth in drawn_muscle_masses(n_muscle):
        yield "drawn muscle", name, volume, description, truth
    for name, volume, truth in pasted_lung_masses(n_lung):
        yield "pasted lung", name, volume, "lung cancer", truth


def main() -> None:
    from malenia.evaluation.metrics import dice
    from malenia.inference import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--drawn", type=int, default=12)
    parser.add_argument("--muscle", type=int, default=6)
    parser.add_argument("--lung", type=int, default=4)
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    scores: dict[str, dict[str, list[float]]] = {}
    for group, name, volume, query, truth in cases(args.drawn, args.muscle, args.lung):
        coarse = coarse_maps(engine, volume, args.factor)
        engine._cache.clear()
        encoded = engine.encode(volume)
        line = []
        for mode in MODES:
            if mode != "off":
                combined(encoded, coarse, mode)
            result = encoded.segment(query, 0.5)
            for threshold in THRESHOLDS:
                score = dice(encoded.recut(result, threshold).labelmap > 0, truth)
                key = f"{mode} {threshold}"
                scores.setdefault(group, {}).setdefault(key, []).append(score)
                line.append(f"{score:.2f}")
            line.append("|")
        ml = truth.sum() * np.prod(volume.spacing) / 1000
        print(f"{group:12s} {name[:40]:40s} {ml:6.1f} ml " + " ".join(line), flush=True)
        engine._cache.clear()
    print("columns: each mode at thresholds " + " ".join(map(str, THRESHOLDS)))
    for group, by_key in scores.items():
        means = " ".join(f"{np.mean(v):.3f}" for v in by_key.values())
        print(f"{group:12s} n={len(next(iter(by_key.values()))):3d} {means}")
    evidence = [g for g in scores if g != "demo"]
    for key in scores[evidence[0]]:
        print(f"mean over training groups, {key}: "
              f"{np.mean([np.mean(scores[g][key]) for g in evidence]):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
