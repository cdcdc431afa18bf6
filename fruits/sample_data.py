"""Make the small deterministic image set in data_sample/ (no copied photos).

Synthetic "fruits" on a white background, laid out like Fruits-360
(<split>/<class>/<n>_100.jpg), one class without the version suffix of older
releases. Run `python -m fruits.sample_data data_sample` to rebuild it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 100
SPLITS = {"Training": 8, "Test": 4}
# class folder -> (fill RGB, (width, height) as multiples of a random radius, blobs)
CLASSES = {
    "Synthetic Apple 1": ((200, 30, 40), (1.0, 1.0), 1),
    "Synthetic Banana 1": ((235, 205, 60), (1.3, 0.45), 1),
    "Synthetic Grape": ((110, 40, 120), (0.3, 0.3), 7),
}


def draw_fruit(
    rng: np.random.Generator, color: tuple[int, int, int], shape: tuple[float, float], blobs: int
) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "white")
    pen = ImageDraw.Draw(image)
    fill = tuple(int(c) for c in np.clip(np.array(color) + rng.integers(-25, 26, 3), 0, 255))
    radius = rng.uniform(28, 38)
    half_w, half_h = radius * shape[0], radius * shape[1]
    for _ in range(blobs):
        cx, cy = rng.uniform(40, 60, 2)
        pen.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=fill)
    return image.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, fillcolor="white")


def make_sample(root: Path, seed: int = 360) -> list[Path]:
    rng = np.random.default_rng(seed)
    written = []
    for split, count in SPLITS.items():
        for name, (color, shape, blobs) in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                path = folder / f"{i}_100.jpg"
                draw_fruit(rng, color, shape, blobs).save(path, quality=90)
                written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data_sample")
    print(f"wrote {len(make_sample(target))} images under {target}")
