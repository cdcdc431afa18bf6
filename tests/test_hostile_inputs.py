"""Hostile inputs mixed with good images, through one real `fruits run`.

The corpus is generated here (Pillow, numpy, hand-built PNG chunks), never
committed: broken files, unusual Pillow modes, an EXIF-rotated photo, a
decompression bomb, unicode class folders and files that are not images.
Every file gets exactly one expected outcome: a 1280-d feature, a specific
error, or no row at all.
"""

from __future__ import annotations

import io
import re
import struct
import time
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fruits.decoding import decode
from fruits.features import FEATURE_DIM
from tests.test_pipeline import features_of, main_run, manifest_of

POMME = "Pomme Golden \u00e9"  # NFC: one code point for é
RINGO = "\u308a\u3093\u3054"  # りんご
YABALKA = "\u042f\u0431\u044a\u043b\u043a\u0430"  # Ябълка (Cyrillic, Bulgarian)
UNICODE_CLASSES = (POMME, RINGO, YABALKA)
GOOD_PER_CLASS = 3
RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_VIEW = 6  # EXIF orientation 6: stored turned 90° counter-clockwise
BOMB_SIDE = 20_000
EMPTY = r"empty file"
NOT_AN_IMAGE = r"not a recognized image format"
TRUNCATED = r"OSError: image file is truncated \(\d+ bytes not processed\)"
BOMB = (
    rf"ValueError: image too large: Image size \({BOMB_SIDE * BOMB_SIDE} pixels\) exceeds limit "
    r"of \d+ pixels, could be decompression bomb DOS attack \(decompression bomb guard\)"
)


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def picture(seed: int, width: int = 96, height: int = 80) -> Image.Image:
    """A distinct RGB picture per seed: a coloured disc on a gradient."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    gradient = np.stack([columns * 255 // width, rows * 255 // height, (rows + columns) * 255 // (width + height)], -1)
    pixels = (gradient + rng.integers(0, 256, 3)) % 256
    center_row, center_column = rng.integers(height // 4, 3 * height // 4), rng.integers(width // 4, 3 * width // 4)
    disc = (rows - center_row) ** 2 + (columns - center_column) ** 2 < (height // 4) ** 2
    pixels[disc] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels.astype(np.uint8))


def good_jpeg(seed: int) -> Callable[[], bytes]:
    return lambda: encode(picture(seed), "JPEG", quality=90)


def noisy_jpeg() -> bytes:
    """Noise, so that half of the file still holds most of the header and scans."""
    pixels = np.random.default_rng(7).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    whole = noisy_jpeg()
    return whole[: len(whole) // 2]


def random_bytes() -> bytes:
    return np.random.default_rng(11).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def rgba_png() -> bytes:
    """Transparent outside a centred disc."""
    image = picture(20).convert("RGBA")
    rows, columns = np.mgrid[0:80, 0:96]
    alpha = np.where((rows - 40) ** 2 + (columns - 48) ** 2 < 30**2, 255, 0).astype(np.uint8)
    image.putalpha(Image.fromarray(alpha))
    return encode(image, "PNG")


def gray8_pixels() -> np.ndarray:
    return np.asarray(picture(21).convert("L"))


def gray8_png() -> bytes:
    return encode(Image.fromarray(gray8_pixels()), "PNG")


def gray16_png() -> bytes:
    """The 8-bit gray picture scaled exactly to 16 bit (v * 257): mode I;16."""
    image = Image.fromarray(gray8_pixels().astype(np.uint16) * 257)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def palette_png() -> bytes:
    return encode(picture(22).quantize(colors=16), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(picture(23).convert("CMYK"), "JPEG", quality=90)


def one_pixel_png() -> bytes:
    return encode(Image.new("RGB", (1, 1), (200, 30, 40)), "PNG")


def red_left_blue_right() -> Image.Image:
    """Upright: left half red, right half blue; the edge falls on 16-pixel JPEG blocks."""
    pixels = np.zeros((160, 224, 3), dtype=np.uint8)
    pixels[:, :112] = RED
    pixels[:, 112:] = BLUE
    return Image.fromarray(pixels)


def exif_rotated_jpeg() -> bytes:
    """Stored turned 90° counter-clockwise (red at the bottom) with EXIF orientation 6:
    only a viewer that applies the tag shows red left and blue right."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_VIEW
    stored = red_left_blue_right().transpose(Image.Transpose.ROTATE_90)
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def upright_jpeg() -> bytes:
    return encode(red_left_blue_right(), "JPEG", quality=95)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A real 20000x20000 1-bit black PNG (all its rows, deflated): ~50 KB on disk,
    400 million pixels (1.2 GB as RGB) once decoded."""
    row = bytes(1 + BOMB_SIDE // 8)  # filter byte 0, then 2500 bytes of black pixels
    deflate = zlib.compressobj(9)
    rows = b"".join(deflate.compress(row) for _ in range(BOMB_SIDE)) + deflate.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


@dataclass(frozen=True)
class Case:
    kind: str
    path: str  # relative to the corpus root
    content: Callable[[], bytes]
    error: str | None = None  # None: a feature is expected; else a regex for the whole error


UNICODE_CLASS_JPEGS = [
    Case(f"good jpeg, class {name!r} #{i}", f"Training/{name}/{i}.jpg", good_jpeg(10 * c + i))
    for c, name in enumerate(UNICODE_CLASSES)
    for i in range(GOOD_PER_CLASS)
]
NESTED = Case("good jpeg, nested Training/Kiwi/extra/deeper", "Training/Kiwi/extra/deeper/k.jpg", good_jpeg(40))
EXIF_ROTATED = Case("jpeg with EXIF orientation 6", "Test/Orientation/exif6.jpg", exif_rotated_jpeg)
UPRIGHT_TWIN = Case("same picture upright, no EXIF", "Test/Orientation/upright.jpg", upright_jpeg)
GRAY8 = Case("grayscale png (L)", "Test/Modes/gray8.png", gray8_png)
GRAY16 = Case("16-bit grayscale png (I;16)", "Test/Modes/gray16.png", gray16_png)
EMPTY_CASE = Case("0-byte .jpg", "Test/Broken/empty.jpg", lambda: b"", EMPTY)
BOMB_CASE = Case("decompression bomb png 20000x20000", "Test/Broken/bomb.png", bomb_png, BOMB)
CASES = [
    *UNICODE_CLASS_JPEGS,
    NESTED,
    Case("png with alpha (RGBA)", "Test/Modes/rgba.png", rgba_png),
    GRAY8,
    Case("palette png (P)", "Test/Modes/palette.png", palette_png),
    Case("CMYK jpeg, .JPEG extension", "Test/Modes/cmyk.JPEG", cmyk_jpeg),
    GRAY16,
    Case("1x1 png", "Test/Modes/one_pixel.png", one_pixel_png),
    EXIF_ROTATED,
    UPRIGHT_TWIN,
    Case("jpeg cut in half", "Test/Broken/truncated.jpg", truncated_jpeg, TRUNCATED),
    Case("random bytes named .jpg", "Test/Broken/random.jpg", random_bytes, NOT_AN_IMAGE),
    EMPTY_CASE,
    Case("text file named .png", "Test/Broken/text.png", lambda: b"fruit list: apple, pear\n", NOT_AN_IMAGE),
    BOMB_CASE,
]
GOOD_COUNT = sum(case.error is None for case in CASES)
FAILED_COUNT = len(CASES) - GOOD_COUNT
IGNORED = {  # not .jpg/.jpeg/.png: never read, no row, not counted
    "notes.txt": f"Training/{POMME}/notes.txt",
    ".DS_Store": "Test/Broken/.DS_Store",
    "README (no extension)": f"Training/{RINGO}/README",
}


@dataclass(frozen=True)
class HostileRun:
    corpus: Path
    out: Path
    rows: dict
    manifest: dict

    def row(self, case: Case):
        """The file's row in features/, None if it has none."""
        return self.rows.get(str(self.corpus / case.path))


def outcome_table(run: HostileRun) -> str:
    """Markdown: kind | file | outcome | error, one line per generated file."""
    lines = ["| kind | file | outcome | error |", "|---|---|---|---|"]
    for case in CASES:
        row = run.row(case)
        if row is None:
            outcome, error = "NO ROW, yet counted in input_files", ""
        else:
            outcome = f"features {len(row['features'])}-d" if row["features"] is not None else "error row"
            error = row["error"] or ""
        lines.append(f"| {case.kind} | `{case.path}` | {outcome} | {error} |")
    lines += [f"| {kind} | `{path}` | ignored (no row, not counted) | |" for kind, path in IGNORED.items()]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def hostile_run(spark, weights, tmp_path_factory) -> HostileRun:
    corpus = tmp_path_factory.mktemp("hostile") / "corpus"
    for case in CASES:
        (corpus / case.path).parent.mkdir(parents=True, exist_ok=True)
        (corpus / case.path).write_bytes(case.content())
    (corpus / IGNORED["notes.txt"]).write_text("bought on Tuesday\n")
    (corpus / IGNORED[".DS_Store"]).write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (corpus / IGNORED["README (no extension)"]).write_text("apples from the market\n")
    out = corpus.parent / "out"
    started = time.perf_counter()
    assert main_run("run", "--input", corpus, "--output", out, "--weights", weights) == 0
    run = HostileRun(corpus, out, features_of(spark, out), manifest_of(out))
    print(f"\nfruits run on {len(CASES)} hostile/good files: {time.perf_counter() - started:.1f} s")
    print(outcome_table(run))
    return run


def test_manifest_counts_image_files_only_and_each_row_is_featurized_or_failed(hostile_run):
    manifest = hostile_run.manifest
    assert manifest["input_files"] == len(CASES)
    assert manifest["featurized"] == GOOD_COUNT
    assert manifest["featurized"] + manifest["failed"] == len(hostile_run.rows)
    assert set(hostile_run.rows) <= {str(hostile_run.corpus / case.path) for case in CASES}


def test_every_counted_file_has_a_row(hostile_run):
    manifest = hostile_run.manifest
    assert manifest["input_files"] == manifest["featurized"] + manifest["failed"] == len(hostile_run.rows)
    assert manifest["failed"] == FAILED_COUNT
    assert sorted(hostile_run.rows) == sorted(str(hostile_run.corpus / case.path) for case in CASES)


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.kind) for case in CASES],
)
def test_each_file_gets_its_expected_outcome(hostile_run, case):
    row = hostile_run.row(case)
    assert row is not None, f"no row for {case.path}"
    if case.error is None:
        assert row["error"] is None
        assert len(row["features"]) == FEATURE_DIM
        assert np.isfinite(row["features"]).all()
        assert np.linalg.norm(row["features"]) > 0
    else:
        assert row["features"] is None
        assert re.fullmatch(case.error, row["error"]), row["error"]


@pytest.mark.parametrize("path", IGNORED.values(), ids=IGNORED.keys())
def test_non_image_files_get_no_row(hostile_run, path):
    assert (hostile_run.corpus / path).is_file()
    assert not any(row.endswith("/" + Path(path).name) for row in hostile_run.rows)


def test_unicode_class_folders_are_the_labels_exactly(hostile_run):
    labels = {hostile_run.row(case)["label"] for case in UNICODE_CLASS_JPEGS}
    assert labels == set(UNICODE_CLASSES)
    assert all(unicodedata.is_normalized("NFC", label) for label in labels)
    for case in UNICODE_CLASS_JPEGS:
        row = hostile_run.row(case)
        assert (row["label"], row["split"]) == (Path(case.path).parent.name, "Training")


def test_a_nested_image_is_labelled_by_its_parent_folder(hostile_run):
    """Training/Kiwi/extra/deeper/k.jpg: the label is the parent folder ('deeper'),
    not the class folder under Training, and no split is recognised above it."""
    row = hostile_run.row(NESTED)
    assert (row["label"], row["split"]) == ("deeper", None)


def test_test_split_rows_take_class_and_split_from_their_folders(hostile_run):
    test_cases = [case for case in CASES if case.path.startswith("Test/")]
    expected = [(case.path, Path(case.path).parent.name, "Test") for case in test_cases]
    rows = [
        (case.path, row["label"], row["split"]) if (row := hostile_run.row(case)) else case.path for case in test_cases
    ]
    assert rows == expected
    assert len(rows) == 13


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def all_close_to(pixels: np.ndarray, color: tuple[int, int, int], tolerance: int = 25) -> bool:
    return bool((np.abs(pixels.astype(int) - color) <= tolerance).all())


def test_exif_orientation_6_is_decoded_upright():
    content = exif_rotated_jpeg()
    stored = np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
    assert stored.shape == (224, 160, 3)  # as stored, turned: blue on top, red below
    assert all_close_to(stored[:100], BLUE)
    assert all_close_to(stored[124:], RED)
    pixels = decode(content)
    assert all_close_to(pixels[:, :100], RED)
    assert all_close_to(pixels[:, 124:], BLUE)


def test_exif_rotated_photo_has_the_features_of_its_upright_twin(hostile_run):
    rotated, upright = hostile_run.row(EXIF_ROTATED)["features"], hostile_run.row(UPRIGHT_TWIN)["features"]
    assert cosine(rotated, upright) >= 0.9999


def test_16_bit_grayscale_decodes_like_its_8_bit_original():
    """Pillow's own I;16 -> RGB conversion clips at 255 (almost all white)."""
    expected = decode(gray8_png())
    pixels = decode(gray16_png())
    assert np.abs(pixels.astype(int) - expected).max() <= 1
    assert (pixels == 255).mean() < 0.05


def test_16_bit_grayscale_has_the_features_of_its_8_bit_twin(hostile_run):
    assert cosine(hostile_run.row(GRAY16)["features"], hostile_run.row(GRAY8)["features"]) >= 0.9999


def test_decompression_bomb_is_refused_from_its_header_without_decoding(monkeypatch):
    content = bomb_png()
    assert len(content) < 100_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert Image.open(io.BytesIO(content)).size == (BOMB_SIDE, BOMB_SIDE)  # header only
    monkeypatch.undo()

    def no_pixel_decoding(image):
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixel_decoding)
    with pytest.raises(ValueError, match=r"decompression bomb guard"):
        decode(content)
