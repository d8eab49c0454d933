"""How sharp edges are along z against in-plane, on the training scans only.

A 5 mm scan resampled to the 2 mm grid has soft z edges everywhere; a lesion drawn on the grid
does not, unless passed through the scan's slice profile (``malenia.synth.slice_profile``).
Prints, per training scan, the z / in-plane edge ratio at the boundary of the liver, of the
real tumours, and of liver cancers rendered without and with the profile.

    python scripts/measure_slice_edges.py [--renders 12]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from malenia.attributes.presets import load_presets
from malenia.data.real_ct import load_training_scans
from malenia.data.real_mix import crop_window, random_voxel
from malenia.synth.anatomy import LOCATION_LABEL
from malenia.synth.lesions import LesionRecord, render_lesions
from malenia.synth.slice_profile import through_slices
from scipy import ndimage


def edge_ratio(hu: np.ndarray, mask: np.ndarray) -> float:
    """Edge strength along z over edge strength in the plane, each per unit of the outline's
    normal along those axes, on the mask's boundary shell (HU smoothed by one voxel first, so
    noise weighs less): about 1 where an edge is as sharp along z as in the plane, whatever
    way the outline faces; below 1 where z is blurred."""
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), 1.0)
    shell = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
    hu_grad = [g[shell] for g in np.gradient(smooth)]
    normal = [g[shell] for g in np.gradient(ndimage.gaussian_filter(mask.astype(np.float32), 1.0))]
    length = np.sqrt(sum(n**2 for n in normal)) + 1e-6
    normal = [np.abs(n) / length for n in normal]
    along_z = (np.abs(hu_grad[0]) * normal[0]).sum() / (normal[0] ** 2).sum()
    in_plane = sum((np.abs(g) * n).sum() for g, n in zip(hu_grad[1:], normal[1:], strict=True))
    in_plane /= sum((n**2).sum() for n in normal[1:])
    return float(along_z / in_plane)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=12, help="liver cancers per scan")
    args = parser.parse_args()
    spacing = (2.0, 2.0, 2.0)
    preset = load_presets()["liver cancer"]
    lobes = {LOCATION_LABEL[name]: name for name in ("right liver lobe", "left liver lobe")}
    print("scan | slice mm | liver outline | real tumours | rendered | rendered + profile")
    for scan in load_training_scans(spacing):
        liver = np.isin(scan.labels, list(lobes))
        tumours = [edge_ratio(scan.hu, scan.instances == i) for i in range(1, scan.instances.max() + 1)]  # fmt: skip
        rng = np.random.default_rng(5)
        plain, profiled = [], []
        while len(plain) < args.renders:
            centre = random_voxel(liver, rng)
            start = [int(np.clip(c - 32, 0, max(n - 64, 0))) for c, n in zip(centre, scan.hu.shape, strict=True)]  # fmt: skip
            window = crop_window(scan.hu, start, (64, 64, 64))
            labels = crop_window(scan.labels, start, (64, 64, 64), mode="constant")
            lobe = lobes[int(scan.labels[tuple(centre)])]
            description = replace(preset.description, location=lobe)
            record = LesionRecord("liver cancer", description, "", preset.size_mm)
            drawn, instances, rendered = render_lesions(window, labels, [record], rng, spacing, keep_scanner_noise=True)  # fmt: skip
            if not rendered:
                continue
            plain.append(edge_ratio(drawn, instances == 1))
            blurred = through_slices(window, drawn, spacing[0], scan.slice_mm, rng)
            profiled.append(edge_ratio(blurred, instances == 1))
        tumour_text = ", ".join(f"{t:.2f}" for t in tumours) or "-"
        print(f"{scan.name} | {scan.slice_mm:.1f} | {edge_ratio(scan.hu, liver):.2f} | {tumour_text} | "
              f"{np.median(plain):.2f} ({min(plain):.2f}-{max(plain):.2f}) | "
              f"{np.median(profiled):.2f} ({min(profiled):.2f}-{max(profiled):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
