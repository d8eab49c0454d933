"""Lesions drawn into the abdominal organs of the real *training* scans: whole-scan cases
for calibrating how grounded answers read the prompt-free lesion map (``malenia calibrate
--organ-lesions``), and masses drawn into their skeletal muscle, described without a location
(``malenia calibrate --unlocated``). Each case is a 70-slice window of a training scan (2 mm
grid) with one attribute-driven lesion rendered as training renders them (``real_mix``: the
scan's own noise, a share of them subtle, liver cancers in every phase, blurred through the
scan's slice profile). No validation case is read (``real_ct.load_training_scans``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

# The abdominal training categories and the organs they are drawn in (lung answers have a
# threshold of their own, ``malenia calibrate --lung``).
ORGAN_CATEGORIES = ("liver cancer", "renal cell carcinoma", "pancreatic cyst")
WINDOW_SLICES = 70
MIN_LESION_VOXELS = 30  # a lesion clipped to a sliver by its organ's edge is drawn again


def drawn_organ_lesions(
    n: int, seed: int = 11, spacing=(2.0, 2.0, 2.0)
) -> Iterator[tuple[str, object, str, np.ndarray]]:
    """``n`` cases (name, CTVolume, category, lesion mask on the volume's grid), the
    categories in turn; the same ``seed`` gives the same cases."""
    from malenia.data.real_ct import load_training_scans
    from malenia.data.real_mix import (
        CATEGORY_LOCATIONS,
        draw_contrast,
        liver_cancer_phase,
        random_voxel,
    )
    from malenia.synth.anatomy import LOCATION_LABEL
    from malenia.synth.dataset import lesion_pool
    from malenia.synth.lesions import LesionRecord, render_lesions
    from malenia.synth.slice_profile import through_slices

    scans = load_training_scans(spacing)
    rng = np.random.default_rng(seed)
    made = attempts = 0
    while made < n:
        attempts += 1
        if attempts > 20 * n:
            raise RuntimeError(f"only {made} of {n} lesions could be drawn")
        category = ORGAN_CATEGORIES[made % len(ORGAN_CATEGORIES)]
        options = [
            (scan, location)
            for scan in scans
            for location in CATEGORY_LOCATIONS[category]
            if (scan.labels == LOCATION_LABEL[location]).sum() > 500
        ]
        scan, location = options[int(rng.integers(len(options)))]
        pool = lesion_pool(category)
        record = pool[int(rng.integers(len(pool)))]
        description = replace(record.description, location=location)
        if category == "liver cancer":
            description = liver_cancer_phase(description, rng)
        lesion = LesionRecord(
            category, description, record.report, record.size_mm, contrast=draw_contrast(rng)
        )
        centre = random_voxel(scan.labels == LOCATION_LABEL[location], rng)[0]
        z0, rows = _window_around(scan, centre)
        before = scan.hu[rows]
        hu, instances, rendered = render_lesions(
            before, scan.labels[rows], [lesion], rng, spacing, keep_scanner_noise=True
        )
        truth = instances == 1
        if not rendered or truth.sum() < MIN_LESION_VOXELS:
            continue
        hu = np.round(through_slices(before, hu, spacing[0], scan.slice_mm, rng))
        name = f"{scan.name} {category} {made}"
        yield name, scan.slab(hu, z0, name), category, truth
        made += 1


def _window_around(scan, centre_z: int) -> tuple[int, slice]:
    """(first slice, slices) of the ``WINDOW_SLICES``-slice window of ``scan`` around
    ``centre_z``, kept inside the scan."""
    z0 = int(np.clip(centre_z - WINDOW_SLICES // 2, 0, max(scan.hu.shape[0] - WINDOW_SLICES, 0)))
    return z0, slice(z0, z0 + WINDOW_SLICES)


def drawn_muscle_masses(
    n: int, seed: int = 13, spacing=(2.0, 2.0, 2.0)
) -> Iterator[tuple[str, object, object, np.ndarray]]:
    """``n`` cases (name, CTVolume, LesionDescription without a location, mass mask on the
    volume's grid): a mass rendered into the skeletal muscle of a training scan as training
    renders them (``real_mix``'s soft-tissue items: the scan's own noise, a share of them
    subtle, through the scan's slice profile), over a window of ``WINDOW_SLICES`` slices."""
    from malenia.data.real_ct import load_training_scans
    from malenia.data.real_mix import (
        SOFT_TISSUE_CATEGORY,
        SOFT_TISSUE_SIZE_MM,
        draw_contrast,
        hosts_a_mass,
        muscle_host_tissue,
        random_voxel,
        soft_tissue_description,
    )
    from malenia.synth.lesions import LesionRecord, RenderError, render_in_host
    from malenia.synth.slice_profile import through_slices

    scans = [s for s in load_training_scans(spacing) if hosts_a_mass(s)]
    if not scans:
        raise RuntimeError("no training scan has labelled skeletal muscle to draw a mass in")
    rng = np.random.default_rng(seed)
    made = attempts = 0
    while made < n:
        attempts += 1
        if attempts > 20 * n:
            raise RuntimeError(f"only {made} of {n} masses could be drawn")
        scan = scans[int(rng.integers(len(scans)))]
        centre = random_voxel(scan.muscle, rng)[0]
        z0, rows = _window_around(scan, centre)
        before = scan.hu[rows]
        tissue = muscle_host_tissue(before, scan.labels[rows], scan.muscle[rows])
        description = soft_tissue_description(rng)
        record = LesionRecord(SOFT_TISSUE_CATEGORY, description, "", SOFT_TISSUE_SIZE_MM,
                              contrast=draw_contrast(rng))  # fmt: skip
        try:
            hu, instances = render_in_host(before, tissue, scan.muscle[rows], record, rng,
                                           spacing, True)  # fmt: skip
        except RenderError:
            continue
        truth = instances > 0
        if truth.sum() < MIN_LESION_VOXELS:
            continue
        hu = np.round(through_slices(before, hu, spacing[0], scan.slice_mm, rng))
        name = f"{scan.name} muscle mass {made}"
        yield name, scan.slab(hu, z0, name), description, truth
        made += 1
