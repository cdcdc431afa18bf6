"""Image bytes -> model input, with no Spark: the pipeline's workers and
`fruits predict` decode alike."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SIZE = (224, 224)  # the default and the reference
EMPTY_FILE = "empty file"  # the error of a file with no bytes, wherever it is caught
# The raster formats a .jpg/.jpeg/.png file may really hold (JPEG also opens
# phones' multi-picture MPO files): anything else, such as EPS, which Pillow would
# hand to Ghostscript, is no image here.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def decode(content: bytes, side: int = IMAGE_SIZE[0]) -> np.ndarray:
    """Bytes -> upright RGB uint8 array of side x side pixels (bilinear resize).

    Raises on anything that is not a readable image, including images whose
    declared size is big enough to be a decompression bomb.
    """
    try:
        image = Image.open(io.BytesIO(content), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, over twice MAX_IMAGE_PIXELS
        raise ValueError(f"image too large: {str(exc).rstrip('.')} (decompression bomb guard)") from exc
    with image:
        if image.width * image.height > Image.MAX_IMAGE_PIXELS:
            raise ValueError(f"image too large: {image.width}x{image.height} pixels (decompression bomb guard)")
        upright = ImageOps.exif_transpose(image)
        if upright.mode.startswith("I"):  # 16-bit grayscale PNG: convert("RGB") would clip it at 255
            upright = Image.fromarray((np.asarray(upright) // 257).astype(np.uint8))
        return np.asarray(upright.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.uint8)


def preprocess(batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1], as keras' mobilenet_v2.preprocess_input
    (into ``out`` when given, to reuse a buffer)."""
    out = np.divide(batch, np.float32(127.5), out=out, dtype=np.float32)
    return np.subtract(out, np.float32(1.0), out=out)


def describe_error(content: bytes, exc: Exception) -> str:
    """A short, stable message for an image that could not be decoded."""
    if not content:
        return EMPTY_FILE
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognized image format"
    return f"{type(exc).__name__}: {exc}"
