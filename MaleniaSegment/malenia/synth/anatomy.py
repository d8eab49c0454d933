"""Label ids, tissue Hounsfield units, and which label hosts each canonical location.

Array axes are [z, y, x] with x towards the patient's left, y posterior, z superior (LPS),
so "right kidney" lies at small x.
"""

from __future__ import annotations

import numpy as np

LABELS: dict[str, int] = {
    "air": 0, "body": 1, "subcutaneous fat": 2, "muscle": 3, "vertebra": 4, "rib": 5,
    "aorta": 6, "ivc": 7, "right liver lobe": 8, "left liver lobe": 9, "right kidney": 10,
    "left kidney": 11, "pancreatic head": 12, "pancreatic body": 13, "pancreatic tail": 14,
    "spleen": 15, "stomach": 16, "gallbladder": 17, "ascending colon": 18,
    "transverse colon": 19, "descending colon": 20, "sigmoid colon": 21, "rectum": 22,
    "right adrenal gland": 23, "left adrenal gland": 24, "urinary bladder": 25,
    "heart": 26, "right upper lobe": 27, "right middle lobe": 28, "right lower lobe": 29,
    "left upper lobe": 30, "left lower lobe": 31, "colon lumen": 32, "stomach lumen": 33,
    "pancreatic duct": 34, "renal sinus": 35, "bowel gas": 36, "spinal canal": 37,
}  # fmt: skip
LABEL_NAMES: dict[int, str] = {v: k for k, v in LABELS.items()}

# Canonical location -> label id of the host sub-region (identical names on purpose).
LOCATION_LABEL: dict[str, int] = {
    name: LABELS[name]
    for name in (
        "right liver lobe", "left liver lobe", "right kidney", "left kidney", "pancreatic head",
        "pancreatic body", "pancreatic tail", "spleen", "gallbladder", "ascending colon",
        "transverse colon", "descending colon", "sigmoid colon", "rectum", "right adrenal gland",
        "left adrenal gland", "urinary bladder", "right upper lobe", "right middle lobe",
        "right lower lobe", "left upper lobe", "left lower lobe", "stomach",
    )
}  # fmt: skip
CHEST_LOCATIONS = {
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "left lower lobe",
}

# Mean HU per label in (portal venous, non-contrast) phase.
TISSUE_HU: dict[str, tuple[float, float]] = {
    "air": (-1000, -1000), "body": (30, 30), "subcutaneous fat": (-100, -100),
    "muscle": (55, 48), "vertebra": (450, 450), "rib": (400, 400), "aorta": (170, 42),
    "ivc": (150, 40), "right liver lobe": (110, 58), "left liver lobe": (110, 58),
    "right kidney": (175, 33), "left kidney": (175, 33), "pancreatic head": (100, 42),
    "pancreatic body": (100, 42), "pancreatic tail": (100, 42), "spleen": (120, 48),
    "stomach": (85, 40), "gallbladder": (8, 8), "ascending colon": (85, 40),
    "transverse colon": (85, 40), "descending colon": (85, 40), "sigmoid colon": (85, 40),
    "rectum": (85, 40), "right adrenal gland": (65, 30), "left adrenal gland": (65, 30),
    "urinary bladder": (6, 6), "heart": (140, 42), "right upper lobe": (-860, -860),
    "right middle lobe": (-860, -860), "right lower lobe": (-860, -860),
    "left upper lobe": (-860, -860), "left lower lobe": (-860, -860),
    "colon lumen": (-700, -700), "stomach lumen": (10, 10), "pancreatic duct": (10, 10),
    "renal sinus": (-80, -80), "bowel gas": (-950, -950), "spinal canal": (15, 15),
}  # fmt: skip
PHASES = ("portal_venous", "non_contrast")

# Spaces a radiologist counts as part of the organ that encloses them ("a mass in the sigmoid
# colon" may fill its lumen); the label map keeps them apart for rendering.
INNER_LABELS: dict[str, tuple[int, ...]] = {
    **{
        name: (LABELS["colon lumen"], LABELS["bowel gas"])
        for name in ("ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum")
    },
    "stomach": (LABELS["stomach lumen"],),
    **{name: (LABELS["pancreatic duct"],) for name in ("pancreatic head", "pancreatic body", "pancreatic tail")},
    "right kidney": (LABELS["renal sinus"],),
    "left kidney": (LABELS["renal sinus"],),
}  # fmt: skip
INNER_REACH_VOX = 3  # how far from the organ's own voxels its inner spaces are claimed


def organ_mask(labels: np.ndarray, location: str) -> np.ndarray:
    """Voxels of the organ a canonical location names, with its lumen/duct/sinus (the target
    of the location head)."""
    from scipy import ndimage

    own = labels == LOCATION_LABEL[location]
    inner = INNER_LABELS.get(location)
    if not inner or not own.any():
        return own
    near = ndimage.binary_dilation(own, iterations=INNER_REACH_VOX)
    return own | (near & np.isin(labels, inner))
