"""What `malenia eval` writes: metrics.json, per_case.csv, summary.md and two figures drawn
with PIL (no plotting library needed): per-category DSC bars and example overlays."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

SEEN_COLOUR = (40, 110, 200)
UNSEEN_COLOUR = (230, 130, 40)
BASELINE_COLOUR = (150, 150, 150)
CONTROL_B_COLOUR = (60, 60, 60)
TRUTH_COLOUR = (40, 220, 80)
PREDICTION_COLOUR = (240, 60, 60)


def write_outputs(out: Path, rows: list[dict], summary: dict, examples: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    write_csv(out / "per_case.csv", rows)
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    bar_chart(summary, out / "dsc_per_category.png")
    if examples:
        overlays(examples, out / "overlays.png")


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_LESION_NOISE_WORDS = {"white": "fresh white noise", "scanner": "the phantom's own noise"}


def summary_markdown(summary: dict) -> str:
    """The tables of docs/EVALUATION.md, ready to paste."""
    s = summary["settings"]
    lines = [
        f"Model `{s['model']}`, {s['n_per_category']} volumes per category, "
        f"{'x'.join(map(str, s['shape_zyx']))} voxels at {s['spacing_mm'][0]} mm, "
        f"threshold {s['threshold']}, test-set seed {s['test_set_seed']}, "
        f"lesions drawn with {_LESION_NOISE_WORDS[s.get('lesion_noise', 'white')]}, "
        f"{s['seconds']} s.",
        "",
        "| category | seen | n | DSC | NSD@2mm | recall | precision | control B | control C "
        "| baseline A DSC | baseline A recall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name, e, seen, n):
        return (
            f"| {name} | {seen} | {n} | {_f(e['dice_true'])} | {_f(e['nsd_true'])} "
            f"| {_f(e['recall_true'], 2)} | {_f(e['precision_true'], 2)} "
            f"| {_f(e['dice_control_B'])} | {_f(e['dice_control_C'])} "
            f"| {_f(e['dice_baseline_A'])} | {_f(e['recall_baseline_A'], 2)} |"
        )

    for category, e in summary["per_category"].items():
        lines.append(row(category, e, "yes" if e["seen"] else "no", e["n"]))
    for group, g in summary["groups"].items():
        lines.append(row(f"**mean {group}**", g, "", f"{g['categories']} cat."))
    ablations = s.get("ablations") or {}
    if ablations:
        lines += ["", "| model | seen DSC | unseen DSC | all DSC |", "|---|---|---|---|"]
        for name, key in [("full (" + s["model"] + ")", "dice_true")] + [
            (f"{n} ({model})", f"dice_ablation_{n}") for n, model in ablations.items()
        ]:
            values = [summary["groups"].get(g, {}).get(key) for g in ("seen", "unseen", "all")]
            lines.append(f"| {name} | " + " | ".join(_f(v) for v in values) + " |")
    split = summary.get("distractor_split") or {}
    if split:
        prompts = [k for k in next(iter(split.values())) if k.startswith("dice_")]
        names = [k[len("dice_") :].replace("_", " ") for k in prompts]
        lines += [
            "",
            "| volumes (mean DSC per volume) | n | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for name, entry in split.items():
            values = " | ".join(_f(entry[k]) for k in prompts)
            lines.append(f"| {name} | {entry['volumes']} | {values} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, t in summary["targets"].items():
        met = "–" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {name.replace('_', ' ')} | {_f(t['measured'])} | {met} |")
    return "\n".join(lines) + "\n"


def _text_image(text: str, size: tuple[int, int]):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((0, 0), text, fill="black")
    return image


def bar_chart(summary: dict, path: Path) -> None:
    """Per-category DSC of the true prompt (blue seen, orange unseen), baseline A (grey) and
    control B (dark), seen categories first, then the group means."""
    from PIL import Image, ImageDraw

    entries = sorted(summary["per_category"].items(), key=lambda kv: not kv[1]["seen"])
    entries += [(f"mean {g}", e | {"seen": g == "seen"}) for g, e in summary["groups"].items()]
    slot, bar, left, bottom, top = 76, 20, 50, 130, 40
    width, height = left + slot * len(entries) + 20, 420
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_h = height - bottom - top
    for tick in range(0, 11, 2):
        y = height - bottom - plot_h * tick / 10
        draw.line([(left, y), (width - 10, y)], fill=(225, 225, 225))
        draw.text((10, y - 6), f"{tick / 10:.1f}", fill="black")
    for i, (name, e) in enumerate(entries):
        x = left + 8 + slot * i
        bars = (
            (e["dice_true"], SEEN_COLOUR if e["seen"] else UNSEEN_COLOUR),
            (e["dice_baseline_A"], BASELINE_COLOUR),
            (e["dice_control_B"], CONTROL_B_COLOUR),
        )
        for j, (value, colour) in enumerate(bars):
            y = height - bottom - plot_h * (value or 0.0)
            draw.rectangle([x + bar * j, y, x + bar * j + bar - 2, height - bottom], fill=colour)
        label = _text_image(name[:20], (bottom - 8, 12)).rotate(90, expand=True)
        image.paste(label, (x + bar, height - bottom + 6))
    draw.text(
        (left, 6),
        "DSC per category. Bars: true prompt (blue = seen, orange = unseen/zero-shot),",
        fill="black",
    )
    draw.text((left, 20), "baseline A HU threshold (grey), control B other-category prompt (dark)",
              fill="black")  # fmt: skip
    image.save(path)


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def overlays(examples: dict, path: Path, tile: int = 192) -> None:
    """One tile per category (its first case): the axial slice through the target's centre,
    CT in a window suited to the host region, truth outlined green, the true-prompt
    prediction red, baseline A grey. Display: anterior up, patient's left on the right."""
    from PIL import Image, ImageDraw

    columns = 4
    rows = (len(examples) + columns - 1) // columns
    sheet = Image.new("RGB", (tile * columns, (tile + 16) * rows), "black")
    for n, (_category, (case, predictions)) in enumerate(examples.items()):
        truth = case.truth
        z = int(np.argwhere(truth)[:, 0].mean())
        lung = float(np.median(case.ct[truth])) < -300 or case.prompt.location in (
            "right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe",
            "left lower lobe",
        )  # fmt: skip
        low, high = (-1000.0, 300.0) if lung else (-160.0, 240.0)
        grey = np.clip((case.ct[z] - low) / (high - low) * 255, 0, 255).astype(np.uint8)
        rgb = np.stack([grey] * 3, -1)
        for mask, colour in (
            (predictions["baseline_A"][z], BASELINE_COLOUR),
            (truth[z], TRUTH_COLOUR),
            (predictions["true"][z], PREDICTION_COLOUR),
        ):
            rgb[_outline(mask)] = colour
        # Array x runs to the patient's left: already radiological (left on the right).
        picture = Image.fromarray(rgb).resize((tile, tile), Image.NEAREST)
        x, y = tile * (n % columns), (tile + 16) * (n // columns)
        sheet.paste(picture, (x, y + 16))
        ImageDraw.Draw(sheet).text((x + 2, y + 2), case.name, fill="white")
    sheet.save(path)
