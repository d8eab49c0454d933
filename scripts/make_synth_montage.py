"""PNG montage per lesion category (axial + coronal through the lesion, without and with the
mask outline) so a person can judge the synthetic world at a glance.

    python scripts/make_synth_montage.py   # writes docs/synth/<category>.png and docs/synth/all.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from malenia.attributes.presets import load_presets
from malenia.synth.dataset import make_sample
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "docs" / "synth"


def outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    for axis in (0, 1):
        for shift in (1, -1):
            inner &= np.roll(mask, shift, axis)
    return mask & ~inner


def tile(image: np.ndarray, mask: np.ndarray, window) -> tuple[Image.Image, Image.Image]:
    grey = np.clip((image - window[0]) / (window[1] - window[0]) * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1)
    marked = rgb.copy()
    marked[outline(mask)] = (255, 80, 0)
    return Image.fromarray(rgb).resize((192, 192)), Image.fromarray(marked).resize((192, 192))


def category_strip(category: str, seed: int) -> Image.Image:
    sample = make_sample(seed, (category,), (64, 128, 128), (2.0, 1.5, 1.5), max_lesions=1)
    lesion = sample.lesions[0]
    mask = sample.instance_mask == 1
    z, y, _ = np.argwhere(mask).mean(0).astype(int)
    window = (-1000, 400) if sample.ct[mask].mean() < -300 or "lung" in category else (-160, 240)
    axial = tile(sample.ct[z], mask[z], window)
    coronal = tile(sample.ct[::-1, y], mask[::-1, y], window)
    strip = Image.new("RGB", (4 * 192, 192 + 16), "black")
    for i, image in enumerate((*axial, *coronal)):
        strip.paste(image, (192 * i, 16))
    d = lesion.description
    ImageDraw.Draw(strip).text(
        (4, 2),
        f"{category}: {d.location}, {d.shape}, {d.density}, {d.density_variation}, {d.surface}",
        fill="white",
    )
    return strip


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    strips = []
    for index, category in enumerate(load_presets()):
        strip = category_strip(category, 100 + index)
        strip.save(OUT / f"{category.replace(' ', '_')}.png")
        strips.append(strip)
    sheet = Image.new("RGB", (strips[0].width, sum(s.height for s in strips)), "black")
    for i, strip in enumerate(strips):
        sheet.paste(strip, (0, i * strips[0].height))
    sheet.save(OUT / "all.png")
    print(f"wrote {len(strips)} montages to {OUT}")


if __name__ == "__main__":
    main()
