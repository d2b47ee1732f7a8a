"""Bytes in, renditions out. (Interim version; being replaced by the full pipeline.)"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps

from .errors import ImageshelfError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
           "TIFF": "image/tiff", "BMP": "image/bmp"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_frames: int = 500


@dataclass(frozen=True)
class SourceInfo:
    format: str
    content_type: str
    width: int
    height: int
    frames: int


@dataclass(frozen=True)
class Rendition:
    data: bytes
    width: int
    height: int
    content_type: str
    extension: str
    animated: bool = False


def inspect(data: bytes, limits: Limits = Limits()) -> SourceInfo:
    if not data:
        raise ImageshelfError("empty_file", "The file is empty.")
    if len(data) > limits.max_bytes:
        raise ImageshelfError("file_too_large", "too large")
    try:
        im = Image.open(io.BytesIO(data))
    except Exception:
        raise ImageshelfError("not_an_image", "not an image") from None
    if im.format not in FORMATS:
        raise ImageshelfError("unsupported_format", f"{im.format} is not supported")
    if im.width * im.height > limits.max_pixels:
        raise ImageshelfError("too_many_pixels", "too many pixels")
    return SourceInfo(im.format, FORMATS[im.format], im.width, im.height, getattr(im, "n_frames", 1))


def render(data: bytes, boxes: Sequence[tuple[int, int]], limits: Limits = Limits()):
    info = inspect(data, limits)
    try:
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        im.load()
    except Exception:
        raise ImageshelfError("corrupt_image", "corrupt") from None
    out = []
    for box in boxes:
        copy = im.convert("RGB")
        copy.thumbnail(box, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        copy.save(buf, "JPEG", quality=82, progressive=True, optimize=True)
        out.append(Rendition(buf.getvalue(), copy.width, copy.height, "image/jpeg", "jpg"))
    return SourceInfo(info.format, info.content_type, im.width, im.height, info.frames), out


def fit(data: bytes, box: tuple[int, int], limits: Limits = Limits()) -> Rendition:
    return render(data, [box], limits)[1][0]
