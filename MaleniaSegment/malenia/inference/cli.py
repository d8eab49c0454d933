"""`malenia segment`, `malenia find` and `malenia info`.

Everything that can be checked without the model is checked first, in this order, so that a
mistake costs milliseconds, not a model load and an encode: the query, the threshold, the
output paths, the input's header, size, integrity and (DICOM) slices. Only then is the
volume read and the model loaded. Outputs are written to temporary files beside their
targets and renamed at the end; a failed run leaves nothing behind, and an existing file
is never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from malenia.astra import ORGAN_FEATURES, ORGAN_FEATURES_HELP
from malenia.errors import MaleniaError

# Output option -> (extensions it accepts, what it is).
OUTPUT_KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "output": ((".seg.nrrd",), "Slicer segmentation"),
    "labelmap": ((".nii.gz", ".nii", ".nrrd", ".mha"), "labelmap"),
    "report": ((".json",), "JSON report"),
    "overlay": ((".png",), "overlay picture"),
    "dicom_seg": ((".dcm",), "DICOM SEG"),
}


class OutputPathError(MaleniaError):
    """An output path that cannot or must not be written."""


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"{text} is not a probability strictly between 0 and 1 (e.g. 0.5)"
        )
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


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
            type=_probability,
            default=None,
            help="probability cut-off (default: the model's calibrated threshold, see `malenia info`)",
        )
        parser.add_argument("--series", metavar="UID", help="DICOM folder: the series to use")
        parser.add_argument("-o", "--output", type=Path, help="Slicer segmentation (.seg.nrrd)")
        parser.add_argument("--labelmap", type=Path, help="labelmap NIfTI on the input grid")
        parser.add_argument("--report", type=Path, help="JSON lesion report")
        parser.add_argument(
            "--overlay", type=Path, help="PNG with three slices through each lesion"
        )
        parser.add_argument(
            "--dicom-seg",
            type=Path,
            help="DICOM SEG (.dcm) referencing the source series (DICOM input only)",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace output files that already exist"
        )
        parser.add_argument(
            "--max-memory-gb",
            type=_positive,
            default=None,
            help="memory a volume may need (default: $MALENIA_MAX_MEMORY_GB or half the RAM)",
        )
        parser.add_argument("--weights", type=Path, help="weights (.safetensors); default: bundled")
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
        parser.add_argument("--organ-features", choices=ORGAN_FEATURES, help=ORGAN_FEATURES_HELP)
        parser.set_defaults(handler=_run)
    info = subparsers.add_parser("info", help="weights, model summary and device")
    info.add_argument("--weights", type=Path)
    info.add_argument("--device", default="auto")
    info.add_argument("--organ-features", choices=ORGAN_FEATURES, help=ORGAN_FEATURES_HELP)
    info.add_argument("--json", action="store_true", help="print the whole model card as JSON")
    info.set_defaults(handler=_info)


def _query(args):
    if args.command == "find":
        return None
    if args.preset is not None:
        return args.preset
    if args.text is not None:
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


# ------------------------------------------------------------------ output paths


@dataclass
class PlannedOutput:
    option: str
    path: Path

    @property
    def partial(self) -> Path:
        """Where the writer writes first (same folder and extension, hidden name)."""
        suffix = next(e for e in OUTPUT_KINDS[self.option][0] if self.path.name.endswith(e))
        return self.path.with_name(
            f".{self.path.name[: -len(suffix)]}.partial-{os.getpid()}{suffix}"
        )


def plan_outputs(args: argparse.Namespace) -> list[PlannedOutput]:
    """Check every requested output path before any work: a known extension, an existing
    writable folder, distinct paths, not the input, and no existing file unless
    --overwrite (a user's file is never replaced by accident)."""
    planned: list[PlannedOutput] = []
    seen: dict[Path, str] = {}
    source = Path(args.ct).resolve()
    for option, (extensions, what) in OUTPUT_KINDS.items():
        path = getattr(args, option, None)
        if path is None:
            continue
        flag = "-o/--output" if option == "output" else "--" + option.replace("_", "-")
        path = Path(path)
        if not path.name.lower().endswith(extensions):
            raise OutputPathError(f"{flag} {path}: a {what} must end in {' or '.join(extensions)}.")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise OutputPathError(
                f"{flag} {path}: the folder {folder} does not exist. Create it first (nothing "
                "is created for you, so a typo cannot scatter files)."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"{flag} {path}: the folder {folder} is not writable.")
        resolved = path.resolve()
        if resolved == source or source in resolved.parents and source.is_dir():
            raise OutputPathError(f"{flag} {path} would write into the input; choose another path.")
        if path.is_dir():
            raise OutputPathError(f"{flag} {path} is a folder; give a file name.")
        if path.exists() and not args.overwrite:
            raise OutputPathError(
                f"{flag} {path} already exists; it was left untouched. Choose another name, "
                "or pass --overwrite to replace it."
            )
        if resolved in seen:
            raise OutputPathError(f"{flag} and {seen[resolved]} name the same file {path}.")
        seen[resolved] = flag
        planned.append(PlannedOutput(option, path))
    return planned


def write_outputs(result, planned: list[PlannedOutput]) -> tuple[list[Path], list[str]]:
    """Write each output to its partial file, then rename all into place; on any failure
    remove every partial file, so nothing half-written is left. Returns the paths written
    and a note for each output there was nothing to write into (a DICOM SEG of no lesion)."""
    from malenia.inference import outputs
    from malenia.inference.dicom_seg import NothingToWrite

    writers = {
        "output": outputs.write_seg_nrrd,
        "labelmap": outputs.write_labelmap,
        "report": outputs.write_report,
        "overlay": outputs.write_overlay,
        "dicom_seg": outputs.write_dicom_seg,
    }
    written, notes = [], []
    try:
        for item in planned:
            try:
                writers[item.option](result, item.partial)
                written.append(item)
            except NothingToWrite as error:
                notes.append(f"{item.path}: {error}")
        for item in written:
            os.replace(item.partial, item.path)
    finally:
        for item in planned:
            item.partial.unlink(missing_ok=True)
    return [item.path for item in written], notes


# ------------------------------------------------------------------ warnings


def warnings_block(result, extra: list[str] | None = None) -> str:
    """One short block for stderr: what the user should know about this answer."""
    lines = []
    if result.not_understood:
        lines.append(
            "not understood (ignored): " + "; ".join(f'"{u}"' for u in result.not_understood)
        )
    lines += [f"note: {note}" for note in result.query_notes]
    if result.grounding_warning:
        lines.append(f"warning: {result.grounding_warning}")
    lines += [f"note: {note}" for note in extra or []]
    if not lines:
        return ""
    return "\n".join(["-- please check " + "-" * 48, *lines, "-" * 64])


# ------------------------------------------------------------------ commands


def _run(args: argparse.Namespace) -> int:
    from malenia.attributes import resolve_query
    from malenia.validation import DicomSeries, check_source, parse_budget_gb

    query = _query(args)
    resolved = None if query is None else resolve_query(query)  # unknown words: now
    planned = plan_outputs(args)
    budget = None if args.max_memory_gb is None else parse_budget_gb(args.max_memory_gb)
    source = check_source(args.ct, args.series, budget)
    if args.dicom_seg is not None:
        if not isinstance(source, DicomSeries):
            raise OutputPathError(
                f"--dicom-seg needs a DICOM input: {Path(args.ct).name} is a file without DICOM "
                "references (patient, study, series), so a DICOM SEG would reference nothing. "
                "Segment the original DICOM folder, or write --output (.seg.nrrd) / --labelmap."
            )
        from malenia.inference.dicom_seg import require_highdicom

        require_highdicom()
    if args.roi is not None and min(args.roi[3:]) <= 0:
        raise MaleniaError("--roi sizes (the last three numbers) must be positive (mm).")

    from malenia.io import read_volume

    volume = read_volume(args.ct, args.series, budget)

    from tqdm import tqdm

    from malenia.inference import Engine

    engine = Engine.load(args.weights, args.device, args.organ_features)
    print(
        f"{engine.model_id}: {engine.device_note}; organ maps: {engine.organ_source}",
        file=sys.stderr,
    )
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
        if resolved is None
        else encoded.segment(resolved, args.threshold)
    )
    print(f"{len(result.lesions)} lesion(s) for: {result.query}")
    if not result.lesions:  # what to try next, not just "0"
        ways = "a lower --threshold, an --roi box around the area"
        ways += "" if resolved is None else ", or `malenia find` for every lesion"
        print(f"  none above threshold {result.threshold:g}: try {ways}")
    for lesion in result.lesions:
        print(
            f"  {lesion.name}: {lesion.volume_ml:.2f} ml, longest axial diameter {lesion.diameter_mm:.1f} mm, "
            f"score {lesion.score:.2f}, likely {', '.join(f'{c} ({p:.0%})' for c, p in lesion.category_ranking)}"
        )
    written, notes = write_outputs(result, planned)
    for path in written:
        print(f"wrote {path}")
    block = warnings_block(result, notes)
    if block:
        print(block, file=sys.stderr)
    return 0


def model_summary(engine) -> list[str]:
    """The few lines a user needs from the model card (the card itself: --json)."""
    card = engine.card
    evaluation = card.get("evaluation") or {}
    lines = [
        f"model:   {engine.model_id}  ({card.get('parameters', '?')} parameters)",
        f"device:  {engine.device_note}",
        f"default threshold: {engine.default_threshold}",
        f"anatomy grounding: {'on' if engine.anatomy_grounding else 'off (no location head)'}",
        f"organ maps: {engine.organ_source}",
    ]
    for key in ("spacing_mm", "patch_size"):
        value = card.get(key) or (card.get("config") or {}).get(key)
        if value is not None:
            lines.append(f"{key.replace('_', ' ')}: {value}")
    groups = (evaluation.get("synthetic_held_out") or {}).get("groups") or {}
    dice = {g: v.get("dice_true") for g, v in groups.items() if isinstance(v, dict)}
    if any(v is not None for v in dice.values()):
        lines.append(
            "held-out synthetic Dice: "
            + ", ".join(f"{g} {v:.3f}" for g, v in dice.items() if v is not None)
        )
    if card.get("description"):
        lines.append(f"about:   {card['description']}")
    return lines


def _info(args: argparse.Namespace) -> int:
    import torch

    from malenia.inference import Engine, default_weights_path

    engine = Engine.load(args.weights, args.device, args.organ_features)
    if args.json:
        print(json.dumps(engine.card, indent=1, ensure_ascii=False))
        return 0
    print(f"weights: {engine.weights_path or default_weights_path()}")
    for line in model_summary(engine):
        print(line)
    print(f"torch:   {torch.__version__}")
    print("the whole model card: malenia info --json")
    return 0
