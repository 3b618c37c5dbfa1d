import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bincounter.imaging import ImageError, augment, load_and_preprocess, load_image, preprocess

from support import ABID


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _photo() -> Path:
    return sorted((ABID / "original").glob("*.jpg"))[0]


def test_bytes_and_path_give_the_same_tensor():
    # Training reads files, serving reads request bodies: both must see identical pixels.
    path = _photo()
    assert torch.equal(load_and_preprocess(path, 96), load_and_preprocess(path.read_bytes(), 96))


def test_whole_photo_is_squashed_never_cropped():
    # A red stripe along the right edge must survive preprocessing (a centre crop would cut it).
    array = np.zeros((300, 600, 3), dtype=np.uint8)
    array[:, -30:, 0] = 255
    tensor = preprocess(Image.fromarray(array), 64)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.uint8
    assert tensor[0, :, -2:].float().mean() > 200
    assert tensor[0, :, :50].float().mean() < 5


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (40, 30), 128),
        Image.new("CMYK", (40, 30), (0, 255, 0, 0)),
        Image.new("RGBA", (40, 30), (10, 20, 30, 255)),
        Image.new("P", (40, 30), 3),
        Image.new("I;16", (40, 30), 65535),
        Image.new("LA", (40, 30), (50, 0)),
    ],
    ids=["grey", "cmyk", "rgba", "palette", "16bit", "transparent"],
)
def test_modes_become_rgb(image):
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    decoded = load_image(_encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (40, 30)
    if image.mode == "I;16":
        assert np.asarray(decoded).min() == 255  # full-scale 16-bit is white, not clipped noise
    if image.mode == "LA":
        assert np.asarray(decoded).min() == 255  # fully transparent shows as white


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = load_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 60)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty body"),
        (b"GIF89a not what we take", "not a supported image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "JPEG header cannot be parsed"),
    ],
)
def test_bad_bytes_raise_image_error(body, fragment):
    with pytest.raises(ImageError, match=fragment):
        load_image(body)


def test_truncated_jpeg_is_refused():
    data = _photo().read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_size_limits():
    with pytest.raises(ImageError, match="each side must be"):
        load_image(_encode(Image.new("RGB", (4, 100))))
    with pytest.raises(ImageError, match="aspect ratio"):
        load_image(_encode(Image.new("RGB", (2000, 20))))
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_image(_encode(Image.new("1", (10_000, 10_000))))


def test_augment_keeps_every_pixel():
    torch.manual_seed(0)
    image = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    for _ in range(10):
        out = augment(image, "flip")
        assert out.shape == image.shape
        assert torch.equal(out.flatten(1).sort(1).values, image.flatten(1).sort(1).values)
    assert augment(image, "none") is image
