"""How often does a training mixture ask for an organ's own lesion type in a window holding
that organ, and how often is the answer there empty? Whole-scan answers ask every window of
the organ, nearly all lesion-free, so a mixture that almost never asks it without a lesion
teaches the model that the question always has an answer (stage 39, docs/EVALUATION.md).

    python scripts/count_organ_prompts.py CONFIG [--items 600]

Reads the config's training data only (the primary prompt as ``compute_loss`` draws it; the
contrast prompts are not counted: they carry no category); prints counts per (part of the
mixture, category, window holds >= 5% of the category's organs or not, answer empty or not).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MaleniaSegment"))


def main() -> None:
    from malenia.data.real_mix import CATEGORY_LOCATIONS
    from malenia.model import MaleniaConfig
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.dataset import lesion_pool
    from malenia.training.config import TrainConfig
    from malenia.training.data import make_dataset
    from malenia.training.prompts import choose_prompt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--items", type=int, default=600)
    args = parser.parse_args()
    config = TrainConfig.load(args.config)
    dataset = make_dataset(config, MaleniaConfig.from_dict({"name": "tiny"}))
    pool = {c: [r.description for r in lesion_pool(c)] for c in config.category_names()}
    organs = {c: [LOCATION_LABEL[loc] for loc in locs] for c, locs in CATEGORY_LOCATIONS.items()}
    rng, tally, began = random.Random(0), Counter(), time.time()
    for index in range(args.items):
        item = dataset[index]
        category, _, target = choose_prompt(
            item, rng, config.negative_prompt_prob, pool, config.prompt_attribute_dropout
        )
        if category not in organs or item.get("labels") is None:
            continue
        share = float(np.isin(item["labels"], organs[category]).mean())
        where = "in its organ" if share >= 0.05 else "elsewhere"
        answer = "empty" if not target.any() else "lesion"
        tally[(item["source"], category, where, answer)] += 1
    print(f"{args.items} items of {args.config} in {time.time() - began:.0f} s")
    for key, count in sorted(tally.items()):
        print(f"{key[0]:<22} {key[1]:<22} {key[2]:<13} {key[3]:<7} {count}")
    for category in organs:
        pos = sum(v for k, v in tally.items() if k[1:] == (category, "in its organ", "lesion"))
        neg = sum(v for k, v in tally.items() if k[1:] == (category, "in its organ", "empty"))
        print(f"{category}: asked in its organ {pos} times with a lesion there, {neg} without")


if __name__ == "__main__":
    main()
