"""Decoding and preprocessing of bin photos: the one path shared by training and serving.

Training and serving both call ``load_image`` then ``preprocess``; training adds
``augment`` on the resulting tensor. Nothing else touches pixels, so the two sides can never
drift apart. The whole photo is resized to a square, never cropped: a crop can cut items out of
the count. Normalisation to ImageNet statistics happens inside the model (``model.Normalize``),
so the tensors here stay ``uint8`` (four times less to move between loader processes) and an
exported graph carries its own normalisation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are made: the CPU serving image has none
    import torch

#: Largest photo ``load_image`` decodes unless told otherwise: a decompression-bomb cap for
#: training data. Bin cameras give well under 1 Mpx; the server passes its own, lower cap
#: (``ServingConfig.max_image_pixels``), since there every request's decode costs memory.
MAX_PIXELS = 40_000_000
#: Pixels converted at a time when a photo with transparency is flattened: the temporary
#: RGBA copies stay this small whatever the photo's size.
STRIP_PIXELS = 1 << 18
#: Smallest and largest side, and widest aspect ratio, that can be a bin photo at all.
MIN_SIDE = 8
MAX_SIDE = 16_384
MAX_ASPECT = 20.0
#: Formats we accept, by what the bytes are, not by what a header claims.
ACCEPTED_FORMATS = ("JPEG", "PNG")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(UserError):
    """The bytes are not a photo we can count items in; the reason says why."""


class ImageTooLarge(ImageError):
    """The photo's header claims more pixels than the caller's cap: refused before decoding."""


def _check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"image is {width}x{height} pixels; each side must be >= {MIN_SIDE}")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} pixels; the limit is {MAX_SIDE} per side and "
            f"{max_pixels:,} pixels in all (decompression-bomb guard)"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError(
            f"image is {width}x{height} pixels: aspect ratio above {MAX_ASPECT:g} is not a bin photo"
        )


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _grey16_to_8(image: Image.Image) -> np.ndarray:
    """16-bit (or 32-bit integer) greyscale -> ``uint8``, in integers: ``v // 257``.

    The same values as scaling by 255 / 65535 in floating point and truncating (all 65,536
    checked), without a float64 copy of the photo: 3 bytes per pixel at most, not 24.
    """
    array = np.asarray(image)
    out = np.empty(array.shape, dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, array.shape[1]))
    for top in range(0, array.shape[0], rows):
        strip = array[top : top + rows]
        if strip.dtype.itemsize > 2:  # mode "I": 32-bit, may lie outside 0..65535
            strip = np.clip(strip, 0, 65535)
        out[top : top + rows] = strip // 257
    return out


def _on_white(image: Image.Image) -> Image.Image:
    """A photo with transparency -> RGB, transparent pixels white as a viewer shows them.

    Flattened a strip of rows at a time, so the RGBA copies that ``alpha_composite`` needs are
    ``STRIP_PIXELS`` in size, not the photo's: the same pixels as compositing the whole image
    (Pillow's integer arithmetic), for a fraction of the memory.
    """
    width, height = image.size
    out = Image.new("RGB", image.size, (255, 255, 255))
    rows = max(1, STRIP_PIXELS // width)
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows))).convert("RGBA")
        background = Image.new("RGBA", strip.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(background, strip).convert("RGB"), (0, top))
    return out


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode a camera or an editor produces -> 8-bit RGB, keeping the picture's look.

    Integer arithmetic throughout and no full-size temporary wider than the result, so the
    memory a decode takes is a few bytes per pixel whatever the mode (issue 21).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or wider) greyscale: scale into 8 bits instead of clipping everything to white.
        return Image.fromarray(_grey16_to_8(image), mode="L").convert("RGB")
    if image.mode == "F":  # not from a JPEG or PNG; kept for callers that pass one in
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if array.max() > 255 else 255.0
        array = np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")
    if image.mode in ("P", "RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(image)
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(
    source: bytes | str | Path, image_size: int | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Decode a JPEG or PNG fully and return it as upright 8-bit RGB.

    Validates before decoding (format sniffed from the bytes, size limits) and decodes every
    byte, so truncated files fail here rather than producing a half-grey photo. With
    ``image_size`` a JPEG is decoded at the smallest DCT scale still at least that large
    (draft mode): the same pixels whether called from training or serving, at a fraction of
    the decode time for large photos. A photo over ``max_pixels`` raises ``ImageTooLarge``
    before a pixel is decoded.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageError("empty body: no image bytes")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=ACCEPTED_FORMATS)
            _check_size(*image.size, max_pixels)
            if image_size and image.format == "JPEG":
                image.draft("RGB", (image_size, image_size))
            image.load()
            image = ImageOps.exif_transpose(image) or image
    except ImageError:
        raise
    except UnidentifiedImageError:
        head = bytes(source[:8]) if isinstance(source, bytes | bytearray) else _head(stream)
        for magic, name in ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG")):
            if head.startswith(magic):
                raise ImageError(f"image is corrupt: its {name} header cannot be parsed") from None
        raise ImageError(
            f"not a supported image: the bytes are none of {', '.join(ACCEPTED_FORMATS)}"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large (decompression-bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL raises OSError for truncated data, SyntaxError/ValueError for broken headers.
        raise ImageError(f"image is corrupt or truncated: {exc}") from None
    return _to_rgb(image)


def preprocess_array(image: Image.Image, image_size: int) -> np.ndarray:
    """Whole photo -> ``uint8`` array ``[image_size, image_size, 3]`` (squash, never crop).

    The pixels of ``preprocess`` before they become a tensor: the server's HTTP threads stop
    here, so that no thread but the one running the network starts torch's thread pool.
    """
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)


def preprocess(image: Image.Image, image_size: int) -> torch.Tensor:
    """Whole photo -> ``uint8`` tensor ``[3, image_size, image_size]`` (squash, never crop)."""
    import torch

    return torch.from_numpy(preprocess_array(image, image_size)).permute(2, 0, 1).contiguous()


def load_and_preprocess(source: bytes | str | Path, image_size: int) -> torch.Tensor:
    """The pipeline both sides run: validated decode, then ``preprocess``."""
    return preprocess(load_image(source, image_size), image_size)


def augment(
    image: torch.Tensor, kind: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training-only augmentation on a ``uint8`` image tensor ``[3, H, W]`` (square).

    Bins are photographed from above, so any of the eight flips/90-degree rotations is another
    valid photo with the same count. ``full`` adds mild brightness/contrast jitter, as lighting
    differs between stations. Nothing here crops or hides part of the bin.
    """
    import torch

    if kind == "none":
        return image
    rolls = int(torch.randint(0, 8, (1,), generator=generator).item())
    out = torch.rot90(image, k=rolls % 4, dims=(1, 2))
    if rolls >= 4:
        out = torch.flip(out, dims=(2,))
    if kind == "full":
        brightness, contrast = (0.8 + 0.4 * torch.rand(2, generator=generator)).tolist()
        as_float = out.float()
        mean = as_float.mean()
        as_float = (as_float - mean) * contrast + mean * brightness
        out = as_float.clamp_(0, 255).to(torch.uint8)
    return out.contiguous()
