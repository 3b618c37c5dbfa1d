"""Request bodies for the serving tests: real photos, their conversions, and bad inputs.

Bad inputs are built from real ABID photos or written byte by byte (a PNG header whose size
fields say what we want), so each case is exactly the failure class it names.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from support import ABID

ORIGINALS = ABID / "original"


@cache
def original_paths() -> tuple[Path, ...]:
    """The real photos at their native sizes (300-870 px wide)."""
    return tuple(sorted(ORIGINALS.glob("*.jpg")))


def photo_bytes(i: int = 0) -> bytes:
    return original_paths()[i].read_bytes()


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (valid CRC), with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@cache
def decompression_bomb() -> bytes:
    """A real 7000 x 7000 black PNG: ~50 kB on the wire, 147 MB once decoded as RGB."""
    return encode(Image.new("1", (7000, 7000)), optimize=True)


def b64_batch(*photos: bytes) -> bytes:
    return json.dumps(
        {"instances": [{"b64": base64.b64encode(p).decode()} for p in photos]}
    ).encode()


@dataclass(frozen=True)
class BadInput:
    """One class of bad request and the status and message the server must answer with."""

    name: str
    body: bytes
    content_type: str | None = "image/jpeg"
    status: int = 400
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def bad_inputs(max_payload_bytes: int = 6 * 1024 * 1024) -> list[BadInput]:
    jpeg = photo_bytes(0)
    return [
        BadInput("unsupported_content_type", jpeg, "text/csv", 415, "image/jpeg"),
        BadInput("missing_content_type", jpeg, None, 415, "application/json"),
        BadInput("unsupported_accept", jpeg, headers={"Accept": "text/csv"}, status=406),
        BadInput("empty_body", b"", message="empty"),
        BadInput("empty_json_body", b"", "application/json", message="empty"),
        BadInput("not_an_image", b"hello, I am plain text, not a photo" * 10, message="JPEG"),
        BadInput("gif_not_accepted", encode(Image.new("RGB", (64, 64)), "GIF"), "image/png"),
        BadInput("truncated_jpeg", jpeg[: len(jpeg) // 2], message="truncated"),
        BadInput("jpeg_header_only", jpeg[:300]),
        BadInput("zero_width", png_header_only(0, 100), "image/png"),
        BadInput("tiny_image", encode(Image.new("RGB", (2, 2))), "image/png", message=">= 8"),
        BadInput(
            "absurd_dimensions", png_header_only(60_000, 60_000), "image/png", message="large"
        ),
        BadInput("absurd_aspect_ratio", encode(Image.new("RGB", (4000, 10))), "image/png"),
        BadInput("decompression_bomb", decompression_bomb(), "image/png", message="bomb"),
        BadInput("malformed_json", b'{"instances": [', "application/json", message="JSON"),
        BadInput("deeply_nested_json", b"[" * 100_000, "application/json", message="JSON"),
        BadInput("json_without_instances", b'{"images": []}', "application/json"),
        BadInput("json_empty_instances", b'{"instances": []}', "application/json"),
        BadInput(
            "json_instance_not_object", b'{"instances": ["abc"]}', "application/json", message="b64"
        ),
        BadInput(
            "malformed_base64",
            b'{"instances": [{"b64": "not base64!!"}]}',
            "application/json",
            message="base64",
        ),
        BadInput(
            "bad_photo_in_batch",
            b64_batch(jpeg, b"not a photo"),
            "application/json",
            message="instances[1]",
        ),
        BadInput("over_payload_limit", b"\xff" * (max_payload_bytes + 1), status=413),
    ]


@cache
def converted_photos() -> dict[str, bytes]:
    """The same real photo in every mode a camera or editor might send (all must be served).

    Made once per session (the conversions take a second or two); do not modify the dict.
    """
    rgb = Image.open(io.BytesIO(photo_bytes(1))).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(200)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return {
        "grayscale_jpeg": encode(rgb.convert("L"), "JPEG"),
        "cmyk_jpeg": encode(rgb.convert("CMYK"), "JPEG"),
        "rgba_png": encode(rgba),
        "palette_png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE)),
        "grey16_png": encode(grey16),
        "exif_rotated_jpeg": encode(rgb.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif),
        "png": encode(rgb),
    }


# --------------------------------------------------------------------------- hostile bodies


def side_under(max_pixels: int) -> int:
    """The side of the largest square photo with fewer than ``max_pixels`` pixels."""
    return math.isqrt(max_pixels - 1)


def palette_png_with_transparency(side: int) -> bytes:
    """A ``side`` x ``side`` palette PNG whose palette has transparent entries: a few kB.

    Its pixels alternate between a few entries in a pattern zlib squeezes to nothing, so the
    body is tiny while a decoder that widens it to RGBA allocates 4 bytes per pixel (and more).
    """
    image = Image.new("P", (side, side), 0)
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    image.paste(1, (0, 0, side, side // 2))
    return encode(image, transparency=bytes([0, 128, 255]), optimize=True)


def grey16_png(side: int) -> bytes:
    """A ``side`` x ``side`` 16-bit greyscale PNG of one flat value: tens of kB on the wire."""
    return encode(Image.new("I;16", (side, side), 40000), optimize=True)


def rgba_png(side: int) -> bytes:
    """A ``side`` x ``side`` half-transparent RGBA PNG of one colour."""
    return encode(Image.new("RGBA", (side, side), (10, 200, 30, 100)), optimize=True)


def hostile_photos(max_pixels: int) -> dict[str, bytes]:
    """The costliest photos to decode that a server capped at ``max_pixels`` must still accept."""
    side = side_under(max_pixels)
    return {
        "palette_transparency_png": palette_png_with_transparency(side),
        "grey16_png": grey16_png(side),
        "rgba_png": rgba_png(side),
    }
