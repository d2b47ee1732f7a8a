"""Bytes in, renditions out: one decode per upload, then a rendition for every box. No AWS here.

The public API comes first; then ``_render_still`` and ``_render_animation``, each a short list
of calls to the pipeline's steps; then one section per step, in the order they run:

1. Open     ``_open``: sniff the bytes, read the header, check every limit before any pixel.
2. Decode   ``_decode``: once, shrinking on load where the format allows (``shrink.py``).
3. Orient   ``_late_orientation``, ``_sizes``: settle the EXIF orientation and each box's size
            in the file's own axes; the pixels are turned last, when they are few.
4. Resize   ``_reduce_towards``: box-reduce towards each box (working mode, band by band); then
            ``_resize_colour_rotate``: Lanczos to the exact size, colour (5), orientation (3).
5. Colour   ``_to_srgb``: the embedded profile to sRGB.
6. Encode   ``_encode_rendition`` (JPEG, PNG or WebP) or ``_AnimationEncoder`` (animated WebP).

docs/imaging.md has the policy per case, the measurements behind the numbers below (JPEG
quality, reducing gaps, memory) and the decisions on damaged files.

Memory is bounded on purpose: limits are checked from the header before any pixel is decoded,
JPEGs and WebPs are decoded at reduced scale, mode conversions run band by band on the way into
the reduce, the full-size decode is freed before the Lanczos passes and the encoders, and
animation frames stream straight into the encoders instead of piling up in lists.
"""

from __future__ import annotations

import functools
import importlib
import io
import itertools
import os
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import cast

from PIL import Image, ImageCms, ImageFile, ImageStat

from . import formats, placeholder, shrink
from .errors import ImageshelfError, too_large
from .formats import Format
from .shrink import Box
from .timing import Stopwatch

# ---------------------------------------------------------------------------------------------
# Tunables (measured; see docs/imaging.md)

JPEG_QUALITY = 82  # lowest quality whose median SSIM on the bench corpus reaches 0.98 at 400 px
WEBP_QUALITY = 82  # animated renditions (lossy WebP with alpha)
# Alternate formats of still renditions (RENDITION_FORMATS), each at the quality whose median SSIM
# on the bench corpus equals JPEG q82's at that size (0.985 at 400 px and at 1600 px;
# ``python -m bench.formats``), so on the corpus an AVIF or WebP is as good a picture as its JPEG.
# Above AVIF_FAST_PIXELS both need a higher quality (AVIF also encodes at its faster speed there).
ALTERNATE_QUALITY = {"WEBP": 87, "AVIF": 68}
ALTERNATE_QUALITY_LARGE = {"WEBP": 88, "AVIF": 76}
WEBP_METHOD = 4  # method 6 is 1.7x slower for 3% fewer bytes
# libaom speed: 6 is 36% smaller than JPEG at 400 px in ~55 ms on one core; at 1600 px it takes
# ~0.7 s, so renditions above AVIF_FAST_PIXELS use speed 8 (~0.13 s, 18% smaller than JPEG).
AVIF_SPEED, AVIF_FAST_SPEED, AVIF_FAST_PIXELS = 6, 8, 500_000
# Headroom kept above the target size before the final Lanczos pass, for JPEG DCT scaling, libwebp
# scaling and the box-filter reduce(). Against a full-decode Lanczos reference on the corpus, 1.5
# scores median SSIM 0.9973 (min 0.991) vs 0.9985 for 2.0 (what libvips and thumbnail() use),
# far less than JPEG q82 itself costs (0.980), and lets many more photos decode at 1/8 scale.
DRAFT_GAP = 1.5
REDUCE_GAP = 1.5
# Sources decoded at full size (PNG, TIFF, BMP; Pillow cannot scale them while decoding) that
# are over WORK_BYTES reduce by the whole factor instead (a residual Lanczos of 1-2x, as libvips
# does): the reduced copy is then at most a quarter smaller than with REDUCE_GAP, which keeps a
# 25 MP PNG under 150 MB and a 50 MP RGBA PNG under 256 MB.
LARGE_REDUCE_GAP = 1.0
# A converted (e.g. premultiplied RGBA) working copy larger than this is never made at full size:
# the box reduce runs first, band by band (BAND_BYTES each).
WORK_BYTES = 48 * 1024 * 1024
BAND_BYTES = 1024 * 1024
# Alpha at or above this everywhere is opaque (a 2% veil is invisible; JPEG is 3-10x smaller).
OPAQUE_ALPHA = 250
# libjpeg keeps every DCT coefficient of a progressive JPEG in memory (2 bytes per sample).
MAX_JPEG_COEF_BYTES = 160 * 1024 * 1024

# Threads for conversion, reduce, Lanczos stripes and the two lossless encodes (not for decoding,
# which Pillow does in one call). Lambda gives 2+ vCPUs from 1769 MB.
WORKERS = min(4, os.cpu_count() or 1)
_POOL: ThreadPoolExecutor | None = None


# ---------------------------------------------------------------------------------------------
# Public: limits, what comes in, what goes out, and the entry points


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_frames: int = 500


@dataclass(frozen=True)
class SourceInfo:
    """What the original is, read from the header (width/height after EXIF orientation)."""

    format: str
    content_type: str
    width: int
    height: int
    frames: int
    placeholder: str | None = None  # placeholder.make() of the image (render() only)


@dataclass(frozen=True)
class Encoded:
    """One encoded output image (a rendition's bytes before storage names it)."""

    data: bytes
    width: int
    height: int
    format: Format
    animated: bool = False
    frames: int = 1  # frames in this output; 1 with SourceInfo.frames > 1 means "first frame only"
    # The same pixels in the other formats asked for (RENDITION_FORMATS), each smaller than this one.
    alternates: tuple[Encoded, ...] = ()

    @property
    def content_type(self) -> str:
        return self.format.mime

    @property
    def extension(self) -> str:
        return self.format.extension


def render(data: bytes, boxes: Sequence[tuple[int, int]], limits: Limits = Limits(),
           timings: dict[str, float] | None = None, alternates: Sequence[str] = (),
           ) -> tuple[SourceInfo, list[Encoded]]:  # fmt: skip
    """Decode ``data`` once and return one rendition per box, in the order of ``boxes``.

    Each rendition fits its box keeping aspect ratio and is never enlarged; EXIF orientation is
    applied, colours converted to sRGB, all metadata dropped. Opaque images become progressive
    JPEG, transparent ones PNG or lossless WebP (the smaller), animated GIF/WebP/APNG animated WebP.
    ``alternates`` names other output formats (``"WEBP"``, ``"AVIF"``) each still rendition is also
    encoded in, kept as ``Encoded.alternates`` when smaller than the rendition (never for animations).
    Every refusal is an ImageshelfError with a stable code. ``timings``, if given, receives the
    milliseconds spent to ``decode``, ``resize`` and ``encode`` (an animation's frames are decoded
    and fed to the encoder while they are resized, so that time counts as ``resize``).
    """
    if not boxes:
        raise ValueError("render() needs at least one box")
    clock = Stopwatch(timings)
    with clock("decode"):
        opened = _open(data, limits)  # 1. open and check every limit
    with decoding(opened):
        if _is_animation(opened):
            info, out = opened.info, _render_animation(opened, boxes, clock)
        else:
            info, out = _render_still(opened, data, boxes, clock, alternates)
        with clock("encode"):
            return replace(info, placeholder=_placeholder(out)), out


@contextmanager
def decoding(opened: _Opened) -> Iterator[None]:
    """Work on an opened image: any failure but an ImageshelfError becomes ``corrupt_image`` (a
    stable code, never a traceback), and the file is closed whatever happens."""
    try:
        yield
    except ImageshelfError:
        raise
    except (MemoryError, Image.DecompressionBombError) as exc:
        raise _err("corrupt_image", f"The image could not be decoded within memory limits ({exc}).") from None
    except Exception as exc:
        raise _corrupt(opened.info.format, exc) from None
    finally:
        opened.im.close()


def fit(data: bytes, box: tuple[int, int], limits: Limits = Limits()) -> Encoded:
    """One rendition of ``data`` fitting ``box``: ``render(data, [box])`` for a single size."""
    return render(data, [box], limits)[1][0]


def inspect(data: bytes, limits: Limits = Limits()) -> SourceInfo:
    """Sniff the type and check every limit from the header, without decoding pixels.

    Raises ImageshelfError (empty_file, file_too_large, not_an_image, unsupported_format,
    corrupt_image, too_many_pixels, too_many_frames).
    """
    opened = _open(data, limits)
    opened.im.close()
    return opened.info


def fit_size(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The size that fits ``width x height`` inside ``box`` keeping aspect; never enlarged.

    One rounding rule for every format: the limiting side is exactly the box side, the other is
    rounded half up and at least 1.
    """
    bw, bh = box
    if bw < 1 or bh < 1:
        raise ValueError(f"box must be positive, got {box}")
    if width <= bw and height <= bh:
        return width, height
    if width * bh >= height * bw:  # width is the limiting side
        return bw, max(1, (2 * height * bw + width) // (2 * width))
    return max(1, (2 * width * bh + height) // (2 * height)), bh


# ---------------------------------------------------------------------------------------------
# The two pipelines: a still (one decode shared by every box) and an animation (frame by frame)


@dataclass(frozen=True)
class _Opened:
    im: ImageFile.ImageFile
    info: SourceInfo
    orientation: int  # EXIF orientation 1-8, applied to the pixels last


@dataclass(frozen=True)
class _Size:
    shown: tuple[int, int]  # the rendition as displayed (after orientation)
    stored: tuple[int, int]  # the same in the file's own axes, which the pixels are resized in


def _render_still(opened: _Opened, data: bytes, boxes: Sequence[tuple[int, int]], clock: Stopwatch,
                  alternates: Sequence[str] = ()) -> tuple[SourceInfo, list[Encoded]]:  # fmt: skip
    """One decode shared by every box; the full-size pixels are freed before the per-box passes."""
    with clock("decode"):  # 2. decode once, shrinking on load
        src, box = _decode(opened, data, _decode_size(_sizes(opened, boxes)))
    opened = _late_orientation(opened, src)  # 3. orient
    sizes = _sizes(opened, boxes)
    icc = src.info.get("icc_profile")
    working = _working_mode(src)
    with clock("resize"):  # 4. resize, first stage: from the full-size pixels
        reduced = [_reduce_towards(src, size.stored, box, working) for size in sizes]
    _free_source(src, opened.im, reduced)
    del src
    out = []
    for size, (image, rbox) in zip(sizes, reduced, strict=True):
        with clock("resize"):  # 4, 5, 3: on few pixels
            small = _resize_colour_rotate(image, rbox, size.stored, icc, opened.orientation)
        with clock("encode"):  # 6
            out.append(_encode_rendition(small, size.shown, alternates))
    return opened.info, out


def _render_animation(opened: _Opened, boxes: Sequence[tuple[int, int]], clock: Stopwatch) -> list[Encoded]:
    """Every frame resized for every box in one pass, streamed into one WebP encoder per box."""
    sizes = _sizes(opened, boxes)
    encoders = [_AnimationEncoder(opened.im, size.shown) for size in sizes]
    with warnings.catch_warnings(), clock("resize"):
        warnings.simplefilter("ignore")
        for frame, duration in _iter_frames(opened.im, opened.info.frames):  # 2. one frame at a time
            icc = frame.info.get("icc_profile")
            whole: Box = (0.0, 0.0, float(frame.width), float(frame.height))
            working = _frame_working_mode(frame)
            for encoder, size in zip(encoders, sizes, strict=True):
                image, rbox = _reduce_towards(frame, size.stored, whole, working)
                encoder.add(
                    _resize_colour_rotate(image, rbox, size.stored, icc, opened.orientation), duration
                )
    with clock("encode"):
        return [encoder.finish() for encoder in encoders]


# ---------------------------------------------------------------------------------------------
# 1. Open: sniff, read the header, check every limit (no pixel decoded)


def _err(code: str, message: str) -> ImageshelfError:
    return ImageshelfError(code, message)


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _open(data: bytes, limits: Limits) -> _Opened:
    if not data:
        raise _err("empty_file", "The file is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits.max_bytes)
    sniffed, refused = formats.sniff(data)
    if sniffed is None:
        refused = refused or _identify_other(data)
        if refused:
            raise _err(
                "unsupported_format",
                f"{refused} files are not supported; upload {formats.labels()} instead.",
            )
        raise _err("not_an_image", "The file is not an image (its bytes match no image format).")
    fmt = sniffed.name
    _register_plugin(sniffed.codec)
    if fmt == "WEBP" and (canvas := _webp_canvas(data)):
        _check_pixels(*canvas, 1, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: our own limit applies below
            im = Image.open(io.BytesIO(data), formats=list(dict.fromkeys((fmt, *sniffed.pillow))))
    except Image.DecompressionBombError as exc:
        raise _err("too_many_pixels", f"The image is far too large ({exc}); the limit is "
                   f"{_mp(limits.max_pixels)}.") from None  # fmt: skip
    except Exception as exc:
        raise _err("corrupt_image", f"The file looks like {fmt} but its header is damaged or "
                   f"truncated ({type(exc).__name__}).") from None  # fmt: skip
    try:
        w, h = im.size
        frames = _frames(im, fmt, data, limits.max_frames + 1)
        if frames > limits.max_frames:
            raise _err(
                "too_many_frames",
                f"The image has more than {limits.max_frames} frames; the limit is {limits.max_frames}.",
            )
        animated = sniffed.animated and frames > 1
        _check_pixels(w, h, frames if animated else 1, limits)
        if fmt == "JPEG":
            _check_jpeg(im, data)
        elif fmt in ("HEIF", "AVIF"):
            _check_boxes(data, fmt)
        # Pillow's TIFF loader applies the orientation itself (size already swapped); others don't.
        orientation = 1 if fmt == "TIFF" else _orientation(im)
    except ImageshelfError:
        im.close()
        raise
    except Exception as exc:
        im.close()
        raise _err("corrupt_image", f"The {fmt} header could not be read ({type(exc).__name__}).") from None
    if orientation >= 5:
        w, h = h, w
    return _Opened(im, SourceInfo(fmt, sniffed.mime, w, h, frames), orientation)


# Decoders that are Pillow plugins outside Pillow (a format row's ``codec``), and how each is
# registered. Imported on the first file that needs one: never by the API function.
_PLUGINS = {"pi_heif": "register_heif_opener"}


@functools.cache
def _register_plugin(codec: str) -> None:
    if register := _PLUGINS.get(codec):
        getattr(importlib.import_module(codec), register)()


def _is_animation(opened: _Opened) -> bool:
    info = opened.info
    return (
        info.frames > 1 and info.format in formats.ANIMATED and bool(getattr(opened.im, "is_animated", False))
    )


def _identify_other(data: bytes) -> str | None:
    """Name a format Pillow recognises but we refuse (TGA, PCX, ...), header parse only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.format
    except Exception:
        return None


def _check_pixels(w: int, h: int, frames: int, limits: Limits) -> None:
    if w < 1 or h < 1:
        raise _err("corrupt_image", f"The image declares an empty size ({w}x{h}).")
    if w * h * frames <= limits.max_pixels:
        return
    if frames == 1:
        msg = f"The image is {w}x{h} ({_mp(w * h)}); the limit is {_mp(limits.max_pixels)}."
    else:
        msg = (
            f"The animation is {w}x{h} with {frames} frames ({_mp(w * h * frames)} in all); "
            f"the limit is {_mp(limits.max_pixels)}."
        )
    raise _err("too_many_pixels", msg)


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """WebP canvas size from the RIFF header: libwebp allocates the canvas when Pillow opens it."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _frames(im: ImageFile.ImageFile, fmt: str, data: bytes, cap: int) -> int:
    if fmt == "GIF":
        return max(1, _gif_frames(data, cap))
    if fmt == "TIFF":
        return _tiff_pages(data, cap)
    return int(getattr(im, "n_frames", 1) or 1)


def _gif_frames(data: bytes, cap: int) -> int:
    """Count GIF frames by walking blocks (no LZW decode); stops at ``cap``."""
    pos, n, size = 13, 0, len(data)
    if size < 13:
        return 0
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)
    while pos < size and n < cap:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x2C:  # image descriptor, optional local colour table, LZW code size
            if pos + 10 > size:
                break
            flags = data[pos + 9]
            pos += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
            n += 1
        elif block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # Pillow skips a stray byte and reads on, so counting must too
            pos += 1
            continue
        while pos < size and data[pos]:  # skip sub-blocks
            pos += data[pos] + 1
        pos += 1
    return n


def _tiff_pages(data: bytes, cap: int) -> int:
    """Count TIFF IFDs by following offsets (loop-safe); stops at ``cap``."""
    endian = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")
    seen: set[int] = set()
    try:
        off = struct.unpack(endian + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
        while off and off not in seen and len(seen) < cap:
            seen.add(off)
            if big:
                count = struct.unpack(endian + "Q", data[off : off + 8])[0]
                off = struct.unpack(endian + "Q", data[off + 8 + 20 * count : off + 16 + 20 * count])[0]
            else:
                count = struct.unpack(endian + "H", data[off : off + 2])[0]
                off = struct.unpack(endian + "I", data[off + 2 + 12 * count : off + 6 + 12 * count])[0]
    except struct.error:
        pass  # a truncated chain: count what we walked; decoding decides whether it is usable
    return max(1, len(seen))


def _check_jpeg(im: ImageFile.ImageFile, data: bytes) -> None:
    """What a JPEG's header promises, against what decoding it would cost and what the file holds.

    A progressive JPEG's coefficient buffers must fit MAX_JPEG_COEF_BYTES. And the scans must be
    able to hold the picture at all: in a Huffman-coded JPEG every 8x8 block of every component
    costs at least one bit (its DC difference has a code of at least one bit), so scan data
    shorter than that is certainly missing, and libjpeg would fill the gap with flat grey. A flat
    colour photo still takes about two bits per block (docs/imaging.md), twice this floor.
    """
    blocks = _jpeg_blocks(im)
    w, h = im.size
    if im.info.get("progressive") or im.info.get("progression"):
        coef = blocks * 128  # 64 coefficients of 2 bytes
        if coef > MAX_JPEG_COEF_BYTES:
            raise _err(
                "too_many_pixels",
                f"The image is a {w}x{h} progressive JPEG whose decoding needs {coef // 2**20} MB; "
                f"the limit is {MAX_JPEG_COEF_BYTES // 2**20} MB. Save it as a baseline JPEG or smaller.",
            )
    scans = _jpeg_scans(data)
    if scans is not None and scans[0] in _HUFFMAN_SOF and (held := len(data) - scans[1]) * 8 < blocks:
        raise _err(
            "corrupt_image",
            f"The JPEG declares {w}x{h} pixels but holds {held} bytes of image data, and a complete "
            f"one needs at least {-(-blocks // 8)}: the file is damaged or truncated. Upload the "
            "complete file.",
        )


def _check_boxes(data: bytes, fmt: str) -> None:
    """A HEIF/AVIF file (ISO base media boxes) must hold every top-level box it declares: libheif
    decodes a file cut short with its missing tiles filled in grey, and says nothing. (Bytes after
    the last box are left alone, as after a JPEG's end.)"""
    offset = 0
    while offset + 8 <= len(data):
        size = struct.unpack_from(">I", data, offset)[0]
        if size == 1 and offset + 16 <= len(data):
            size = struct.unpack_from(">Q", data, offset + 8)[0]
        elif size == 0:  # the last box, to the end of the file
            return
        if size < 8:
            break
        offset += size
    if offset > len(data):
        raise _err(
            "corrupt_image",
            f"The {fmt} file holds {len(data)} bytes where its parts take {offset}: it is "
            "truncated. Upload the complete file.",
        )


def _jpeg_blocks(im: ImageFile.ImageFile) -> int:
    """8x8 blocks over all components of a JPEG (each component at its own sampling)."""
    layers = getattr(im, "layer", None) or [("", 1, 1, 0)] * len(im.getbands())
    hmax = max(layer[1] for layer in layers) or 1
    vmax = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        total += -(-im.width * h // (8 * hmax)) * -(-im.height * v // (8 * vmax))
    return total


_HUFFMAN_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3))  # not arithmetic coding, which can go below a bit


def _jpeg_scans(data: bytes) -> tuple[int, int] | None:
    """(SOF marker, offset where the first scan's data starts), walking the header segments.

    None when the header is not a clean chain of segments (Pillow may still read it; then the
    size check above is skipped rather than guessed).
    """
    pos, end, sof = 2, len(data), 0
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            return (sof, pos + 2 + length) if sof else None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # DHT, JPG, DAC are not frames
            sof = marker
        pos += 2 + length
    return None


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8; anything invalid or unreadable counts as 1."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # reading a late eXIf chunk would decode the pixels; _late_orientation looks again
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = im.getexif().get(0x0112)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# ---------------------------------------------------------------------------------------------
# 2. Decode once, shrinking on load where the format allows it


def _decode_size(sizes: Sequence[_Size]) -> tuple[float, float]:
    """The size to decode at (file axes): the largest box plus DRAFT_GAP of headroom."""
    return max(s.stored[0] for s in sizes) * DRAFT_GAP, max(s.stored[1] for s in sizes) * DRAFT_GAP


def _decode(opened: _Opened, data: bytes, want: tuple[float, float]) -> tuple[Image.Image, Box]:
    """The first frame's pixels and their valid area: scaled by shrink.py where it can, else whole."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoded, box = shrink.shrink_on_load(opened.im, data, opened.info.format, want)
        if decoded is None:
            decoded = _load(opened.im, data, opened.info.format, want)
    return decoded, box


def _load(im: ImageFile.ImageFile, data: bytes, fmt: str, want: tuple[float, float]) -> Image.Image:
    """Decode the first frame, strictly; a JPEG that only lost its tail may be rescued."""
    try:
        im.load()
        return im
    except Exception as exc:
        if fmt != "JPEG" or data.endswith(b"\xff\xd9"):
            raise _corrupt(fmt, exc) from None
        first_error = exc
    # The upload stopped before the JPEG's end marker. Decode what arrived (at the same scale): a
    # progressive JPEG shows the whole picture (only later refinement is lost), a baseline one
    # fills the missing rows with flat grey, which we detect and refuse.
    ended = data + b"\xff\xd9"
    retry = Image.open(io.BytesIO(ended), formats=["JPEG"])
    try:
        decoded, _ = shrink.shrink_on_load(retry, ended, fmt, want)
        if decoded is None:
            retry.load()
            decoded = retry
    except Exception:
        raise _corrupt(fmt, first_error) from None
    last_row = ImageStat.Stat(decoded.crop((0, decoded.height - 1, decoded.width, decoded.height)))
    if all(lo == hi and lo in (127, 128) for lo, hi in last_row.extrema):
        raise _err("corrupt_image", "The JPEG is truncated: the bottom of the picture is missing. "
                   "Upload the complete file.")  # fmt: skip
    return decoded


def _iter_frames(im: ImageFile.ImageFile, checked: int) -> Iterator[tuple[Image.Image, int]]:
    """Composited frames with durations; a damaged later frame ends the animation early.

    Never more than the ``checked`` frames that the limits were checked against, whatever
    the decoder counts.
    """
    for index in range(min(checked, im.n_frames)):  # type: ignore[attr-defined]
        try:
            im.seek(index)
            im.load()
        except Exception:
            if index == 0:
                raise
            return
        yield im, int(im.info.get("duration") or 0)


def _corrupt(fmt: str, exc: BaseException) -> ImageshelfError:
    detail = str(exc).split(" (")[0][:120] or type(exc).__name__
    return _err("corrupt_image", f"The {fmt} image is damaged or truncated and cannot be decoded ({detail}).")


# ---------------------------------------------------------------------------------------------
# 3. Orient: settle the orientation and the sizes; _resize_colour_rotate turns the small result

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _late_orientation(opened: _Opened, src: Image.Image) -> _Opened:
    """A PNG's eXIf chunk may follow the pixel data, so its orientation is only known now."""
    if opened.info.format != "PNG" or opened.orientation != 1 or "exif" not in src.info:
        return opened
    orientation = _orientation(src)
    info = opened.info
    if orientation >= 5:
        info = replace(info, width=info.height, height=info.width)
    return replace(opened, info=info, orientation=orientation)


def _sizes(opened: _Opened, boxes: Sequence[tuple[int, int]]) -> list[_Size]:
    """Each box's rendition size, as shown and in the file's own axes."""
    out = []
    for box in boxes:
        w, h = fit_size(opened.info.width, opened.info.height, box)
        out.append(_Size((w, h), (h, w) if opened.orientation >= 5 else (w, h)))
    return out


def _rotate(im: Image.Image, orientation: int) -> Image.Image:
    return im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im


# ---------------------------------------------------------------------------------------------
# 4. Resize: working mode, box reduce (band by band), then one Lanczos pass


def _working_mode(im: Image.Image) -> tuple[str, Callable[[Image.Image], Image.Image] | None]:
    """The mode we resample in and the conversion that gets there (None: already there).

    Alpha is resampled premultiplied (RGBa/La), or transparent pixels bleed dark fringes.
    CMYK is resampled as CMYK and converted to sRGB on the small result.
    """
    mode, tkey = im.mode, "transparency" in im.info
    if mode in ("RGBA", "LA") and _opaque(im):  # an alpha channel that is 255 everywhere
        return ("RGB" if mode == "RGBA" else "L"), (lambda x: x.convert(mode[:-1]))
    if mode == "RGBA":
        return "RGBa", lambda x: x.convert("RGBa")
    if mode == "LA":
        return "La", lambda x: x.convert("La")
    if (mode in ("RGB", "L", "P") and tkey) or mode == "PA":
        return "RGBa", lambda x: x.convert("RGBA").convert("RGBa")
    if mode in ("RGB", "L", "CMYK"):
        return mode, None
    if mode == "1":
        return "L", lambda x: x.convert("L")
    if mode.startswith("I") or mode == "F":
        return "L", _to_8bit_grey
    if mode == "LAB":
        return "RGB", lambda x: ImageCms.applyTransform(x, _lab_transform())  # type: ignore[return-value]
    return "RGB", lambda x: x.convert("RGB")  # P, RGBX, YCbCr, HSV, ...


def _frame_working_mode(frame: Image.Image) -> tuple[str, Callable[[Image.Image], Image.Image] | None]:
    # GIF frames after the first are RGB(A) already; a "transparency" left in info is a palette
    # index that no longer applies, so decide from the mode alone.
    return _working_mode(frame) if frame.mode in ("P", "L", "LA", "RGBA") else ("RGB", None)


def _to_8bit_grey(im: Image.Image) -> Image.Image:
    if im.mode == "F":
        hi = _extrema(im)[1]
        scale = 255.0 if hi <= 1.0 else 1.0  # floats are usually 0..1
        return im.point(lambda v: v * scale).convert("L")
    if im.mode != "I":
        im = im.convert("I")
    hi = _extrema(im)[1]
    return im.point(lambda v: v / 257).convert("L") if hi > 255 else im.convert("L")


def _extrema(band: Image.Image) -> tuple[float, float]:
    """(min, max) of a one-band image (Pillow types getextrema() for every mode at once)."""
    return cast(tuple[float, float], band.getextrema())


def _map[T, R](fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``map`` on a small thread pool (Pillow releases the GIL while it converts and resamples).

    Only the calling thread submits work, never a task, so the pool cannot deadlock.
    """
    global _POOL
    if WORKERS < 2 or len(items) < 2:
        return map(fn, items)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="imaging")
    return _POOL.map(fn, items)


def _bands(height: int, rows: int) -> list[tuple[int, int]]:
    return [(y, min(height, y + rows)) for y in range(0, height, rows)]


def _band_rows(width: int, factor: int) -> int:
    return max(factor, (BAND_BYTES // max(1, width * 4)) // factor * factor)


def _opaque(im: Image.Image) -> bool:
    """True when every alpha value is at least OPAQUE_ALPHA (checked band by band, in parallel)."""
    w, h = im.size
    last = len(im.getbands()) - 1
    lows = _map(
        lambda b: _extrema(im.crop((0, b[0], w, b[1])).getchannel(last))[0], _bands(h, _band_rows(w, 1))
    )
    return min(lows) >= OPAQUE_ALPHA


def _reduce_towards(src: Image.Image, size: tuple[int, int], box: Box,
                    working: tuple[str, Callable[[Image.Image], Image.Image] | None]
                    ) -> tuple[Image.Image, Box]:  # fmt: skip
    """First stage of a fit: box-reduce ``src`` (``box`` is its valid area) towards ``size``,
    leaving REDUCE_GAP of headroom; returns the reduced image in working mode and its valid box."""
    mode, convert = working
    tw, th = size
    bw, bh = box[2], box[3]
    room = min(bw / tw, bh / th)
    gap = LARGE_REDUCE_GAP if src.width * src.height * 4 > WORK_BYTES else REDUCE_GAP
    factor = max(1, int(room / gap))
    bpp = 4 if mode in ("RGBa", "CMYK") else len(mode)
    # Never hold a converted full-size copy over the budget: reduce harder first.
    while convert and src.width * src.height * bpp // factor**2 > WORK_BYTES and factor * 2 <= room:
        factor *= 2
    reduced = _reduce(src, factor, convert, mode)
    return reduced, (0.0, 0.0, bw / factor, bh / factor)


def _reduce(src: Image.Image, factor: int, convert: Callable[[Image.Image], Image.Image] | None,
            mode: str) -> Image.Image:  # fmt: skip
    """Box-reduce by ``factor`` in the working mode, converting band by band (bounded memory)."""
    if convert is None and factor == 1:
        return src
    w, h = src.size
    bands = _bands(h, _band_rows(w, factor))
    if len(bands) == 1:
        out = convert(src) if convert else src
        return out.reduce(factor) if factor > 1 else out

    def work(band: tuple[int, int]) -> Image.Image:
        if convert is None:
            return src.reduce(factor, box=(0, band[0], w, band[1]))
        part = convert(src.crop((0, band[0], w, band[1])))
        return part.reduce(factor) if factor > 1 else part

    out = Image.new(mode, (-(-w // factor), -(-h // factor)), None)
    for band, part in zip(bands, _map(work, bands), strict=True):
        out.paste(part, (0, band[0] // factor))
    return out


def _free_source(
    src: Image.Image, im: ImageFile.ImageFile, reduced: Sequence[tuple[Image.Image, Box]]
) -> None:
    """Free the full-size pixels before the Lanczos passes and the encoders need memory.

    A reduced image that *is* the source keeps it alive (then the source is small anyway).
    """
    big = src.width * src.height > 8_000_000
    if all(image is not src for image, _ in reduced):
        src.close()
        im.close()
    if big:
        _release_memory()


@lru_cache(maxsize=1)
def _libc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _release_memory() -> None:
    """Hand freed full-size buffers back to the OS (glibc keeps them otherwise), so the encoders,
    which run on pool threads with their own malloc arenas, do not stack on top of them."""
    if trim := _libc_trim():
        trim(0)


def _resize_colour_rotate(reduced: Image.Image, rbox: Box, size: tuple[int, int], icc: bytes | None,
                          orientation: int) -> Image.Image:  # fmt: skip
    """Steps 4-5 on a reduced image, for stills and animation frames alike: the Lanczos pass to
    ``size`` (file axes), the ICC profile to sRGB, then the EXIF orientation (all on few pixels)."""
    return _rotate(_to_srgb(_lanczos_to(reduced, size, rbox), icc), orientation)


def _lanczos_to(reduced: Image.Image, size: tuple[int, int], rbox: Box) -> Image.Image:
    """Second stage of a fit: the Lanczos pass to the exact size (skipped when already there)."""
    if reduced.size == size and rbox[2] == size[0] and rbox[3] == size[1]:
        return reduced.copy()
    return _lanczos(reduced, size, rbox)


def _lanczos(im: Image.Image, size: tuple[int, int], box: Box) -> Image.Image:
    """Lanczos resize, split into horizontal stripes of output rows across the pool.

    Pillow's resampler reads source pixels outside ``box`` for the kernel's support, so the
    stripes are identical to one whole resize.
    """
    tw, th = size
    stripes = WORKERS if th >= 64 and tw * th >= 40_000 else 1
    if stripes > 1:  # and enough stripes that each one's intermediate stays near BAND_BYTES
        stripes = min(th // 16, max(stripes, tw * int(box[3] - box[1]) * 4 // BAND_BYTES))
    if stripes == 1:
        return im.resize(size, Image.Resampling.LANCZOS, box=box)
    x0, y0, x1, y1 = box
    step = (y1 - y0) / th
    cuts = [th * i // stripes for i in range(stripes + 1)]
    spans = list(itertools.pairwise(cuts))
    parts = _map(lambda c: im.resize((tw, c[1] - c[0]), Image.Resampling.LANCZOS,
                                     box=(x0, y0 + c[0] * step, x1, y0 + c[1] * step)), spans)  # fmt: skip
    out = Image.new(im.mode, size, None)  # no fill: every row is pasted
    for (top, _), part in zip(spans, parts, strict=True):
        out.paste(part, (0, top))
    return out


# ---------------------------------------------------------------------------------------------
# 5. Colour: working mode to an output mode in sRGB, on the small result


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def _lab_transform() -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), _srgb(), "LAB", "RGB")


@lru_cache(maxsize=16)
def _icc_transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform from an embedded profile to sRGB; None when it is sRGB or unusable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        description = (profile.profile.profile_description or "").lower()
    except Exception:
        return None  # a broken profile is ignored, as browsers do
    if space != {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"}.get(in_mode):
        return None
    if space == "RGB" and "srgb" in description:
        return None
    flags = ImageCms.Flags.BLACKPOINTCOMPENSATION
    if in_mode == "RGBA":
        flags |= ImageCms.Flags.COPY_ALPHA
    try:
        return ImageCms.buildTransform(profile, _srgb(), in_mode, out_mode,
                                       ImageCms.Intent.RELATIVE_COLORIMETRIC, flags)  # fmt: skip
    except Exception:
        return None


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Working mode -> output mode (RGB, RGBA, L, LA) in sRGB, on the small rendition."""
    if im.mode in ("RGBa", "La"):
        im = im.convert(im.mode.upper())
    if im.mode == "CMYK":
        transform = _icc_transform(icc, "CMYK", "RGB") if icc else None
        # Without a profile, Pillow's multiplicative CMYK -> RGB, the same as browsers show.
        return ImageCms.applyTransform(im, transform) if transform else im.convert("RGB")  # type: ignore[return-value]
    if icc and im.mode in ("RGB", "RGBA") and (transform := _icc_transform(icc, im.mode, im.mode)):
        return ImageCms.applyTransform(im, transform)  # type: ignore[return-value]
    return im


# ---------------------------------------------------------------------------------------------
# 6. Encode: nothing but pixels leaves


def _encode_rendition(small: Image.Image, shown: tuple[int, int], alternates: Sequence[str] = ()) -> Encoded:
    payload, fmt = _encode(_encode_still, small)
    wanted = [name for name in dict.fromkeys(alternates) if name != fmt.name]
    # One after the other: libavif uses every core itself, and two encoders at once on the pool made
    # its output nondeterministic (and 1.8x larger) in our measurements.
    others = [_encode(functools.partial(_encode_alternate, name=name), small) for name in wanted]
    smaller = tuple(
        Encoded(data, shown[0], shown[1], formats.BY_NAME[name])
        for name, data in zip(wanted, others, strict=True)
        if len(data) < len(payload)
    )
    return Encoded(payload, shown[0], shown[1], fmt, animated=False, frames=1, alternates=smaller)


def _encode_alternate(im: Image.Image, name: str) -> bytes:
    """A still rendition's pixels (already stripped of metadata) as lossy WebP or AVIF."""
    im.info = {}
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if im.mode == "LA" and _has_alpha(im) else "RGB")
    elif im.mode == "RGBA" and not _has_alpha(im):
        im = im.convert("RGB")
    large = im.width * im.height > AVIF_FAST_PIXELS
    quality = (ALTERNATE_QUALITY_LARGE if large else ALTERNATE_QUALITY)[name]
    if name == "WEBP":
        return _save(im, "WEBP", quality=quality, method=WEBP_METHOD, alpha_quality=100, exact=False)
    if name == "AVIF":
        return _save(im, "AVIF", quality=quality, speed=AVIF_FAST_SPEED if large else AVIF_SPEED)
    raise ValueError(f"no alternate encoder for {name}")


def _encode[T](encoder: Callable[[Image.Image], T], im: Image.Image) -> T:
    """Encoding valid pixels should not fail; if it does, that is our bug, not a corrupt upload."""
    try:
        return encoder(im)
    except Exception as exc:
        raise _err("internal_error", f"Encoding the rendition failed ({type(exc).__name__}: {exc}).") from exc


def _encode_still(im: Image.Image) -> tuple[bytes, Format]:
    im.info = {}  # resize() copies info (ICC, EXIF, XMP, comments); nothing leaves with the pixels
    if _has_alpha(im):
        # Both lossless, so the same quality: keep the smaller. Efforts measured on the corpus's
        # transparent wallpapers: WebP method 1 is 27% smaller than PNG level 6 and wins nearly
        # always; PNG level 3 costs a third of level 6 for 15% more bytes, and the two run in
        # parallel, so the slower of them (the WebP) sets the time.
        png, webp = _map(lambda fmt: _save(im, "PNG", compress_level=3) if fmt == "PNG" else
                         _save(im.convert("RGBA"), "WEBP", lossless=True, quality=20, method=1),
                         ["PNG", "WEBP"])  # fmt: skip
        return (webp, formats.BY_NAME["WEBP"]) if len(webp) < len(png) else (png, formats.BY_NAME["PNG"])
    if im.mode not in ("RGB", "L"):
        im = im.convert("L" if im.mode == "LA" else "RGB")
    return _save(im, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True), formats.BY_NAME["JPEG"]


def _placeholder(out: Sequence[Encoded]) -> str:
    """The placeholder (mean colour, few-pixel preview) from the smallest rendition's pixels."""
    smallest = min(out, key=lambda e: e.width * e.height)
    with Image.open(io.BytesIO(smallest.data)) as im:
        im.draft("RGB", (placeholder.MAX_SIDE * 8, placeholder.MAX_SIDE * 8))
        im.load()
        return placeholder.make(im)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA") and _extrema(im.getchannel("A"))[0] < OPAQUE_ALPHA


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


class _AnimationEncoder:
    """One animated WebP rendition: frames go in one at a time, no frame lists in memory."""

    def __init__(self, im: ImageFile.ImageFile, size: tuple[int, int]) -> None:
        from PIL import _webp  # Pillow's animation encoder

        loop = im.info.get("loop")
        loop = 1 if loop is None else int(loop)  # GIF without a NETSCAPE block plays once
        self.size = size
        self.encoder = _webp.WebPAnimEncoder(size, 0, loop, False, 3, 5, False, False)
        self.timestamp, self.count = 0, 0

    def add(self, frame: Image.Image, duration: int) -> None:
        self.encoder.add(frame.convert("RGBA").getim(), self.timestamp, False, WEBP_QUALITY, 100, 4)
        self.timestamp += duration
        self.count += 1

    def finish(self) -> Encoded:
        self.encoder.add(None, self.timestamp, False, WEBP_QUALITY, 100, 0)
        payload = self.encoder.assemble(b"", b"", b"")
        return Encoded(
            payload, *self.size, formats.BY_NAME["WEBP"], animated=self.count > 1, frames=self.count
        )
