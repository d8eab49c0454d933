"""Insert synthetic lesions into a real CT that has a TotalSegmentator organ label map.

TotalSegmentator ("total" task, v2 ids) labels whole organs; our locations are sub-regions,
so the liver is split into lobes and the pancreas into head/body/tail along the patient's
left-right axis (physical LPS x), which is how radiologists name them.
"""

from __future__ import annotations

import numpy as np

from malenia.synth.anatomy import LABELS

TOTALSEG_TO_LOCATION: dict[int, str] = {
    1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder", 6: "stomach",
    8: "right adrenal gland", 9: "left adrenal gland", 10: "left upper lobe", 11: "left lower lobe",
    12: "right upper lobe", 13: "right middle lobe", 14: "right lower lobe", 21: "urinary bladder",
}  # fmt: skip
TOTALSEG_LIVER, TOTALSEG_PANCREAS = 5, 7


def _lps_x(image, shape) -> np.ndarray:
    """Physical LPS x (mm, + = patient left) of every voxel column, broadcastable to [z,y,x]."""
    k, j, i = (np.arange(n) for n in shape)
    direction = np.reshape(image.GetDirection(), (3, 3))
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    row = direction[0] * spacing
    return (
        origin[0]
        + row[0] * i[None, None, :]
        + row[1] * j[None, :, None]
        + row[2] * k[:, None, None]
    )


def labels_from_totalseg(segmentation: np.ndarray, image) -> np.ndarray:
    """Convert a TotalSegmentator label array ([z,y,x], geometry of ``image``) to our ids."""
    labels = np.zeros(segmentation.shape, np.uint8)
    for source, location in TOTALSEG_TO_LOCATION.items():
        labels[segmentation == source] = LABELS[location]
    x = np.broadcast_to(_lps_x(image, segmentation.shape), segmentation.shape)
    liver = segmentation == TOTALSEG_LIVER
    if liver.any():
        low, high = np.percentile(x[liver], [2, 98])
        split = low + 0.62 * (high - low)  # falciform ligament: the left lobe is the smaller part
        labels[liver & (x <= split)] = LABELS["right liver lobe"]
        labels[liver & (x > split)] = LABELS["left liver lobe"]
    pancreas = segmentation == TOTALSEG_PANCREAS
    if pancreas.any():
        low, high = np.percentile(x[pancreas], [1, 99])
        thirds = low + (high - low) * np.array([1 / 3, 2 / 3])
        labels[pancreas & (x <= thirds[0])] = LABELS["pancreatic head"]
        labels[pancreas & (x > thirds[0]) & (x <= thirds[1])] = LABELS["pancreatic body"]
        labels[pancreas & (x > thirds[1])] = LABELS["pancreatic tail"]
    # Everything else labelled by TotalSegmentator is "some other organ" for relation logic.
    other = (segmentation > 0) & (labels == 0)
    labels[other] = LABELS["aorta"]
    return labels
