"""Pixels for on-demand renders and identify: one image in, one output image (or its facts) out.

No storage, no AWS, no HTTP here: ``renders.py`` caches what ``render`` makes and processing stores
what ``identify`` reads. Both reuse the upload pipeline's steps (``imaging.py``) rather than
repeating them: the same open and limits (every refusal before any pixel), the same shrink on
load, box reduce and Lanczos pass, the same sRGB conversion and the same encoders. What this
module adds is the geometry of a request (``fit``, ``gravity``, the box as seen after the
filters' rotations), the filters themselves, the choice of output format, and reading the
camera's EXIF without ever letting GPS coordinates out.

The order of work for a still, each step on as few pixels as it can:

1. ``imaging._open``: sniff, header, every limit.
2. Plan the output: its size, and the part of the source it shows (a cover crop), in the
   source's displayed axes with the filters' rotations undone.
3. ``imaging._decode`` at the scale that plan needs (JPEG DCT scaling, libwebp scaled decode).
4. For a crop, keep only the crop's pixels (with a margin for the Lanczos kernel), then
   ``imaging._reduce_towards`` and ``imaging._lanczos_to`` to the exact size; the full-size decode
   is freed before the small image is worked on.
5. ``imaging._to_srgb``, ``imaging._rotate`` (EXIF orientation), then the filters in order.
6. Encode with nothing but pixels (no EXIF, XMP, ICC, comments).

An animation keeps the same plan and runs steps 4-5 on every frame, streamed into one animated
WebP encoder (``imaging._AnimationEncoder``), as renditions do.
"""

from __future__ import annotations

import datetime
import io
import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from PIL import Image, ImageCms, ImageFilter, ImageOps

from . import formats, imaging, operations
from .formats import Format
from .shrink import Box

# Formats an animated source stays animated in (as animated WebP); any other gives its first frame.
ANIMATED_OUTPUTS = frozenset({None, "auto", "auto-webp", "auto-avif", "webp"})
# ``sharpen``: an unsharp mask at the output scale, about what libvips' and imgproxy's defaults do
# to a downscaled photo (a one-pixel radius, full strength, no change to near-flat areas).
SHARPEN = ImageFilter.UnsharpMask(radius=1.0, percent=100, threshold=2)
# The classic sepia matrix (Microsoft's, as in CSS ``sepia(1)``): rows give R, G, B from r, g, b.
SEPIA = (0.393, 0.769, 0.189, 0, 0.349, 0.686, 0.168, 0, 0.272, 0.534, 0.131, 0)
# Smart crop: edge energy is measured on a grey copy with at most this many pixels on its long side.
SMART_SIDE = 256
# Dominant colour: quantised on a copy at most this big, into this many clusters.
DOMINANT_SIDE, DOMINANT_COLOURS = 64, 8
DEFAULT_LIMITS = imaging.Limits()  # the upload limits


# ---------------------------------------------------------------------------------------------
# Public


def render(data: bytes, spec: operations.Spec, limits: imaging.Limits = DEFAULT_LIMITS) -> imaging.Encoded:
    """One output image of ``data`` as ``spec`` asks.

    EXIF orientation is applied first and colours converted to sRGB; nothing but pixels leaves
    (no EXIF, XMP, ICC). Output sides never exceed the (oriented) source's.

    Geometry. The box (``spec.width`` x ``spec.height``, a missing side unbounded) applies to the
    image *as the filters leave it*: with ``rotate:90`` or ``rotate:270`` the box is laid on the
    turned picture, so ``w=800&filter=rotate:90`` gives an 800-pixel-wide output. Sizes are
    computed on that turned geometry, the pixels resized, then the filters applied in order.
    ``gravity`` likewise names a side of the output (``north`` keeps what ends up on top).

    - ``contain``: fits inside the box, keeping aspect (``imaging.fit_size``).
    - ``cover``: fills the box, cropping the rest; a source smaller than the box is cropped to
      the box's aspect ratio at its own scale (the box scaled down until it fits), never enlarged.
      ``smart`` keeps the window with the most edge energy along the cropped axis.
    - ``fill``: exactly the box, stretched; a box larger than the source on a side is scaled down
      uniformly until it fits.

    Format: ``None``/``auto`` as renditions (JPEG when opaque; PNG or lossless WebP, the smaller,
    when transparent; animated WebP for an animation); ``auto-webp``: lossy WebP; ``auto-avif``:
    AVIF (an animation: animated WebP for both). ``jpeg``, ``png`` and ``avif`` of an animation
    give its first frame, ``webp`` an animated WebP. JPEG of a transparent image is flattened on
    white. ``spec.quality`` applies to JPEG, WebP and AVIF. ``spec.download`` changes nothing here.

    Raises ImageshelfError with imaging's stable codes (the open's limits before any pixel;
    ``corrupt_image`` for damage found while decoding; ``internal_error`` if encoding fails).
    """
    opened = imaging._open(data, limits)
    with imaging.decoding(opened):
        if imaging._is_animation(opened) and spec.format in ANIMATED_OUTPUTS:
            return _render_animation(opened, spec)
        return _render_still(opened, data, spec)


def identify(
    data: bytes, limits: imaging.Limits = DEFAULT_LIMITS, pixels: bytes | None = None
) -> dict[str, Any]:
    """What the image is, as a JSON-ready dict (every key always present, ``None`` when unknown):
    format, content_type, width and height (after EXIF orientation), frames, animated, mode,
    bit_depth (per channel), has_alpha, color_profile (the ICC description), orientation (the EXIF
    value, 1 if none), camera (make, model, lens, taken_at, exposure_time, f_number, iso,
    focal_length; ``None`` without any), has_location, dominant_color (``"#rrggbb"``).

    GPS is reduced to ``has_location``: coordinates never enter the dict. Bad EXIF values become
    ``None``. ``pixels``, the bytes of a small rendition of the same image (a thumbnail), is
    where the dominant colour is taken from if given, so the original is not decoded again;
    otherwise the original is decoded at reduced scale. Same limits and errors as ``render``.
    """
    opened = imaging._open(data, limits)
    with imaging.decoding(opened):
        im, fmt = opened.im, opened.info.format
        # A PNG's eXIf chunk may follow the pixels: read only if they are decoded here (with
        # ``pixels`` such a PNG reports no camera; a camera's PNG is rare, and it keeps the cost).
        late_exif = fmt == "PNG" and "exif" not in im.info
        header = _header_facts(opened, data)
        exif = None if late_exif else _exif(im)
        colour = _dominant_from(pixels) if pixels else None
        if colour is None:
            src, box = _decode(opened, data, (DOMINANT_SIDE * 2.0, DOMINANT_SIDE * 2.0))
            if late_exif:
                opened = imaging._late_orientation(opened, src)
                exif = _exif(src)
            colour = _dominant(_small_copy(src, box))
        info = opened.info
        orientation = im.info.get("original_orientation") or opened.orientation
        if fmt == "TIFF":  # Pillow turned the pixels itself; report the tag all the same
            orientation = imaging._orientation(im)
        return {
            "format": info.format,
            "content_type": info.content_type,
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "animated": imaging._is_animation(opened),
            **header,
            "orientation": orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1,
            "camera": _camera(exif) if exif is not None else None,
            "has_location": _has_location(exif) if exif is not None else False,
            "dominant_color": colour,
        }


# ---------------------------------------------------------------------------------------------
# Geometry: what size comes out, and which part of the source it shows


@dataclass(frozen=True)
class _Plan:
    size: tuple[int, int]  # the resized image in the source's displayed axes (before the filters)
    crop: tuple[float, float]  # the part of the displayed source it shows: its width and height
    gravity: str  # where that part sits, as a side of the displayed source (or center/smart)
    turned: bool  # the filters swap width and height


def _quarter_turns(filters: Iterable[tuple[str, str | None]]) -> int:
    return sum(int(arg or 0) // 90 for name, arg in filters if name == "rotate")


_DIRECTIONS = {"north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0)}
# What each geometric filter does to a direction (x right, y down).
_MOVES: dict[tuple[str, str | None], Callable[[int, int], tuple[int, int]]] = {
    ("rotate", "90"): lambda dx, dy: (-dy, dx),  # clockwise: the left side comes on top
    ("rotate", "180"): lambda dx, dy: (-dx, -dy),
    ("rotate", "270"): lambda dx, dy: (dy, -dx),
    ("flip", "h"): lambda dx, dy: (-dx, dy),
    ("flip", "v"): lambda dx, dy: (dx, -dy),
}


def _source_gravity(gravity: str, filters: Iterable[tuple[str, str | None]]) -> str:
    """The side of the source that the filters turn into side ``gravity`` of the output."""
    if gravity not in _DIRECTIONS:
        return gravity  # center and smart do not depend on the turn
    moves = [_MOVES[f] for f in filters if f in _MOVES]
    for name, (dx, dy) in _DIRECTIONS.items():
        for move in moves:
            dx, dy = move(dx, dy)
        if (dx, dy) == _DIRECTIONS[gravity]:
            return name
    return gravity  # unreachable: the moves are bijections of the four sides


def _plan(width: int, height: int, spec: operations.Spec) -> _Plan:
    """The output size and the kept part of a ``width`` x ``height`` (displayed) source."""
    turned = _quarter_turns(spec.filters) % 2 == 1
    bw, bh = spec.box()
    if turned:
        bw, bh = bh, bw  # the box as laid on the source before the turn
    whole = (float(width), float(height))
    if spec.fit == "cover":
        # The largest part of the source with the box's aspect ratio, then the box (or, for a
        # source smaller than the box, that part at the source's own scale).
        cw, ch = min(float(width), height * bw / bh), min(float(height), width * bh / bw)
        if cw >= bw and ch >= bh:
            size = (bw, bh)
        else:
            size = (max(1, min(width, round(cw))), max(1, min(height, round(ch))))
        gravity = _source_gravity(spec.gravity, spec.filters)
        return _Plan(size, (cw, ch), gravity, turned)
    if spec.fit == "fill":
        scale = min(1.0, width / bw, height / bh)
        size = (max(1, min(width, round(bw * scale))), max(1, min(height, round(bh * scale))))
        return _Plan(size, whole, "center", turned)
    return _Plan(imaging.fit_size(width, height, (bw, bh)), whole, "center", turned)


def _place(plan: _Plan, width: int, height: int, energy: Callable[[str], list[float]] | None) -> Box:
    """Where the kept part sits in the displayed source: (x0, y0, x1, y1)."""
    cw, ch = plan.crop
    slack_x, slack_y = width - cw, height - ch
    x, y = slack_x / 2, slack_y / 2
    gravity = plan.gravity
    if gravity == "north":
        y = 0.0
    elif gravity == "south":
        y = slack_y
    elif gravity == "west":
        x = 0.0
    elif gravity == "east":
        x = slack_x
    elif gravity == "smart" and energy is not None and max(slack_x, slack_y) >= 1:
        axis = "x" if slack_x >= slack_y else "y"
        profile = energy(axis)
        full, kept = (width, cw) if axis == "x" else (height, ch)
        start = _best_window(profile, kept / full) * full
        if axis == "x":
            x = min(slack_x, start)
        else:
            y = min(slack_y, start)
    return (x, y, x + cw, y + ch)


def _best_window(profile: list[float], fraction: float) -> float:
    """The start (0..1 of the length) of the window of ``fraction`` of ``profile`` whose sum is the
    greatest (a cumulative sum); ties go to the window nearest the centre."""
    n = len(profile)
    size = max(1, min(n, round(fraction * n)))
    sums = [0.0]
    for value in profile:
        sums.append(sums[-1] + value)
    centre = (n - size) / 2
    best = max(range(n - size + 1), key=lambda i: (round(sums[i + size] - sums[i], 6), -abs(i - centre)))
    return best / n


def _energy_profile(src: Image.Image, box: Box, orientation: int) -> Callable[[str], list[float]]:
    """Edge energy per column (``"x"``) or row (``"y"``) of the displayed source, from a small grey
    copy of the decoded pixels (FIND_EDGES, then each column's or row's mean)."""

    def profile(axis: str) -> list[float]:
        factor = max(1, int(max(box[2], box[3]) // SMART_SIDE))
        mode, convert = imaging._working_mode(src)
        small = imaging._reduce(src, factor, convert, mode)
        valid = (0, 0, max(1, round(box[2] / factor)), max(1, round(box[3] / factor)))
        small = small.crop(valid)
        if small.mode in ("RGBa", "La"):
            small = small.convert(small.mode.upper())
        grey = imaging._rotate(small.convert("L"), orientation)
        edges = grey.filter(ImageFilter.FIND_EDGES).convert("F")
        w, h = edges.size
        line = edges.resize((w, 1) if axis == "x" else (1, h), Image.Resampling.BOX)
        values = [cast(float, v) for v in line.get_flattened_data()]
        if len(values) > 2:  # the filter's outermost pixels see past the border
            values[0] = values[-1] = 0.0
        return values

    return profile


def _to_file_axes(rect: Box, orientation: int, fw: int, fh: int) -> Box:
    """A rectangle of the displayed image, in the axes of the file's pixels (``fw`` x ``fh``),
    for each EXIF orientation (the inverse of ``imaging._rotate``)."""
    x0, y0, x1, y1 = rect
    corners = [_file_point(x, y, orientation, fw, fh) for x, y in ((x0, y0), (x1, y1))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return (min(xs), min(ys), max(xs), max(ys))


def _file_point(x: float, y: float, orientation: int, fw: int, fh: int) -> tuple[float, float]:
    match orientation:
        case 2:
            return fw - x, y
        case 3:
            return fw - x, fh - y
        case 4:
            return x, fh - y
        case 5:
            return y, x
        case 6:
            return y, fh - x
        case 7:
            return fw - y, fh - x
        case 8:
            return fw - y, x
    return x, y


def _resize_region(
    src: Image.Image,
    rect: Box,
    size: tuple[int, int],
    working: tuple[str, Callable[[Image.Image], Image.Image] | None],
) -> tuple[Image.Image, Box]:
    """Box-reduce the part ``rect`` of ``src`` towards ``size`` (imaging's first stage); returns
    the reduced image and where ``rect`` now is in it, for the Lanczos pass.

    A crop keeps only its own pixels (plus the Lanczos kernel's reach) before reducing, so the
    discarded part of the picture is never converted or reduced; unless that copy would be over
    ``imaging.WORK_BYTES``: then the whole picture is reduced band by band, as imaging does, and
    the Lanczos pass reads the kept part from the reduced copy."""
    x0, y0, x1, y1 = rect
    rw, rh = x1 - x0, y1 - y0
    if rw * rh < 0.9 * src.width * src.height and rw * rh * 4 <= imaging.WORK_BYTES:
        reach = int(3 * max(rw / size[0], rh / size[1])) + 2  # Lanczos-3's support, source pixels
        cx0, cy0 = max(0, int(x0) - reach), max(0, int(y0) - reach)
        cx1, cy1 = min(src.width, math.ceil(x1) + reach), min(src.height, math.ceil(y1) + reach)
        src = src.crop((cx0, cy0, cx1, cy1))
        x0, y0, x1, y1 = x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0
    reduced, rbox = imaging._reduce_towards(src, size, (0.0, 0.0, rw, rh), working)
    factor = rw / rbox[2]
    return reduced, (x0 / factor, y0 / factor, x1 / factor, y1 / factor)


def _decode(opened: imaging._Opened, data: bytes, want: tuple[float, float]) -> tuple[Image.Image, Box]:
    """The first frame, shrunk on load where imaging can (not for an animation: libwebp's scaled
    decoder reads still WebPs only, and GIF and PNG decode at full size anyway)."""
    if imaging._is_animation(opened):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = imaging._load(opened.im, data, opened.info.format, want)
        return frame, (0.0, 0.0, float(frame.width), float(frame.height))
    return imaging._decode(opened, data, want)


def _file_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation >= 5 else size


# ---------------------------------------------------------------------------------------------
# The two pipelines


def _render_still(opened: imaging._Opened, data: bytes, spec: operations.Spec) -> imaging.Encoded:
    info = opened.info
    plan = _plan(info.width, info.height, spec)
    fw, fh = _file_size((info.width, info.height), opened.orientation)
    # Decode at the scale the kept part needs, with imaging's headroom for the two resize stages.
    gap = imaging.DRAFT_GAP
    ww = min(info.width, info.width * plan.size[0] / plan.crop[0] * gap)
    wh = min(info.height, info.height * plan.size[1] / plan.crop[1] * gap)
    want = (wh, ww) if opened.orientation >= 5 else (ww, wh)
    src, box = _decode(opened, data, want)
    late = imaging._late_orientation(opened, src)
    if late is not opened:  # a PNG's eXIf after its pixels: the plan is made again
        opened, info = late, late.info
        plan = _plan(info.width, info.height, spec)
    # Decoded pixels per file pixel (JPEG DCT scaling, WebP scaled decode).
    kx, ky = box[2] / fw, box[3] / fh
    energy = _energy_profile(src, box, opened.orientation) if plan.gravity == "smart" else None
    shown = _place(plan, info.width, info.height, energy)
    fx0, fy0, fx1, fy1 = _to_file_axes(shown, opened.orientation, fw, fh)
    rect = (fx0 * kx, fy0 * ky, fx1 * kx, fy1 * ky)
    icc = src.info.get("icc_profile")
    stored = _file_size(plan.size, opened.orientation)
    reduced, rbox = _resize_region(src, rect, stored, imaging._working_mode(src))
    imaging._free_source(src, opened.im, [(reduced, rbox)])
    del src
    small = imaging._rotate(
        imaging._to_srgb(imaging._lanczos_to(reduced, stored, rbox), icc), opened.orientation
    )
    del reduced
    small = _apply_filters(small, spec.filters)
    payload, fmt = imaging._encode(lambda im: _encode_still(im, spec), small)
    return imaging.Encoded(payload, small.width, small.height, fmt, animated=False, frames=1)


class _AnimationEncoder(imaging._AnimationEncoder):
    """imaging's streaming animated-WebP encoder, at the request's quality."""

    def __init__(self, im: Any, size: tuple[int, int], quality: int) -> None:
        super().__init__(im, size)
        self.quality = quality

    def add(self, frame: Image.Image, duration: int) -> None:
        self.encoder.add(frame.convert("RGBA").getim(), self.timestamp, False, self.quality, 100, 4)
        self.timestamp += duration
        self.count += 1


def _render_animation(opened: imaging._Opened, spec: operations.Spec) -> imaging.Encoded:
    """Every frame through the same plan (a smart crop is placed on the first frame and kept)."""
    info = opened.info
    plan = _plan(info.width, info.height, spec)
    fw, fh = _file_size((info.width, info.height), opened.orientation)
    stored = _file_size(plan.size, opened.orientation)
    out = plan.size[::-1] if plan.turned else plan.size
    encoder = _AnimationEncoder(opened.im, out, spec.quality or imaging.WEBP_QUALITY)
    rect: Box | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for frame, duration in imaging._iter_frames(opened.im, info.frames):
            if rect is None:
                whole: Box = (0.0, 0.0, float(fw), float(fh))
                energy = (
                    _energy_profile(frame, whole, opened.orientation) if plan.gravity == "smart" else None
                )
                rect = _to_file_axes(
                    _place(plan, info.width, info.height, energy), opened.orientation, fw, fh
                )
            reduced, rbox = _resize_region(frame, rect, stored, imaging._frame_working_mode(frame))
            small = imaging._resize_colour_rotate(reduced, rbox, stored, frame.info.get("icc_profile"),
                                                  opened.orientation)  # fmt: skip
            encoder.add(_apply_filters(small, spec.filters), duration)
    return imaging._encode(lambda _: encoder.finish(), opened.im)


# ---------------------------------------------------------------------------------------------
# Filters (on the small, oriented, sRGB image: mode RGB, RGBA, L or LA)

_TURNS: dict[tuple[str, str | None], Image.Transpose] = {
    ("rotate", "90"): Image.Transpose.ROTATE_270,  # Pillow turns counter-clockwise
    ("rotate", "180"): Image.Transpose.ROTATE_180,
    ("rotate", "270"): Image.Transpose.ROTATE_90,
    ("flip", "h"): Image.Transpose.FLIP_LEFT_RIGHT,
    ("flip", "v"): Image.Transpose.FLIP_TOP_BOTTOM,
}


def _apply_filters(im: Image.Image, filters: Iterable[tuple[str, str | None]]) -> Image.Image:
    for name, arg in filters:
        if (name, arg) in _TURNS:
            im = im.transpose(_TURNS[(name, arg)])
        elif name == "blur":
            im = _premultiplied(im, _filter(ImageFilter.GaussianBlur(float(arg or 1))))  # radius = sigma
        elif name == "sharpen":
            im = _premultiplied(im, _filter(SHARPEN))
        else:
            im = _on_colour(im, _COLOUR_FILTERS[name])
    return im


def _filter(kernel: ImageFilter.Filter) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.filter(kernel)


def _grayscale(im: Image.Image) -> Image.Image:
    return im.convert("L")


def _sepia(im: Image.Image) -> Image.Image:
    return im.convert("RGB").convert("RGB", SEPIA)


def _negate(im: Image.Image) -> Image.Image:
    return ImageOps.invert(im)


_COLOUR_FILTERS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "grayscale": _grayscale,
    "sepia": _sepia,
    "negate": _negate,
}


def _on_colour(im: Image.Image, fn: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """``fn`` on the colour bands; the alpha band is kept as it is."""
    if im.mode not in ("RGBA", "LA"):
        return fn(im)
    alpha = im.getchannel("A")
    out = fn(im.convert(im.mode[:-1]))
    out = out.convert(out.mode + "A")
    out.putalpha(alpha)
    return out


def _premultiplied(im: Image.Image, fn: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """A neighbourhood filter, on premultiplied alpha (so transparent pixels bleed no colour)."""
    if im.mode == "RGBA":
        return fn(im.convert("RGBa")).convert("RGBA")
    if im.mode == "LA":
        return fn(im.convert("La")).convert("LA")
    return fn(im)


# ---------------------------------------------------------------------------------------------
# Encode: the format a request names, with nothing but pixels


def _encode_still(im: Image.Image, spec: operations.Spec) -> tuple[bytes, Format]:
    name = spec.format
    im.info = {}  # no EXIF, XMP, ICC or comments leave with the pixels
    if name in (None, "auto"):
        if spec.quality is None or imaging._has_alpha(im):
            return imaging._encode_still(im)  # the renditions' rule, and their encoders
        name = "jpeg"
    if name == "jpeg":
        return _jpeg(im, spec.quality or imaging.JPEG_QUALITY), formats.BY_NAME["JPEG"]
    if name == "png":
        keep = im if imaging._has_alpha(im) else im.convert("L" if im.mode in ("L", "LA") else "RGB")
        return imaging._save(keep, "PNG", compress_level=3), formats.BY_NAME["PNG"]
    if name in ("webp", "auto-webp"):
        quality = spec.quality or imaging.WEBP_QUALITY
        return _lossy(im, "WEBP", quality), formats.BY_NAME["WEBP"]
    if name in ("avif", "auto-avif"):
        quality = spec.quality or imaging.ALTERNATE_QUALITY["AVIF"]
        return _lossy(im, "AVIF", quality), formats.BY_NAME["AVIF"]
    raise ValueError(f"unknown output format {name!r}")


def _jpeg(im: Image.Image, quality: int) -> bytes:
    """Progressive, optimised JPEG as renditions; a transparent image flattened on white."""
    if im.mode in ("RGBA", "LA"):
        base = im.mode[:-1]
        flat = Image.new(base, im.size, "white")
        flat.paste(im.convert(base), mask=im.getchannel("A"))
        im = flat
    elif im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    return imaging._save(im, "JPEG", quality=quality, progressive=True, optimize=True)


def _lossy(im: Image.Image, name: str, quality: int, speed: int | None = None) -> bytes:
    """Lossy WebP or AVIF with alpha kept, as imaging's alternate renditions but at ``quality``
    (AVIF at imaging's speed for the size unless ``speed`` is given)."""
    alpha = imaging._has_alpha(im)
    if im.mode not in ("RGB", "RGBA") or (im.mode == "RGBA" and not alpha):
        im = im.convert("RGBA" if alpha else "RGB")
    im.info = {}
    if name == "WEBP":
        return imaging._save(
            im, "WEBP", quality=quality, method=imaging.WEBP_METHOD, alpha_quality=100, exact=False
        )
    if speed is None:
        fast = im.width * im.height > imaging.AVIF_FAST_PIXELS
        speed = imaging.AVIF_FAST_SPEED if fast else imaging.AVIF_SPEED
    return imaging._save(im, "AVIF", quality=quality, speed=speed)


# ---------------------------------------------------------------------------------------------
# Identify: header facts, EXIF (never coordinates), the dominant colour


def _header_facts(opened: imaging._Opened, data: bytes) -> dict[str, Any]:
    im = opened.im
    mode = im.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    return {
        "mode": mode,
        "bit_depth": _bit_depth(im, opened.info.format, data),
        "has_alpha": has_alpha,
        "color_profile": _profile_description(im.info.get("icc_profile")),
    }


def _bit_depth(im: Image.Image, fmt: str, data: bytes) -> int | None:
    """Bits per channel as the file stores them, where the header says; else from the mode."""
    try:
        if fmt == "PNG" and data[12:16] == b"IHDR":
            depth, colour_type = data[24], data[25]
            return 8 if colour_type == 3 else int(depth)  # a palette's entries are 8-bit
        if fmt == "JPEG" and isinstance(bits := getattr(im, "bits", None), int):
            return bits
        if fmt == "HEIF" and isinstance(bits := im.info.get("bit_depth"), int):
            return bits
        if fmt == "TIFF":
            samples = getattr(im, "tag_v2", {}).get(258)
            if isinstance(samples, tuple) and samples and all(isinstance(s, int) for s in samples):
                return max(samples)
            if isinstance(samples, int):
                return samples
    except Exception:
        pass
    mode = im.mode
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _profile_description(icc: object) -> str | None:
    if not isinstance(icc, bytes) or not icc:
        return None
    try:
        text = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:
        return None
    return _text(text)


def _exif(im: Image.Image) -> Image.Exif | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = im.getexif()
    except Exception:
        return None
    return exif if len(exif) else None


def _ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(exif.get_ifd(tag))
    except Exception:
        return {}


def _camera(exif: Image.Exif) -> dict[str, Any] | None:
    sub = _ifd(exif, 0x8769)
    camera = {
        "make": _text(exif.get(0x010F)),
        "model": _text(exif.get(0x0110)),
        "lens": _text(sub.get(0xA434)),
        "taken_at": _taken_at(sub.get(0x9003), sub.get(0x9011)),
        "exposure_time": _exposure(sub.get(0x829A)),
        "f_number": _number(sub.get(0x829D), 1000),
        "iso": _iso(sub.get(0x8827)),
        "focal_length": _number(sub.get(0x920A), 100_000),
    }
    return camera if any(v is not None for v in camera.values()) else None


def _has_location(exif: Image.Exif) -> bool:
    gps = _ifd(exif, 0x8825)
    return gps.get(2) not in (None, b"", "", ()) and gps.get(4) not in (None, b"", "", ())


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: object) -> str | None:
    """An EXIF string: cut at the first NUL, control characters dropped, trimmed; None if empty."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub("", value.split("\x00")[0]).strip()[:200]
    return text or None


def _real(value: object) -> float | None:
    if isinstance(value, tuple) and value:
        value = value[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _number(value: object, limit: float) -> float | None:
    number = _real(value)
    return round(number, 1) if number is not None and 0 < number < limit else None


def _iso(value: object) -> int | None:
    number = _real(value)
    return int(number) if number is not None and 0 < number < 10_000_000 else None


def _exposure(value: object) -> str | None:
    """``"1/160"`` for a fraction of a second, ``"2"`` or ``"2.5"`` for longer, ``"0.3"`` for a
    short time that is no unit fraction."""
    seconds = _real(value)
    if seconds is None or not 0 < seconds <= 86_400:
        return None
    if seconds >= 1:
        return f"{round(seconds, 1):g}"
    inverse = 1 / seconds
    if abs(inverse - round(inverse)) <= 0.03 * inverse:
        return f"1/{round(inverse)}"
    return f"{seconds:.2g}"


_OFFSET = re.compile(r"[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]")


def _taken_at(value: object, offset: object) -> str | None:
    """DateTimeOriginal as ISO 8601 (``2008-05-30T15:56:01``), with OffsetTimeOriginal if valid."""
    text = _text(value)
    if text is None:
        return None
    try:
        moment = datetime.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    zone = _text(offset)
    return moment.isoformat() + (zone if zone and _OFFSET.fullmatch(zone) else "")


def _small_copy(src: Image.Image, box: Box) -> Image.Image:
    """At most DOMINANT_SIDE pixels a side, in sRGB, through imaging's reduce and Lanczos."""
    size = imaging.fit_size(max(1, int(box[2])), max(1, int(box[3])), (DOMINANT_SIDE, DOMINANT_SIDE))
    reduced, rbox = imaging._reduce_towards(src, size, box, imaging._working_mode(src))
    return imaging._to_srgb(imaging._lanczos_to(reduced, size, rbox), src.info.get("icc_profile"))


def _dominant_from(pixels: bytes) -> str | None:
    """The dominant colour of a small rendition's bytes; None if they cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(pixels)) as im:
                im.draft("RGB", (DOMINANT_SIDE * 2, DOMINANT_SIDE * 2))
                im.load()
                box: Box = (0.0, 0.0, float(im.width), float(im.height))
                return _dominant(_small_copy(im, box))
    except Exception:
        return None


def _dominant(im: Image.Image) -> str:
    """The centre of the most populous of a few colour clusters (median cut; with alpha, fast
    octree over the pixels that are not mostly transparent), as ``#rrggbb``."""
    if im.mode in ("RGBA", "LA") and imaging._has_alpha(im):
        quantized = im.convert("RGBA").quantize(DOMINANT_COLOURS, method=Image.Quantize.FASTOCTREE)
        channels = 4
    else:
        quantized = im.convert("RGB").quantize(DOMINANT_COLOURS, method=Image.Quantize.MEDIANCUT)
        channels = 3
    palette = quantized.getpalette("RGBA" if channels == 4 else "RGB") or [0, 0, 0, 255]
    counts = [(n, int(cast(int, i))) for n, i in quantized.getcolors() or []]
    # With alpha, only clusters that are mostly opaque count (unless there are none).
    visible = [(n, i) for n, i in counts if channels == 3 or palette[4 * i + 3] >= 128] or counts or [(0, 0)]
    index = max(visible)[1]
    r, g, b = palette[channels * index : channels * index + 3]
    return f"#{r:02x}{g:02x}{b:02x}"
