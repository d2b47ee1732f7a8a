"""An image's placeholder: its mean colour and a few-pixel preview, painted before any rendition.

Computed once when an upload is processed (``make``, from a small rendition's pixels, with
Pillow) and carried in the status record's key name, so a listing page has it with no extra
call. Stored compactly as ``"rrggbb.WxH.<base64url RGB bytes>"``: at most 8x8 pixels, so at most
256 characters. The API turns it into ``{"color": "#rrggbb", "preview": "data:image/png;base64,…"}``
with a tiny PNG written in pure Python (``to_json``): the API function never loads Pillow.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

MAX_SIDE = 8  # the preview fits 8x8 keeping aspect ratio (192 bytes of RGB at most)
_PATTERN = re.compile(r"([0-9a-f]{6})\.([1-8])x([1-8])\.([A-Za-z0-9_-]{1,256})")


def make(im: Image.Image) -> str:
    """The placeholder of an image (any mode; transparency is shown over white)."""
    from PIL import Image, ImageStat

    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    if im.mode == "RGBA":
        flat = Image.new("RGB", im.size, (255, 255, 255))
        flat.paste(im, mask=im.getchannel("A"))
        im = flat
    mean = [min(255, round(v)) for v in ImageStat.Stat(im).mean]
    w, h = im.size
    scale = MAX_SIDE / max(w, h)
    size = (max(1, min(MAX_SIDE, round(w * scale))), max(1, min(MAX_SIDE, round(h * scale))))
    preview = im.resize(size, Image.Resampling.BOX, reducing_gap=None)
    pixels = base64.urlsafe_b64encode(preview.tobytes()).rstrip(b"=").decode()
    r, g, b = mean[:3]
    return f"{r:02x}{g:02x}{b:02x}.{size[0]}x{size[1]}.{pixels}"


def parse(value: str | None) -> tuple[str, int, int, bytes] | None:
    """``(colour hex, width, height, RGB bytes)``, or None for a missing or malformed value."""
    match = _PATTERN.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return None
    colour, w, h, pixels = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
    try:
        raw = base64.urlsafe_b64decode(pixels + "=" * (-len(pixels) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != w * h * 3:
        return None
    return colour, w, h, raw


def to_json(value: str | None) -> dict[str, Any] | None:
    """The Image's ``placeholder``: ``{"color": "#rrggbb", "preview": "data:image/png;base64,…"}``."""
    parsed = parse(value)
    if parsed is None:
        return None
    colour, w, h, raw = parsed
    png = _png(w, h, raw)
    return {"color": f"#{colour}", "preview": "data:image/png;base64," + base64.b64encode(png).decode()}


def _png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (no Pillow: this runs in the API function)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    stride = width * 3
    rows = b"".join(b"\0" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )
