"""Shrink on load: decode a JPEG or a still WebP at reduced scale, with the tricks each format allows.

imaging calls one function, :func:`shrink_on_load`. Everything here is an optimisation that
must give the picture a full decode would (within a few levels): when a trick does not apply,
the caller decodes the file itself. The tricks lean on the libraries Pillow bundles (libjpeg-turbo,
libwebp through ctypes); ``tests/test_shrink.py`` pins each assumption, so a Pillow upgrade fails
a test rather than corrupting memory. docs/imaging.md has the measurements.
"""

from __future__ import annotations

import ctypes
import io
import os
import re
from functools import lru_cache

from PIL import Image, ImageFile

Box = tuple[float, float, float, float]  # the valid area of a decoded image, in its own pixels


def shrink_on_load(
    im: ImageFile.ImageFile, data: bytes, fmt: str, want: tuple[float, float]
) -> tuple[Image.Image | None, Box]:
    """Decode ``im`` (opened from ``data``) at the smallest scale that still covers ``want``.

    Returns ``(decoded, box)``: the decoded picture and its valid area, or ``(None, box)`` when
    the caller is to decode ``im`` itself (a JPEG is then set up to decode at reduced scale, and
    ``box`` says at which). Decoding errors of the scaled WebP decoder propagate.
    """
    full = (0.0, 0.0, float(im.width), float(im.height))
    if fmt == "JPEG":
        return _jpeg(im, data, (int(want[0]), int(want[1])), full)
    if fmt == "WEBP":
        return _webp(im, data, want, full)
    return None, full


# ---------------------------------------------------------------------------------------------
# JPEG: libjpeg's DCT scaling (draft), and dropping the scans a 1/8 decode never reads


def _jpeg(
    im: ImageFile.ImageFile, data: bytes, want: tuple[int, int], full: Box
) -> tuple[Image.Image | None, Box]:
    """``draft()`` to the largest of 1/2, 1/4, 1/8 that keeps ``want``; DC scans only at 1/8."""
    drafted = im.draft(None, want)
    if drafted is None:
        return None, full
    box: Box = (0.0, 0.0, float(drafted[1][2]), float(drafted[1][3]))
    dc = _dc_only(im, data, want)
    if dc is not None:
        try:
            dc.load()
            return dc, box
        except Exception:
            dc.close()  # the full scans decide (and the caller's damage rules with them)
    return None, box


_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the first marker after entropy-coded data


def _dc_only(im: ImageFile.ImageFile, data: bytes, want: tuple[int, int]) -> ImageFile.ImageFile | None:
    """For a progressive JPEG decoded at 1/8 scale, reopen it without most of its AC scans.

    At 1/8 libjpeg's IDCT uses only the DC coefficient, so the AC refinement scans (most of the
    file) are decoded for nothing; dropping them decodes 2-4x faster with the same picture.
    Returns the reopened image, drafted to the same scale and not yet decoded, or None.
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
        reopened.close()
        return None
    return reopened


# ---------------------------------------------------------------------------------------------
# WebP: libwebp's own scaled decoding, through the libwebp Pillow's _webp extension loaded
#
# Pillow decodes a WebP at full size through the animation decoder, which holds the canvas twice
# plus two copies of the pixels (about 16 bytes per pixel). libwebp can rescale while it decodes,
# row by row, so a 25 MP WebP costs a few MB and decodes faster. The structs below are those of
# libwebp's src/webp/decode.h for WEBP_DECODER_ABI_VERSION 0x0209 (libwebp 1.1 and later).

WEBP_DECODER_ABI_VERSION = 0x0209
WEBP_MAJOR = 1  # libwebp 1.x: shared object version 7, decoder ABI 2.x
MODE_RGB, MODE_RGBA = 0, 1  # WEBP_CSP_MODE
VP8_STATUS_OK = 0


def _ints(*names: str) -> list[tuple[str, type[ctypes.c_int]]]:
    return [(name, ctypes.c_int) for name in names]


class WebPBitstreamFeatures(ctypes.Structure):
    _fields_ = [
        *_ints("width", "height", "has_alpha", "has_animation", "format"),
        ("pad", ctypes.c_uint32 * 5),
    ]


class WebPRGBABuffer(ctypes.Structure):
    _fields_ = [("rgba", ctypes.c_void_p), ("stride", ctypes.c_int), ("size", ctypes.c_size_t)]


class WebPYUVABuffer(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_void_p) for name in ("y", "u", "v", "a")),
        *_ints("y_stride", "u_stride", "v_stride", "a_stride"),
        *((name, ctypes.c_size_t) for name in ("y_size", "u_size", "v_size", "a_size")),
    ]


class _BufferUnion(ctypes.Union):
    _fields_ = [("RGBA", WebPRGBABuffer), ("YUVA", WebPYUVABuffer)]


class WebPDecBuffer(ctypes.Structure):
    _fields_ = [
        *_ints("colorspace", "width", "height", "is_external_memory"),
        ("u", _BufferUnion),
        ("pad", ctypes.c_uint32 * 4),
        ("private_memory", ctypes.c_void_p),
    ]


class WebPDecoderOptions(ctypes.Structure):
    _fields_ = [
        *_ints("bypass_filtering", "no_fancy_upsampling", "use_cropping", "crop_left", "crop_top",
               "crop_width", "crop_height", "use_scaling", "scaled_width", "scaled_height",
               "use_threads", "dithering_strength", "flip", "alpha_dithering_strength"),
        ("pad", ctypes.c_uint32 * 5),
    ]  # fmt: skip


class WebPDecoderConfig(ctypes.Structure):
    _fields_ = [("input", WebPBitstreamFeatures), ("output", WebPDecBuffer), ("options", WebPDecoderOptions)]


_LIBWEBP_NAME = re.compile(r"libwebp(-[0-9a-f]+)?\.so(\.|$)")  # not libwebpdemux, libwebpmux


def pillow_libwebp() -> str | None:
    """Path of the libwebp that Pillow's ``_webp`` extension has mapped into this process."""
    from PIL import _webp  # noqa: F401  (importing it maps the library)

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and _LIBWEBP_NAME.match(os.path.basename(fields[5].strip())):
                    return fields[5].strip()
    except OSError:
        pass  # not Linux: no scaled decoding, Pillow's path is used
    return None


class LibWebP:
    """The decoding entry points of Pillow's own libwebp, typed for ctypes."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self.path = path
        self.version: int = lib.WebPGetDecoderVersion()  # 0x010600 for 1.6.0
        if self.version >> 16 != WEBP_MAJOR:
            raise OSError(f"libwebp {self.version:#x} is not the 1.x whose structs are declared here")
        self.init_config = lib.WebPInitDecoderConfigInternal
        self.init_config.argtypes = [ctypes.POINTER(WebPDecoderConfig), ctypes.c_int]
        self.init_config.restype = ctypes.c_int
        self.decode_into = lib.WebPDecode
        self.decode_into.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(WebPDecoderConfig)]
        self.decode_into.restype = ctypes.c_int

    def new_config(self) -> WebPDecoderConfig | None:
        """A config initialised by the library, or None if it refuses our ABI version."""
        config = WebPDecoderConfig()
        return config if self.init_config(ctypes.byref(config), WEBP_DECODER_ABI_VERSION) else None

    def decode(self, data: bytes, size: tuple[int, int], alpha: bool) -> Image.Image | None:
        """Decode ``data`` rescaled to ``size`` (RGB or RGBA), or None if the library refuses."""
        config = self.new_config()
        if config is None:
            return None
        mode, bpp = ("RGBA", 4) if alpha else ("RGB", 3)
        out = bytearray(size[0] * size[1] * bpp)
        view = (ctypes.c_char * len(out)).from_buffer(out)  # libwebp writes the rows straight into it
        config.options.use_scaling, config.options.scaled_width, config.options.scaled_height = 1, *size
        config.output.colorspace = MODE_RGBA if alpha else MODE_RGB
        config.output.is_external_memory = 1
        config.output.u.RGBA.rgba = ctypes.cast(view, ctypes.c_void_p)
        config.output.u.RGBA.stride = size[0] * bpp
        config.output.u.RGBA.size = len(out)
        status = self.decode_into(data, len(data), ctypes.byref(config))
        if status != VP8_STATUS_OK:
            raise OSError(f"libwebp could not decode the image (VP8 status {status})")
        return Image.frombuffer(mode, size, out, "raw", mode, 0, 1)


@lru_cache(maxsize=1)
def libwebp() -> LibWebP | None:
    """Pillow's libwebp, or None when it cannot be found or is not the version we know."""
    path = pillow_libwebp()
    if path is None:
        return None
    try:
        return LibWebP(path)
    except (OSError, AttributeError):
        return None


def _webp(
    im: ImageFile.ImageFile, data: bytes, want: tuple[float, float], full: Box
) -> tuple[Image.Image | None, Box]:
    """Rescale while decoding, leaving the same headroom over ``want`` as a JPEG draft."""
    scale = min(1.0, want[0] / im.width, want[1] / im.height)
    if scale >= 1.0 or (lib := libwebp()) is None:
        return None, full
    target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    decoded = lib.decode(data, target, alpha=im.mode == "RGBA")
    if decoded is None:
        return None, full
    decoded.info = dict(im.info)  # ICC profile and EXIF, as Pillow's decode would carry them
    return decoded, (0.0, 0.0, float(target[0]), float(target[1]))
