"""Draw the 128x128 module icon (a CT-like disc with a highlighted lesion outline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 128


def draw_icon() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    centre = (SIZE - 1) / 2
    body = ((x - centre) / 58) ** 2 + ((y - centre) / 46) ** 2 <= 1.0
    organ = ((x - 78) / 22) ** 2 + ((y - 62) / 17) ** 2 <= 1.0
    lesion_distance = np.hypot(x - 82, y - 60)
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[body] = (70, 70, 74, 255)
    rgba[organ & body] = (150, 150, 150, 255)
    rgba[lesion_distance <= 9] = (96, 96, 100, 255)
    ring = (lesion_distance > 9) & (lesion_distance <= 12)
    rgba[ring] = (240, 120, 40, 255)
    return Image.fromarray(rgba, mode="RGBA")


if __name__ == "__main__":
    target = (
        Path(__file__).resolve().parents[1]
        / "MaleniaSegment"
        / "Resources"
        / "Icons"
        / "MaleniaSegment.png"
    )
    draw_icon().save(target)
    print(f"wrote {target}")
