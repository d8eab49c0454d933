"""Display colours of lesion categories, shared by the engine's files and the Slicer module
(no heavy imports: MaleniaSegmentLib uses it inside Slicer)."""

from __future__ import annotations

# RGB 0-255: cysts blue-ish, carcinomas red/orange, the rest distinct.
CATEGORY_COLORS: dict[str, tuple[int, int, int]] = {
    "renal cell carcinoma": (216, 72, 60), "renal cyst": (92, 160, 230), "liver cancer": (230, 120, 40),
    "pancreatic cancer": (200, 50, 120), "pancreatic cyst": (60, 200, 200), "colon cancer": (170, 80, 40),
    "lung cancer": (240, 200, 40), "hepatic cyst": (120, 120, 250), "hepatic hemangioma": (150, 220, 90),
    "liver metastasis": (160, 80, 200), "adrenal adenoma": (240, 150, 180),
    "renal angiomyolipoma": (250, 230, 140), "splenic cyst": (100, 190, 250),
}  # fmt: skip
DEFAULT_COLOR: tuple[int, int, int] = (230, 160, 60)


def lesion_color(category: str | None) -> tuple[int, int, int]:
    """RGB 0-255 of a category (unknown categories get the default lesion colour)."""
    return CATEGORY_COLORS.get((category or "").lower(), DEFAULT_COLOR)
