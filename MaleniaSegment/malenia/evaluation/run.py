"""`malenia eval`: zero-shot evaluation on the fixed-seed held-out synthetic test set.

For every category (seen and unseen) it renders test volumes, encodes each once through the
same engine users get, and asks several questions of the cached encoding:

- the true prompt (the lesion's own description),
- control B: the description of another category (should fail if the model reads prompts),
- control C: the location alone,

plus baseline A, which needs no model: attribute-aware HU thresholding inside the host organ.
Metrics: Dice and NSD (MONAI, tolerance 2 mm), lesion-level recall and precision.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

NSD_TOLERANCE_MM = 2.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="zero-shot evaluation on the held-out synthetic test set"
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="weights to evaluate (default: bundled)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n-per-category", type=int, default=20)
    parser.add_argument("--categories", nargs="*", help="default: every preset category")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 64), metavar=("Z", "Y", "X"))
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.set_defaults(handler=_run)


# --------------------------------------------------------------------------- metrics


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    import torch
    from monai.metrics import compute_dice

    if not truth.any() and not prediction.any():
        return 1.0
    p = torch.from_numpy(prediction[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    return float(compute_dice(p, t, ignore_empty=False)[0, 0])


def nsd(prediction: np.ndarray, truth: np.ndarray, spacing_zyx) -> float:
    """Normalised surface Dice at NSD_TOLERANCE_MM (MONAI)."""
    import torch
    from monai.metrics import compute_surface_dice

    if not prediction.any() or not truth.any():
        return float(prediction.any() == truth.any())
    p = (
        torch.nn.functional.one_hot(torch.from_numpy(prediction.astype(np.int64)), 2)
        .permute(3, 0, 1, 2)[None]
        .float()
    )
    t = (
        torch.nn.functional.one_hot(torch.from_numpy(truth.astype(np.int64)), 2)
        .permute(3, 0, 1, 2)[None]
        .float()
    )
    value = compute_surface_dice(
        p,
        t,
        class_thresholds=[NSD_TOLERANCE_MM],
        include_background=False,
        spacing=list(spacing_zyx),
    )
    return float(value[0, 0])


def lesion_detection(
    prediction: np.ndarray, truth_instances: np.ndarray
) -> tuple[int, int, int, int]:
    """(GT lesions found, GT lesions, predicted components on a lesion, predicted components).
    A lesion counts as found when a predicted component overlaps it with IoU > 0.1."""
    predicted, count = ndimage.label(prediction)
    found = 0
    truth_ids = [i for i in np.unique(truth_instances) if i]
    matched_components = set()
    for truth_id in truth_ids:
        lesion = truth_instances == truth_id
        for component in np.unique(predicted[lesion]):
            if component == 0:
                continue
            mask = predicted == component
            iou = (mask & lesion).sum() / (mask | lesion).sum()
            if iou > 0.1:
                found += 1
                matched_components.add(int(component))
                break
    on_lesion = sum(
        1
        for c in range(1, count + 1)
        if c in matched_components or (truth_instances[predicted == c] > 0).any()
    )
    return found, len(truth_ids), on_lesion, count


# --------------------------------------------------------------------------- baseline A


def baseline_threshold(
    ct: np.ndarray, labels: np.ndarray, description, location_labels=None
) -> np.ndarray:
    """Attribute-aware HU thresholding: the host organ from the labels, the HU window the
    density attribute implies relative to the organ's median, largest component."""
    from malenia.synth.anatomy import LOCATION_LABEL

    location_labels = location_labels or LOCATION_LABEL
    label = location_labels.get(description.location or "")
    if label is None or not (labels == label).any():
        return np.zeros(ct.shape, bool)
    # Inside the organ (eroded: partial volume with fat at its border is not a lesion).
    organ = ndimage.binary_erosion(labels == label, iterations=1)
    smooth = ndimage.gaussian_filter(ct.astype(np.float32), 1.0)
    median = float(np.median(ct[labels == label]))
    density = description.density
    if median < -500:  # lung: anything denser than aerated lung
        candidate = smooth > -500
    elif density == "hypodense":
        candidate = smooth < median - 20
    elif density == "hyperdense":
        candidate = smooth > median + 20
    elif density == "isodense":
        candidate = np.abs(smooth - median) < 8
    else:
        candidate = smooth < median - 20
    candidate &= organ
    components, count = ndimage.label(candidate)
    if count == 0:
        return candidate
    sizes = np.bincount(components.ravel())[1:]
    largest = components == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_dilation(largest) & (labels == label)


# --------------------------------------------------------------------------- the run


def held_out_cases(categories, n_per_category: int, shape):
    """The fixed-seed held-out test set: (category, index, Sample)."""
    from malenia.synth.dataset import make_sample
    from malenia.synth.split import TEST_SET_SEED

    for c_index, category in enumerate(categories):
        made = 0
        attempt = 0
        while made < n_per_category and attempt < 5 * n_per_category:
            seed = TEST_SET_SEED + 10_007 * c_index + attempt
            attempt += 1
            sample = make_sample(seed, (category,), tuple(shape), (2.0, 2.0, 2.0), max_lesions=1)
            if sample.lesions:
                made += 1
                yield category, made - 1, sample


def other_category_prompt(category: str, categories: list[str]):
    """Control B: the preset of a category in another organ (deterministic)."""
    from malenia.attributes.presets import load_presets

    presets = load_presets()
    own = presets[category].description.location
    ordered = (
        categories[categories.index(category) + 1 :] + categories[: categories.index(category)]
    )
    for other in ordered:
        if presets[other].description.location != own:
            return presets[other].description
    return presets[ordered[0]].description


def evaluate(
    engine,
    out: Path,
    categories: list[str] | None = None,
    n_per_category: int = 20,
    shape=(64, 64, 64),
    threshold: float = 0.5,
) -> dict:
    from malenia.attributes.presets import SEEN_CATEGORIES, load_presets
    from malenia.io import CTVolume

    categories = list(categories or load_presets())
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.time()
    for category, index, sample in held_out_cases(categories, n_per_category, shape):
        lesion = sample.lesions[0]
        truth = sample.instance_mask > 0
        volume = CTVolume(
            sample.ct,
            (2.0, 2.0, 2.0),
            (0.0, 0.0, 0.0),
            tuple(np.eye(3).ravel()),
            f"{category}-{index}",
        )
        encoded = engine.encode(volume)
        prompts = {
            "true": lesion.description,
            "control_B_other_category": other_category_prompt(category, categories),
            "control_C_location_only": lesion.description.only("location"),
        }
        row = {"category": category, "case": index, "seen": category in SEEN_CATEGORIES}
        for name, description in prompts.items():
            prediction = encoded.segment(description, threshold).labelmap > 0
            row[f"dice_{name}"] = dice(prediction, truth)
            if name == "true":
                row["nsd_true"] = nsd(prediction, truth, (2.0, 2.0, 2.0))
                found, total, on_lesion, predicted = lesion_detection(
                    prediction, sample.instance_mask
                )
                row.update(
                    {
                        "lesions_found": found,
                        "lesions": total,
                        "components_on_lesion": on_lesion,
                        "components": predicted,
                    }
                )
        baseline = baseline_threshold(sample.ct, sample.labels, lesion.description)
        row["dice_baseline_A"] = dice(baseline, truth)
        rows.append(row)
        engine._cache.clear()
    summary = summarise(rows)
    summary["settings"] = {
        "n_per_category": n_per_category,
        "shape": list(shape),
        "spacing_mm": 2.0,
        "threshold": threshold,
        "nsd_tolerance_mm": NSD_TOLERANCE_MM,
        "model": engine.model_id,
        "seconds": round(time.time() - started, 1),
    }
    write_outputs(out, rows, summary)
    return summary


def summarise(rows: list[dict]) -> dict:
    metrics = [
        "dice_true",
        "nsd_true",
        "dice_control_B_other_category",
        "dice_control_C_location_only",
        "dice_baseline_A",
    ]
    per_category = {}
    for category in dict.fromkeys(r["category"] for r in rows):
        subset = [r for r in rows if r["category"] == category]
        entry = {m: round(float(np.mean([r[m] for r in subset])), 4) for m in metrics}
        entry["recall"] = round(
            sum(r["lesions_found"] for r in subset) / max(sum(r["lesions"] for r in subset), 1), 4
        )
        entry["precision"] = round(
            sum(r["components_on_lesion"] for r in subset)
            / max(sum(r["components"] for r in subset), 1),
            4,
        )
        entry["seen"], entry["n"] = subset[0]["seen"], len(subset)
        per_category[category] = entry
    groups = {}
    for name, seen in (("seen", True), ("unseen", False)):
        entries = [e for e in per_category.values() if e["seen"] == seen]
        if entries:
            groups[name] = {
                m: round(float(np.mean([e[m] for e in entries])), 4)
                for m in [*metrics, "recall", "precision"]
            }
    return {"per_category": per_category, "groups": groups}


def write_outputs(out: Path, rows: list[dict], summary: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    with open(out / "per_case.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| category | seen | n | DSC | NSD@2mm | recall | precision | control B (other category) | control C (location only) | baseline A (HU threshold) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for category, e in summary["per_category"].items():
        lines.append(
            f"| {category} | {'yes' if e['seen'] else 'no'} | {e['n']} | {e['dice_true']:.3f} | {e['nsd_true']:.3f} | {e['recall']:.2f} | {e['precision']:.2f} | {e['dice_control_B_other_category']:.3f} | {e['dice_control_C_location_only']:.3f} | {e['dice_baseline_A']:.3f} |"
        )
    for name, g in summary["groups"].items():
        lines.append(
            f"| **mean {name}** | | | **{g['dice_true']:.3f}** | {g['nsd_true']:.3f} | {g['recall']:.2f} | {g['precision']:.2f} | {g['dice_control_B_other_category']:.3f} | {g['dice_control_C_location_only']:.3f} | {g['dice_baseline_A']:.3f} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    bar_chart(summary, out / "dsc_per_category.png")


def bar_chart(summary: dict, path: Path) -> None:
    """Per-category DSC bars (true prompt vs baseline A), seen blue, unseen orange."""
    from PIL import Image, ImageDraw

    entries = list(summary["per_category"].items())
    width, height, left, bottom = 80 + 60 * len(entries), 380, 50, 120
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_h = height - bottom - 20
    for tick in range(0, 11, 2):
        y = height - bottom - plot_h * tick / 10
        draw.line([(left, y), (width - 10, y)], fill=(220, 220, 220))
        draw.text((8, y - 6), f"{tick / 10:.1f}", fill="black")
    for i, (category, e) in enumerate(entries):
        x = left + 10 + 60 * i
        for j, (value, colour) in enumerate(
            (
                (e["dice_true"], (40, 110, 200) if e["seen"] else (230, 130, 40)),
                (e["dice_baseline_A"], (160, 160, 160)),
            )
        ):
            top = height - bottom - plot_h * value
            draw.rectangle([x + 22 * j, top, x + 22 * j + 20, height - bottom], fill=colour)
        label = Image.new("RGB", (bottom - 5, 14), "white")
        ImageDraw.Draw(label).text((0, 0), category[:18], fill="black")
        image.paste(label.rotate(90, expand=True), (x + 12, height - bottom + 4))
    draw.text(
        (left, 4),
        "DSC per category: blue = seen, orange = unseen (zero-shot), grey = baseline A",
        fill="black",
    )
    image.save(path)


def _run(args: argparse.Namespace) -> int:
    from malenia.inference import Engine

    engine = Engine.load(args.weights, "auto")
    summary = evaluate(
        engine, args.out, args.categories, args.n_per_category, tuple(args.shape), args.threshold
    )
    print((args.out / "summary.md").read_text())
    print(json.dumps(summary["groups"], indent=1))
    return 0
