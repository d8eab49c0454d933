"""`malenia segment`, `malenia find` and `malenia info`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    for name, help_text in (
        ("segment", "segment lesions matching a description"),
        ("find", "find every lesion (auto mode)"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument(
            "ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder"
        )
        if name == "segment":
            query = parser.add_mutually_exclusive_group(required=True)
            query.add_argument(
                "--preset",
                help='lesion preset, e.g. "renal cyst" (see `malenia attributes presets`)',
            )
            query.add_argument(
                "--attr", action="append", metavar="KEY=VALUE", help="an attribute, repeatable"
            )
            query.add_argument("--text", help="free-text description (English or Chinese)")
        parser.add_argument(
            "--roi",
            type=float,
            nargs=6,
            metavar=("R", "A", "S", "SX", "SY", "SZ"),
            help="region of interest: centre (RAS mm) and size (mm)",
        )
        parser.add_argument(
            "--threshold",
            type=float,
            default=None,
            help="probability cut-off (default: the model's calibrated threshold, see `malenia info`)",
        )
        parser.add_argument("-o", "--output", type=Path, help="Slicer segmentation (.seg.nrrd)")
        parser.add_argument("--labelmap", type=Path, help="labelmap NIfTI on the input grid")
        parser.add_argument("--report", type=Path, help="JSON lesion report")
        parser.add_argument(
            "--overlay", type=Path, help="PNG with three slices through each lesion"
        )
        parser.add_argument("--weights", type=Path, help="weights (.safetensors); default: bundled")
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
        parser.set_defaults(handler=_run)
    info = subparsers.add_parser("info", help="weights, model card and device")
    info.add_argument("--weights", type=Path)
    info.add_argument("--device", default="auto")
    info.set_defaults(handler=_info)


def _query(args):
    if args.command == "find":
        return None
    if args.preset:
        return args.preset
    if args.text:
        return args.text
    pairs = {}
    for item in args.attr:
        key, sep, value = item.partition("=")
        if not sep:
            from malenia.errors import UnknownAttributeValueError

            raise UnknownAttributeValueError(
                f"--attr needs KEY=VALUE, got '{item}' (e.g. --attr density=hypodense)"
            )
        if key.strip() == "specific_features":
            pairs.setdefault(key.strip(), []).append(value.strip())
        else:
            pairs[key.strip()] = value.strip()
    return pairs


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from malenia.inference import Engine
    from malenia.inference.outputs import (
        write_labelmap,
        write_overlay,
        write_report,
        write_seg_nrrd,
    )
    from malenia.io import read_volume

    query = _query(args)
    volume = read_volume(args.ct)
    engine = Engine.load(args.weights, args.device)
    print(f"{engine.model_id}: {engine.device_note}", file=sys.stderr)
    bar = tqdm(desc="encoding", unit="window", file=sys.stderr)

    def progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    roi = (tuple(args.roi[:3]), tuple(args.roi[3:])) if args.roi else None
    encoded = engine.encode(volume, roi=roi, progress=progress)
    bar.close()
    result = (
        encoded.find_lesions(args.threshold)
        if query is None
        else encoded.segment(query, args.threshold)
    )
    print(f"{len(result.lesions)} lesion(s) for: {result.query}")
    for lesion in result.lesions:
        print(
            f"  {lesion.name}: {lesion.volume_ml:.2f} ml, longest axial diameter {lesion.diameter_mm:.1f} mm, "
            f"score {lesion.score:.2f}, likely {', '.join(f'{c} ({p:.0%})' for c, p in lesion.category_ranking)}"
        )
    outputs = [
        (args.output, write_seg_nrrd),
        (args.labelmap, write_labelmap),
        (args.report, write_report),
        (args.overlay, write_overlay),
    ]
    for path, writer in outputs:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            writer(result, path)
            print(f"wrote {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    import torch

    from malenia.inference import Engine, default_weights_path

    engine = Engine.load(args.weights, args.device)
    print(f"weights: {engine.weights_path or default_weights_path()}")
    print(f"model:   {engine.model_id}  ({engine.card.get('parameters', '?')} parameters)")
    print(f"device:  {engine.device_note}  (torch {torch.__version__})")
    print(f"default threshold: {engine.default_threshold}")
    print(f"anatomy grounding: {'on' if engine.anatomy_grounding else 'off (no location head)'}")
    print("model card:")
    print(json.dumps(engine.card, indent=1))
    return 0
