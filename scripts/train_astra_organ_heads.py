"""Train the Astra organ head (``Resources/Weights/astra-organ-heads.safetensors``).

A standardised MLP (1536 -> 64 -> one logit per canonical location) on frozen layer2 + layer3
features of the Astra encoder (``malenia.astra``), trained on the 6 mm feature grid of the
training scans of the real-CT split (``malenia.data.real_ct``), never on a validation case:

- RadCTTACEomics_0697 and _2022: manual livers (split into lobes as the location head's
  labels are) and lungs from HU and connectivity (``lung_lobe_labels``);
- the TotalSegmentator example CT: its organ labels (model-made), every location it has.

A location is a target only in the scans whose labels are complete for it (the rest of the
loss is masked). Reported, never used for any choice: liver Dice on the held-out
RadCTTACEomics_1720 and lungs (from HU) on pyradiomics lung2, on the engine's 2 mm grid.

    pip install -e ".[astra]"
    OMP_NUM_THREADS=1 python scripts/train_astra_organ_heads.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from malenia.astra.encoder import ASTRA_SHA256, CHANNELS_L2, CHANNELS_L3, load_encoder
from malenia.astra.organ_maps import HEADS_NAME, EncoderFeatures, OrganMapper, default_heads_path
from malenia.attributes.vocabulary import load_vocabulary
from malenia.data.real_ct import (
    HCC_TRAIN,
    LUNG_LOBES,
    RealScan,
    load_hcc,
    load_totalseg_example,
    lung_lobe_labels,
    require_real_ct_root,
)
from malenia.evaluation.metrics import dice
from malenia.preprocessing import canonical_orientation, to_model_grid
from malenia.synth.anatomy import LABELS
from malenia.weights import sha256_of
from torch import nn

HIDDEN, STEPS, BATCH, SEED = 64, 1500, 4096, 0
POINTS_PER_SCAN = 60000
MODEL_SPACING = (2.0, 2.0, 2.0)


def original_ct(name: str, root: Path) -> sitk.Image:
    if name == "totalseg_example":
        path = root / "totalseg_example" / "example_ct.nii.gz"
    else:
        path = root / "hcc_liver" / name / "ct.nii.gz"
    return canonical_orientation(sitk.ReadImage(str(path), sitk.sitkFloat32))


def labels_on(scan: RealScan, ct: sitk.Image, geometry: sitk.Image) -> np.ndarray:
    """The scan's labels (model grid) on the feature grid, nearest neighbour."""
    image = sitk.GetImageFromArray(scan.labels)
    image.SetOrigin(tuple(reversed(scan.origin_zyx)))
    image.SetSpacing(tuple(reversed(scan.spacing_zyx)))
    image.SetDirection(ct.GetDirection())
    resampled = sitk.Resample(image, geometry, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def raw_features(features: EncoderFeatures, chunk: int = 128) -> np.ndarray:
    """[C, z, y, x] (LPS) every channel on the feature grid, a chunk of channels at a time."""
    total = CHANNELS_L2 + CHANNELS_L3
    out = []
    for start in range(0, total, chunk):
        rows = torch.eye(total)[start : start + chunk]
        with torch.inference_mode():
            maps = features.upsampled(rows[:, :CHANNELS_L2], rows[:, CHANNELS_L2:])
        out.append(features.to_lps(maps).astype(np.float16))
    return np.concatenate(out)


def complete_locations(name: str, scan: RealScan) -> set[str]:
    """The locations whose labels are complete in this scan (the HCC lungs: from HU)."""
    return set(scan.known_locations) | (set(LUNG_LOBES) if name in HCC_TRAIN else set())


def training_points(name, scan, encoder, root, locations, rng):
    """(features [N, C], targets [N, K], known [K]) of one training scan."""
    ct = original_ct(name, root)
    started = time.perf_counter()
    features = EncoderFeatures.of(encoder, ct, ct)
    print(f"{name}: encoder forward {time.perf_counter() - started:.1f} s", flush=True)
    geometry = features.lps_image()
    labels = labels_on(scan, ct, geometry)
    hu = sitk.GetArrayFromImage(
        sitk.Resample(ct, geometry, sitk.Transform(), sitk.sitkLinear, -1024.0)
    )
    known = complete_locations(name, scan)
    body = np.flatnonzero(hu.ravel() > -500)
    outside = np.flatnonzero(hu.ravel() <= -500)
    n_body = min(len(body), int(POINTS_PER_SCAN * 0.85))
    picks = np.concatenate([rng.choice(body, n_body, replace=False),
                            rng.choice(outside, min(len(outside), POINTS_PER_SCAN - n_body), replace=False)])  # fmt: skip
    feats = raw_features(features).reshape(CHANNELS_L2 + CHANNELS_L3, -1)[:, picks].T
    flat = labels.ravel()[picks]
    targets = np.stack([flat == LABELS[loc] for loc in locations], 1).astype(np.float32)
    mask = np.array([loc in known for loc in locations], np.float32)
    return (
        torch.from_numpy(feats.astype(np.float32)),
        torch.from_numpy(targets),
        torch.from_numpy(mask),
    )


def train(x: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    net = nn.Sequential(nn.Linear(x.shape[1], HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, y.shape[1]))
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(SEED)
    for step in range(STEPS):
        idx = torch.randint(0, len(xs), (BATCH,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(net(xs[idx]), y[idx], weight=known[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 300 == 0 or step == STEPS - 1:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    return {"mean": mean, "std": std, "w1": net[0].weight.detach(), "b1": net[0].bias.detach(),
            "w2": net[2].weight.detach(), "b2": net[2].bias.detach()}  # fmt: skip


def validate(mapper: OrganMapper, root: Path) -> list[dict]:
    """Organ Dice on validation scans (never trained on) at the engine's 2 mm grid."""
    results = []
    hcc = load_hcc("RadCTTACEomics_1720", MODEL_SPACING, root)
    ct = original_ct("RadCTTACEomics_1720", root)
    maps = mapper.maps(ct, to_model_grid_image(ct))
    liver = np.isin(hcc.labels, [LABELS["right liver lobe"], LABELS["left liver lobe"]])
    pred = (
        np.maximum(maps.probability("right liver lobe"), maps.probability("left liver lobe")) > 0.5
    )
    results.append(
        {"case": "RadCTTACEomics_1720", "organ": "liver", "dice": round(dice(pred, liver), 4)}
    )
    lung2_path = root / "pyradiomics_lung" / "lung2_image.nrrd"
    lung2 = canonical_orientation(sitk.ReadImage(str(lung2_path), sitk.sitkFloat32))
    grid = to_model_grid_image(lung2)
    hu = sitk.GetArrayFromImage(grid)
    lungs = lung_lobe_labels(hu, MODEL_SPACING, tuple(reversed(grid.GetOrigin()))) > 0
    maps = mapper.maps(lung2, grid)
    pred = np.maximum.reduce([maps.probability(lobe) for lobe in LUNG_LOBES]) > 0.5
    results.append(
        {"case": "lung2", "organ": "lungs (from HU)", "dice": round(dice(pred, lungs), 4)}
    )
    for row in results:
        print(f"validation: {row['organ']} on {row['case']}: Dice {row['dice']}", flush=True)
    return results


def to_model_grid_image(ct: sitk.Image) -> sitk.Image:
    from malenia.io import CTVolume

    return to_model_grid(CTVolume.from_sitk(ct), MODEL_SPACING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=default_heads_path())
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = require_real_ct_root()
    encoder = load_encoder()
    rng = np.random.default_rng(SEED)
    scans = {name: load_hcc(name, MODEL_SPACING, root) for name in HCC_TRAIN}
    scans["totalseg_example"] = load_totalseg_example(MODEL_SPACING, root)
    # Only locations some scan labels completely get an output (no colon here): the engine
    # asks the location head for the others.
    labelled = set().union(*(complete_locations(n, s) for n, s in scans.items()))
    locations = tuple(v for v in load_vocabulary().values("location") if v in labelled)
    parts = [training_points(n, s, encoder, root, locations, rng) for n, s in scans.items()]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    known = torch.cat([p[2].expand(len(p[0]), -1) for p in parts])
    head = train(x, y, known)
    card = {
        "name": HEADS_NAME,
        "locations": list(locations),
        "architecture": f"standardised MLP {CHANNELS_L2 + CHANNELS_L3} -> {HIDDEN} -> {len(locations)} "
        "on Astra layer2 + layer3 features, 6 mm feature grid",
        "encoder_sha256": ASTRA_SHA256,
        "training": {
            "scans": list(scans),
            "points_per_scan": POINTS_PER_SCAN,
            "steps": STEPS,
            "batch": BATCH,
            "seed": SEED,
            "optimiser": "AdamW lr 2e-3 wd 1e-2",
            "targets": "a location only in scans whose labels are complete for it; lungs "
            "of the HCC scans from HU (lung_lobe_labels)",
        },  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in head.items()}, str(args.out))
    card["sha256"] = sha256_of(args.out)
    card["validation"] = validate(OrganMapper(encoder, head, card), root)
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
