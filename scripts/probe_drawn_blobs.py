"""Why are plain lesions in real livers missed? Probes on the *training* scans only.

One -40 HU blob with the liver's own grain is drawn into each training scan's liver (as
``scripts/measure_noise_cue.py`` draws it, same seed) and the weights are asked three things:

- ``maps``: the median and largest probability inside the blob of the prompt-free lesion map
  and of a few queries (the grounded ones are the lesion map inside the organ; an answer can
  be no better than the lesion map is);
- ``liver``: the location head's liver region against the scan's liver, and how much of the
  blob the default answer marks;
- ``shift``: the same answer after the whole window is shifted by -40 ... +20 HU (a model tied
  to absolute HU would change with the scanner's calibration or the contrast phase).

    python scripts/probe_drawn_blobs.py [--weights W]

Needs ../shared/data/real_ct. A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUERIES = ("liver cancer", "hypodense mass in the liver", "round hypodense lesion")
SHIFTS_HU = (-40, -20, 0, 20)
SPACING = (2.0, 2.0, 2.0)


def main() -> None:
    from malenia.evaluation.metrics import dice
    from malenia.evaluation.real import score
    from malenia.inference import Engine
    from malenia.synth.anatomy import LOCATION_LABEL
    from measure_noise_cue import drawn_cases, lesion_window, window_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    engine = Engine.load(args.weights, device="cpu")
    livers = [LOCATION_LABEL["right liver lobe"], LOCATION_LABEL["left liver lobe"]]
    for scan, ways in drawn_cases(1, args.seed):
        hu, blob = ways["blob -40"]
        liver = np.isin(scan.labels[window_rows(blob)], livers)
        volume, inside = lesion_window(scan, hu, blob, "blob -40")
        encoded = engine.encode(volume)
        lesion_map = encoded.any_lesion[inside]
        maps = [f"lesion map {np.median(lesion_map):.2f} (max {lesion_map.max():.2f})"]
        for query in QUERIES:
            maps.append(f"{query!r} {np.median(encoded.segment(query).probability[inside]):.2f}")
        region = encoded.location_region("right liver lobe") | encoded.location_region(
            "left liver lobe"
        )
        marked = encoded.segment("liver cancer").labelmap > 0
        engine._cache.clear()
        print(f"{scan.name} ({blob.sum() * 8 / 1000:.0f} ml blob) maps, median p inside: "
              + "; ".join(maps))  # fmt: skip
        print(f"{scan.name} liver: region Dice {dice(region, liver):.2f} "
              f"({region.sum() * 8 / 1000:.0f} ml vs {liver.sum() * 8 / 1000:.0f} ml); "
              f"'liver cancer' marks {marked.sum() * 8 / 1000:.1f} ml, "
              f"{(marked & inside).sum() * 8 / 1000:.1f} ml of it in the blob")  # fmt: skip
        shifted = []
        for offset in SHIFTS_HU:
            volume, inside = lesion_window(scan, hu + offset, blob, "blob -40")
            answer = engine.encode(volume).segment("liver cancer")
            engine._cache.clear()
            found = score(answer.labelmap > 0, inside, SPACING)["dice"]
            shifted.append(f"{offset:+d} HU: p {np.median(answer.probability[inside]):.2f}, "
                           f"Dice {found:.2f}")  # fmt: skip
        print(f"{scan.name} shift: " + " | ".join(shifted), flush=True)


if __name__ == "__main__":
    main()
