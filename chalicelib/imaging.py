"""Bytes in, renditions out: sniff, check limits, decode once, orient, colour-manage, resize, encode.

No AWS here. The policy is in DESIGN.md ("Image policy"); docs/imaging.md has the measurements
behind the numbers below (JPEG quality, reducing gaps) and the per-case decisions on damaged files.

Memory is bounded on purpose: limits are checked from the header before any pixel is decoded,
JPEGs are decoded at reduced scale, mode conversions run band by band on the reduced image,
and animation frames stream straight into the encoders instead of piling up in lists.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageCms, ImageFile, features

from .errors import ImageshelfError, too_large
from .timing import Stopwatch

# ---------------------------------------------------------------------------------------------
# Tunables (measured; see docs/imaging.md)

JPEG_QUALITY = 82  # lowest quality whose median SSIM on the bench corpus reaches 0.98 at 400 px
WEBP_QUALITY = 82  # animated renditions (lossy WebP with alpha)
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

CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
if features.check("avif"):
    CONTENT_TYPES["AVIF"] = "image/avif"
_PILLOW_FORMATS = {"JPEG": ["JPEG"], "MPO": ["JPEG"]}  # MPO (phone cameras) is a JPEG to users
ANIMATABLE = {"GIF", "WEBP", "PNG"}  # GIF, animated WebP, APNG -> animated WebP renditions
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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


@dataclass(frozen=True)
class Rendition:
    data: bytes
    width: int
    height: int
    content_type: str
    extension: str
    animated: bool = False
    frames: int = 1  # frames in this rendition; 1 with SourceInfo.frames > 1 means "first frame only"


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
# Sniffing and header limits


def _err(code: str, message: str) -> ImageshelfError:
    return ImageshelfError(code, message)


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _sniff(data: bytes) -> tuple[str | None, str | None]:
    """(allowed Pillow format, None) or (None, name of a refused format) or (None, None)."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG", None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", None
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "TIFF", None
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (
        12, 16, 40, 52, 56, 64, 108, 124):  # fmt: skip
        return "BMP", None
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis") and "AVIF" in CONTENT_TYPES:
            return "AVIF", None
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif",
                     b"avis"):  # fmt: skip
            return None, "HEIF/AVIF" if brand.startswith(b"av") else "HEIC"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for magic, name in (
        (b"%pdf", "PDF"), (b"%!ps", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"8bps", "PSD"),
        (b"\0\0\1\0", "ICO"), (b"\0\0\2\0", "CUR"), (b"icns", "ICNS"), (b"qoif", "QOI"), (b"dds ", "DDS"),
        (b"\xff\x0a", "JPEG XL"), (b"\0\0\0\x0cjxl ", "JPEG XL"), (b"\0\0\0\x0cjp  ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"gimp xcf", "XCF"), (b"v/1\x01", "OpenEXR"),
        (b"#?radiance", "HDR"),
    ):  # fmt: skip
        if text.startswith(magic):
            return None, name
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return None, "SVG"
    return None, None


def _identify_other(data: bytes) -> str | None:
    """Name a format Pillow recognises but we refuse (TGA, PCX, ...), header parse only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.format
    except Exception:
        return None


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


def _frames(im: ImageFile.ImageFile, fmt: str, data: bytes, cap: int) -> int:
    if fmt == "GIF":
        return max(1, _gif_frames(data, cap))
    if fmt == "TIFF":
        return _tiff_pages(data, cap)
    return int(getattr(im, "n_frames", 1) or 1)


def _orientation(im: ImageFile.ImageFile) -> int:
    """EXIF orientation 1-8 from the header; anything invalid or unreadable counts as 1."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # reading a late eXIf chunk would decode the pixels; render() looks again later
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = im.getexif().get(0x0112)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _jpeg_coef_bytes(im: ImageFile.ImageFile) -> int:
    """Bytes libjpeg needs for the coefficient buffers of a progressive JPEG (0 for baseline)."""
    if not (im.info.get("progressive") or im.info.get("progression")):
        return 0
    layers = getattr(im, "layer", None) or [("", 1, 1, 0)] * len(im.getbands())
    hmax = max(layer[1] for layer in layers) or 1
    vmax = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        bw = -(-im.width * h // (8 * hmax))
        bh = -(-im.height * v // (8 * vmax))
        total += bw * bh * 128
    return total


@dataclass
class _Opened:
    im: ImageFile.ImageFile
    info: SourceInfo
    orientation: int


def _open(data: bytes, limits: Limits) -> _Opened:
    if not data:
        raise _err("empty_file", "The file is empty (0 bytes).")
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits.max_bytes)
    fmt, refused = _sniff(data)
    if fmt is None:
        refused = refused or _identify_other(data)
        if refused:
            raise _err(
                "unsupported_format",
                f"{refused} files are not supported; upload {', '.join(CONTENT_TYPES)} instead.",
            )
        raise _err("not_an_image", "The file is not an image (its bytes match no image format).")
    if fmt == "WEBP" and (canvas := _webp_canvas(data)):
        _check_pixels(*canvas, 1, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: our own limit applies below
            im = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS.get(fmt, [fmt]))
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
        animated = fmt in ANIMATABLE and frames > 1
        _check_pixels(w, h, frames if animated else 1, limits)
        if fmt == "JPEG" and (coef := _jpeg_coef_bytes(im)) > MAX_JPEG_COEF_BYTES:
            raise _err(
                "too_many_pixels",
                f"The image is a {w}x{h} progressive JPEG whose decoding needs {coef // 2**20} MB; "
                f"the limit is {MAX_JPEG_COEF_BYTES // 2**20} MB. Save it as a baseline JPEG or smaller.",
            )
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
    fmt = "JPEG" if fmt == "MPO" else fmt
    return _Opened(im, SourceInfo(fmt, CONTENT_TYPES[fmt], w, h, frames), orientation)


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


def inspect(data: bytes, limits: Limits = Limits()) -> SourceInfo:
    """Sniff the type and check every limit from the header, without decoding pixels.

    Raises ImageshelfError (empty_file, file_too_large, not_an_image, unsupported_format,
    corrupt_image, too_many_pixels, too_many_frames).
    """
    opened = _open(data, limits)
    opened.im.close()
    return opened.info


# ---------------------------------------------------------------------------------------------
# Decoding


class _WebPScaled:
    """libwebp's own scaled decoding (the library Pillow bundles), for still WebPs.

    Pillow decodes a WebP at full size through the animation decoder, which holds the canvas
    twice plus two copies of the pixels (about 16 bytes per pixel). libwebp can rescale while it
    decodes, row by row, so a 25 MP WebP costs a few MB and decodes faster. Optional: if the
    library or its ABI is not what we expect, Pillow's path is used.
    """

    def __init__(self) -> None:
        import ctypes
        import glob

        libs = os.path.join(os.path.dirname(os.path.dirname(Image.__file__)), "pillow.libs")
        found = sorted(glob.glob(os.path.join(libs, "libwebp-*.so*")))
        self.lib = ctypes.CDLL(found[0]) if found else None
        c = ctypes
        ints = lambda *names: tuple((n, c.c_int) for n in names)  # noqa: E731
        features = type(
            "Features",
            (c.Structure,),
            {
                "_fields_": (
                    *ints("width", "height", "has_alpha", "has_animation", "format"),
                    ("pad", c.c_uint32 * 5),
                )
            },
        )
        rgba = type(
            "RGBA",
            (c.Structure,),
            {"_fields_": (("rgba", c.c_void_p), ("stride", c.c_int), ("size", c.c_size_t))},
        )
        yuva = type(
            "YUVA",
            (c.Structure,),
            {
                "_fields_": (
                    *((n, c.c_void_p) for n in "yuva"),
                    *ints("ys", "us", "vs", "as"),
                    *((n, c.c_size_t) for n in ("yz", "uz", "vz", "az")),
                )
            },
        )
        union = type("U", (c.Union,), {"_fields_": (("RGBA", rgba), ("YUVA", yuva))})
        buffer = type(
            "Buffer",
            (c.Structure,),
            {
                "_fields_": (
                    *ints("colorspace", "width", "height", "is_external_memory"),
                    ("u", union),
                    ("pad", c.c_uint32 * 4),
                    ("private_memory", c.c_void_p),
                )
            },
        )
        options = type(
            "Options",
            (c.Structure,),
            {
                "_fields_": (
                    *ints(
                        "bypass_filtering",
                        "no_fancy_upsampling",
                        "use_cropping",
                        "crop_left",
                        "crop_top",
                        "crop_width",
                        "crop_height",
                        "use_scaling",
                        "scaled_width",
                        "scaled_height",
                        "use_threads",
                        "dithering_strength",
                        "flip",
                        "alpha_dithering_strength",
                    ),
                    ("pad", c.c_uint32 * 5),
                )
            },
        )
        Config = type("Config", (c.Structure,), {"_fields_": (
            ("input", features), ("output", buffer), ("options", options))})  # fmt: skip
        self.Config = Config
        self.ctypes = c

    def decode(self, data: bytes, size: tuple[int, int], alpha: bool) -> Image.Image | None:
        """Decode ``data`` rescaled to ``size`` (RGB or RGBA), or None if libwebp is unusable."""
        c, lib = self.ctypes, self.lib
        if lib is None:
            return None
        config = self.Config()
        if not lib.WebPInitDecoderConfigInternal(c.byref(config), 0x0209):  # WEBP_DECODER_ABI_VERSION
            return None
        mode, bpp = ("RGBA", 4) if alpha else ("RGB", 3)
        out = c.create_string_buffer(size[0] * size[1] * bpp)
        config.options.use_scaling, config.options.scaled_width, config.options.scaled_height = 1, *size
        config.output.colorspace = 1 if alpha else 0  # MODE_RGBA / MODE_RGB
        config.output.is_external_memory = 1
        config.output.u.RGBA.rgba = c.cast(out, c.c_void_p)
        config.output.u.RGBA.stride = size[0] * bpp
        config.output.u.RGBA.size = len(out)
        status = lib.WebPDecode(data, c.c_size_t(len(data)), c.byref(config))
        if status != 0:
            raise OSError(f"libwebp could not decode the image (VP8 status {status})")
        return Image.frombuffer(mode, size, out, "raw", mode, 0, 1)


@lru_cache(maxsize=1)
def _webp_scaled() -> _WebPScaled | None:
    try:
        return _WebPScaled()
    except Exception:
        return None


_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the first marker after entropy-coded data


def _dc_only(im: ImageFile.ImageFile, data: bytes, want: tuple[int, int]) -> ImageFile.ImageFile | None:
    """For a progressive JPEG decoded at 1/8 scale, reopen it without most of its AC scans.

    At 1/8 libjpeg's IDCT uses only the DC coefficient, so the AC refinement scans (most of the
    file) are decoded for nothing; dropping them decodes 2-4x faster with the same picture.
    """
    if im.decoderconfig[:1] != (8,) or not im.info.get("progressive"):
        return None
    parts, pos, end = [data[:2]], 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            break
        seg_end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker != 0xDA:
            parts.append(data[pos:seg_end])
            pos = seg_end
            continue
        spectral_start, approx_high = data[seg_end - 3], data[seg_end - 1] >> 4  # Ss, Se, Ah/Al
        match = _SCAN_END.search(data, seg_end)
        scan_end = match.start() if match else end
        # Keep the DC scans and the first pass of the lowest AC band: with no AC data at all,
        # libjpeg-turbo's block smoothing would visibly adjust the DC values. What remains is
        # its mild smoothing of partly known blocks: pixel-identical on every corpus photo,
        # within a few levels on synthetic noise.
        if spectral_start == 0 or (spectral_start == 1 and approx_high == 0):
            parts.append(data[pos:scan_end])
        pos = scan_end
    parts.append(b"\xff\xd9")
    try:
        reopened = Image.open(io.BytesIO(b"".join(parts)), formats=["JPEG"])
        reopened.draft(None, want)
    except Exception:
        return None
    if reopened.size != im.size or reopened.decoderconfig[:1] != (8,):
        return None
    return reopened


def _load(im: ImageFile.ImageFile, data: bytes, fmt: str, want: tuple[int, int] | None) -> Image.Image:
    """Decode the first frame, strictly; a JPEG that only lost its tail may be rescued."""
    try:
        im.load()
        return im
    except Exception as exc:
        if fmt != "JPEG" or data.endswith(b"\xff\xd9"):
            raise _corrupt(fmt, exc) from None
        first_error = exc
    # The upload stopped before the JPEG's end marker. Decode what arrived: a progressive JPEG
    # shows the whole picture (only later refinement is lost), a baseline one fills the missing
    # rows with flat grey, which we detect and refuse.
    retry = Image.open(io.BytesIO(data + b"\xff\xd9"), formats=["JPEG"])
    if want:
        retry.draft(None, want)
    try:
        retry.load()
    except Exception:
        raise _corrupt(fmt, first_error) from None
    last_row = retry.crop((0, retry.height - 1, retry.width, retry.height)).getextrema()
    bands = last_row if isinstance(last_row[0], tuple) else (last_row,)
    if all(lo == hi and lo in (127, 128) for lo, hi in bands):  # type: ignore[union-attr]
        raise _err("corrupt_image", "The JPEG is truncated: the bottom of the picture is missing. "
                   "Upload the complete file.")  # fmt: skip
    return retry


def _corrupt(fmt: str, exc: BaseException) -> ImageshelfError:
    detail = str(exc).split(" (")[0][:120] or type(exc).__name__
    return _err("corrupt_image", f"The {fmt} image is damaged or truncated and cannot be decoded ({detail}).")


# ---------------------------------------------------------------------------------------------
# Pixels: working modes, reduce, resize, colour


def _to_8bit_grey(im: Image.Image) -> Image.Image:
    if im.mode == "F":
        hi = im.getextrema()[1]
        scale = 255.0 if hi <= 1.0 else 1.0  # floats are usually 0..1
        return im.point(lambda v: v * scale).convert("L")
    if im.mode != "I":
        im = im.convert("I")
    hi = im.getextrema()[1]
    return im.point(lambda v: v / 257).convert("L") if hi > 255 else im.convert("L")  # type: ignore[operator]


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
    lows = _map(lambda b: im.crop((0, b[0], w, b[1])).getchannel(last).getextrema()[0],
                _bands(h, _band_rows(w, 1)))  # fmt: skip
    return min(lows) >= OPAQUE_ALPHA  # type: ignore[type-var,operator]


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


def _lanczos(im: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
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


def _shrink(src: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float],
            working: tuple[str, Callable[[Image.Image], Image.Image] | None]
            ) -> tuple[Image.Image, tuple[float, float, float, float]]:  # fmt: skip
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


def _finish(reduced: Image.Image, size: tuple[int, int], rbox: tuple[float, ...]) -> Image.Image:
    """Second stage: the Lanczos pass to the exact size (skipped when already there)."""
    if reduced.size == size and rbox[2] == size[0] and rbox[3] == size[1]:
        return reduced.copy()
    return _lanczos(reduced, size, rbox)


def _resize(src: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float],
            working: tuple[str, Callable[[Image.Image], Image.Image] | None]) -> Image.Image:  # fmt: skip
    """Fit ``src`` to ``size`` in working mode (both stages)."""
    reduced, rbox = _shrink(src, size, box, working)
    return _finish(reduced, size, rbox)


@lru_cache(maxsize=1)
def _libc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _release_memory() -> None:
    """Hand freed full-size buffers back to the OS (glibc keeps them otherwise), so the encoders,
    which run on pool threads with their own malloc arenas, do not stack on top of them."""
    if trim := _libc_trim():
        trim(0)


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
# Encoding


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] < OPAQUE_ALPHA


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _encode[T](encoder: Callable[[Image.Image], T], im: Image.Image) -> T:
    """Encoding valid pixels should not fail; if it does, that is our bug, not a corrupt upload."""
    try:
        return encoder(im)
    except Exception as exc:
        raise _err("internal_error", f"Encoding the rendition failed ({type(exc).__name__}: {exc}).") from exc


def _encode_still(im: Image.Image) -> tuple[bytes, str, str]:
    im.info = {}  # resize() copies info (ICC, EXIF, XMP, comments); nothing leaves with the pixels
    if _has_alpha(im):
        # Both lossless, so the same quality: keep the smaller. Efforts measured on the corpus's
        # transparent wallpapers: WebP method 1 is 27% smaller than PNG level 6 and wins nearly
        # always; PNG level 3 costs a third of level 6 for 15% more bytes, and the two run in
        # parallel, so the slower of them (the WebP) sets the time.
        png, webp = _map(lambda fmt: _save(im, "PNG", compress_level=3) if fmt == "PNG" else
                         _save(im.convert("RGBA"), "WEBP", lossless=True, quality=20, method=1),
                         ["PNG", "WEBP"])  # fmt: skip
        return (webp, "image/webp", "webp") if len(webp) < len(png) else (png, "image/png", "png")
    if im.mode not in ("RGB", "L"):
        im = im.convert("L" if im.mode == "LA" else "RGB")
    return _save(im, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True), "image/jpeg", "jpg"


# ---------------------------------------------------------------------------------------------
# Entry points


def render(data: bytes, boxes: Sequence[tuple[int, int]], limits: Limits = Limits(),
           timings: dict[str, float] | None = None) -> tuple[SourceInfo, list[Rendition]]:  # fmt: skip
    """Decode ``data`` once and return one rendition per box, in the order of ``boxes``.

    Each rendition fits its box keeping aspect ratio and is never enlarged; EXIF orientation is
    applied, colours converted to sRGB, all metadata dropped. Opaque images become progressive
    JPEG, transparent ones PNG or lossless WebP (the smaller), animated GIF/WebP/APNG animated WebP.
    Every refusal is an ImageshelfError with a stable code. ``timings``, if given, receives the
    milliseconds spent to ``decode``, ``resize`` and ``encode`` (an animation's frames are decoded
    and fed to the encoder while they are resized, so that time counts as ``resize``).
    """
    if not boxes:
        raise ValueError("render() needs at least one box")
    clock = Stopwatch(timings)
    with clock("decode"):
        opened = _open(data, limits)
    im, info = opened.im, opened.info
    try:
        if info.frames > 1 and info.format in ANIMATABLE and (getattr(im, "is_animated", False)):
            return info, _render_animation(opened, boxes, clock)
        return _render_still(opened, data, boxes, clock)
    except ImageshelfError:
        raise
    except (MemoryError, Image.DecompressionBombError) as exc:
        raise _err("corrupt_image", f"The image could not be decoded within memory limits ({exc}).") from None
    except Exception as exc:
        raise _corrupt(info.format, exc) from None
    finally:
        im.close()


def _render_still(opened: _Opened, data: bytes, boxes: Sequence[tuple[int, int]], clock: Stopwatch
                  ) -> tuple[SourceInfo, list[Rendition]]:  # fmt: skip
    im, info, orient = opened.im, opened.info, opened.orientation
    sizes = [fit_size(info.width, info.height, box) for box in boxes]
    stored = [(h, w) if orient >= 5 else (w, h) for w, h in sizes]  # sizes in the file's own axes
    full_w, full_h = im.size
    box: tuple[float, float, float, float] = (0.0, 0.0, float(full_w), float(full_h))
    want = None
    src = None
    if info.format == "WEBP" and (decoder := _webp_scaled()):
        # Rescale while decoding; leave DRAFT_GAP of headroom for the Lanczos pass, as for JPEG.
        big = max(stored)
        scale = min(1.0, DRAFT_GAP * big[0] / full_w, DRAFT_GAP * big[1] / full_h)
        if scale < 1.0:
            target = (max(1, round(full_w * scale)), max(1, round(full_h * scale)))
            src = decoder.decode(data, target, alpha=im.mode == "RGBA")
            if src is not None:
                src.info = dict(im.info)
                box = (0.0, 0.0, float(target[0]), float(target[1]))
    if info.format == "JPEG":
        want = (int(max(s[0] for s in stored) * DRAFT_GAP), int(max(s[1] for s in stored) * DRAFT_GAP))
        if (drafted := im.draft(None, want)) is not None:
            box = drafted[1]
            im = _dc_only(im, data, want) or im
    if src is None:
        with warnings.catch_warnings(), clock("decode"):
            warnings.simplefilter("ignore")
            src = _load(im, data, info.format, want)
    icc = src.info.get("icc_profile")
    if info.format == "PNG" and orient == 1 and "exif" in src.info:
        orient = _orientation(src)  # eXIf after the pixel data: only known now
        if orient >= 5:
            info = SourceInfo(info.format, info.content_type, info.height, info.width, info.frames)
            sizes = [fit_size(info.width, info.height, b) for b in boxes]
            stored = [(h, w) for w, h in sizes]
    working = _working_mode(src)
    with clock("resize"):
        shrunk = [_shrink(src, stored_size, box, working) for stored_size in stored]
    # Free the full-size pixels before the Lanczos passes and the encoders need memory (a reduced
    # image that *is* the source keeps it alive; then the source is small anyway).
    big = src.width * src.height > 8_000_000
    if all(reduced is not src for reduced, _ in shrunk):
        src.close()
        im.close()
    del src
    if big:
        _release_memory()
    out = []
    for size, stored_size, (reduced, rbox) in zip(sizes, stored, shrunk, strict=True):
        with clock("resize"):
            small = _to_srgb(_finish(reduced, stored_size, rbox), icc)
            if orient in _TRANSPOSE:
                small = small.transpose(_TRANSPOSE[orient])
        with clock("encode"):
            payload, ctype, ext = _encode(_encode_still, small)
        out.append(Rendition(payload, size[0], size[1], ctype, ext, animated=False, frames=1))
    return info, out


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


def _render_animation(opened: _Opened, boxes: Sequence[tuple[int, int]], clock: Stopwatch) -> list[Rendition]:
    """Every frame resized for every box in one pass, streamed into one WebP encoder per box."""
    from PIL import _webp  # Pillow's animation encoder: frames go in one at a time, no frame lists

    im, info, orient = opened.im, opened.info, opened.orientation
    sizes = [fit_size(info.width, info.height, box) for box in boxes]
    loop = im.info.get("loop")
    loop = 1 if loop is None else int(loop)  # GIF without a NETSCAPE block plays once
    encoders = [_webp.WebPAnimEncoder(s, 0, loop, False, 3, 5, False, False) for s in sizes]
    timestamp, count = 0, 0
    with warnings.catch_warnings(), clock("resize"):
        warnings.simplefilter("ignore")
        for frame, duration in _iter_frames(im, info.frames):
            icc = frame.info.get("icc_profile")
            # GIF frames after the first are RGB(A) already; a "transparency" left in info is a
            # palette index that no longer applies, so decide from the mode alone.
            working = _working_mode(frame) if frame.mode in ("P", "L", "LA", "RGBA") else ("RGB", None)
            for enc, size in zip(encoders, sizes, strict=True):
                stored = (size[1], size[0]) if orient >= 5 else size
                small = _to_srgb(_resize(frame, stored, (0.0, 0.0, *map(float, frame.size)), working), icc)
                if orient in _TRANSPOSE:
                    small = small.transpose(_TRANSPOSE[orient])
                small = small.convert("RGBA")
                enc.add(small.getim(), timestamp, False, WEBP_QUALITY, 100, 4)
            timestamp += duration
            count += 1
    out = []
    for enc, size in zip(encoders, sizes, strict=True):
        with clock("encode"):
            enc.add(None, timestamp, False, WEBP_QUALITY, 100, 0)
            payload = enc.assemble(b"", b"", b"")
        out.append(Rendition(payload, *size, "image/webp", "webp", animated=count > 1, frames=count))
    return out


def fit(data: bytes, box: tuple[int, int], limits: Limits = Limits()) -> Rendition:
    """One rendition of ``data`` fitting ``box``: ``render(data, [box])`` for a single size."""
    return render(data, [box], limits)[1][0]
