import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError
from pyspark.sql import functions as F

from fruits.decoding import IMAGE_SIZE, decode, preprocess
from fruits.images import inventory, label_and_split, limit_per_class, listed_files, read_images


@pytest.mark.parametrize(
    ("path", "label", "split"),
    [
        ("file:/d/fruits-360/Training/Apple Braeburn 1/0_100.jpg", "Apple Braeburn 1", "Training"),
        ("file:/d/Fruit-Images-Dataset/Test/Apple Braeburn/r_1_100.jpg", "Apple Braeburn", "Test"),
        ("s3://bucket/raw/fruits/test1/Kiwi/k.png", "Kiwi", "test1"),
        ("s3a://bucket/raw/validation/Pear 2/p.jpeg", "Pear 2", "validation"),
        ("file:/photos/Mango/IMG_1.JPG", "Mango", None),
        ("file:/d/test-multiple_fruits/apple_banana.jpg", None, "test-multiple_fruits"),
        ("file:/d/Training/Crème brûlée 芒果/a.jpg", "Crème brûlée 芒果", "Training"),
    ],
)
def test_label_and_split_follow_both_fruits360_layouts(spark, path, label, split):
    label_col, split_col = label_and_split(F.col("path"))
    row = spark.createDataFrame([(path,)], "path string").select(label_col.alias("l"), split_col.alias("s")).first()
    assert (row["l"], row["s"]) == (label, split)


def _jpeg(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_read_images_takes_jpg_jpeg_png_in_any_case_and_ignores_other_files(spark, tmp_path):
    folder = tmp_path / "Training" / "Lime 1"
    folder.mkdir(parents=True)
    for name in ("a.jpg", "b.JPG", "c.Jpeg", "d.png", "e.PNG"):
        (folder / name).write_bytes(_jpeg("green"))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    rows = read_images(spark, str(tmp_path)).select("path", "label", "split").collect()
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["a.jpg", "b.JPG", "c.Jpeg", "d.png", "e.PNG"]
    assert {(r["label"], r["split"]) for r in rows} == {("Lime 1", "Training")}


def test_listed_files_equal_pysparks_list_for_any_file_name(spark, tmp_path):
    folder = tmp_path / "Test" / "Pear [2], 50% ripe"
    folder.mkdir(parents=True)
    for name in ("a b.jpg", "c,d.jpg", "e%20f.jpg", "pêche.jpg", "g\nh.jpg"):
        (folder / name).write_bytes(_jpeg("yellow"))
    images = read_images(spark, str(tmp_path))
    assert listed_files(images) == images.inputFiles()
    assert len(listed_files(images)) == 5
    (tmp_path / "Empty").mkdir()
    assert listed_files(read_images(spark, str(tmp_path / "Empty"))) == []


def test_decode_gives_upright_rgb_at_model_size():
    gray = io.BytesIO()
    Image.new("L", (100, 50), 128).save(gray, format="PNG")
    pixels = decode(gray.getvalue())
    assert pixels.shape == (*IMAGE_SIZE, 3)
    assert pixels.dtype == np.uint8
    assert (pixels == 128).all()


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"", UnidentifiedImageError, "cannot identify image file"),
        (b"definitely not an image", UnidentifiedImageError, "cannot identify image file"),
        (_jpeg("red")[:200], OSError, "Truncated File Read"),
        (_jpeg("red")[:-10], OSError, "image file is truncated"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", UnidentifiedImageError, "cannot identify"),
    ],
)
def test_decode_raises_on_unreadable_bytes(content, error, message):
    with pytest.raises(error, match=message):
        decode(content)


def test_preprocess_equals_keras_preprocess_input():
    from keras.applications.mobilenet_v2 import preprocess_input

    pixels = np.random.default_rng(0).integers(0, 256, (2, *IMAGE_SIZE, 3), dtype=np.uint8)
    expected = preprocess_input(pixels.astype(np.float32))
    np.testing.assert_allclose(preprocess(pixels), expected, rtol=0, atol=1e-6)
    assert preprocess(pixels).dtype == np.float32


def test_limit_per_class_keeps_the_first_images_of_each_split_and_class(spark):
    from tests.conftest import SAMPLE

    limited, count = limit_per_class(read_images(spark, str(SAMPLE)), 2)
    rows = limited.select("path", "label", "split").collect()
    assert count == len(rows) == 12
    assert {row["path"].rsplit("/", 1)[1] for row in rows} == {"0_100.jpg", "1_100.jpg"}


def test_inventory_counts_images_per_class_and_split(spark):
    from tests.conftest import SAMPLE

    table = inventory(read_images(spark, str(SAMPLE)))
    assert list(table.index) == ["Synthetic Apple 1", "Synthetic Banana 1", "Synthetic Grape"]
    assert table.to_dict(orient="list") == {"Test": [4, 4, 4], "Training": [8, 8, 8]}


def test_decode_refuses_images_larger_than_the_bomb_guard(monkeypatch):
    big = io.BytesIO()
    Image.new("RGB", (200, 100), "red").save(big, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ValueError, match=r"image too large: 200x100 pixels"):
        decode(big.getvalue())
