"""`malenia synth --n N --out DIR`: write synthetic CTs with lesion masks and records."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="write synthetic CT volumes with lesions (NIfTI + JSON)"
    )
    parser.add_argument("--n", type=int, default=4, help="number of volumes")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", nargs="*", help="lesion categories (default: all presets)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(96, 128, 128), metavar=("Z", "Y", "X")
    )
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=(2.0, 1.5, 1.5), metavar=("SZ", "SY", "SX")
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk
    from tqdm import tqdm

    from malenia.attributes.presets import get_preset, load_presets
    from malenia.synth.dataset import make_sample

    categories = (
        tuple(get_preset(c).category for c in args.categories)
        if args.categories
        else tuple(load_presets())
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for index in tqdm(range(args.n), desc="synthesising", unit="volume"):
        sample = make_sample(
            args.seed * 1_000_003 + index, categories, tuple(args.shape), tuple(args.spacing)
        )
        stem = args.out / f"synth_{index:04d}"
        sz, sy, sx = sample.spacing
        for array, suffix in (
            (sample.ct.astype(np.int16), "ct"),
            (sample.labels, "organs"),
            (sample.instance_mask, "lesions"),
        ):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((sx, sy, sz))
            sitk.WriteImage(image, f"{stem}_{suffix}.nii.gz", useCompression=True)
        record = {
            "phase": sample.phase,
            "spacing_xyz_mm": [sx, sy, sz],
            "lesions": [
                {
                    "instance": r.rendered["instance"],
                    "category": r.category,
                    "attributes": r.description.to_dict(),
                    "report": r.report,
                    **r.rendered,
                }
                for r in sample.lesions
            ],
        }
        Path(f"{stem}.json").write_text(
            json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8"
        )
    print(f"wrote {args.n} volumes to {args.out}")
    return 0
