"""What an on-demand render asks for: parsing, normalising, presets and signatures. No Pillow here.

A render request is a query string (``w=800&h=600&fit=cover&format=webp&q=80&filter=sepia``).
``parse`` checks every parameter and value and returns a ``Spec``; ``Spec.canonical`` is its one
normal form (fixed parameter order, defaults dropped), which is what is signed and what names the
cached object, so equivalent requests share one object and one signature.

When a stage has a signing key, a request is served only if it names a preset (``preset=square``)
or carries ``sig``, an HMAC-SHA256 of the canonical form under that key (as imgproxy and thumbor
sign URLs). The pixel work is in ``transform.py``; storage and caching in ``renders.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .errors import ImageshelfError

MAX_SIDE = 4096
FITS = ("contain", "cover", "fill")
GRAVITIES = ("center", "north", "south", "east", "west", "smart")
FORMATS = ("jpeg", "png", "webp", "avif", "auto")
MAX_BLUR = 50.0
MAX_FILTERS = 8
# What each filter takes: None for no argument, else the allowed arguments (a tuple) or a checker.
_FILTER_ARGS: dict[str, tuple[str, ...] | None] = {
    "grayscale": None,
    "sepia": None,
    "negate": None,
    "sharpen": None,
    "blur": (),  # a number, checked in _filter
    "rotate": ("90", "180", "270"),
    "flip": ("h", "v"),
}
PARAMETERS = ("w", "h", "fit", "gravity", "format", "q", "filter", "dl")
SIGNATURE = "sig"
PRESET = "preset"
SIGNATURE_CHARS = 32  # base64url characters of the HMAC kept in URLs (192 bits)


@dataclass(frozen=True)
class Spec:
    """A normalised render request. ``None`` means the default: no limit on that side, renditions'
    format choice (JPEG, or PNG/WebP when transparent, animated WebP when animated), the format's
    own default quality."""

    width: int | None = None
    height: int | None = None
    fit: str = "contain"
    gravity: str = "center"
    format: str | None = None
    quality: int | None = None
    filters: tuple[tuple[str, str | None], ...] = ()
    download: bool = False

    @property
    def canonical(self) -> str:
        """The normal form: parameters in a fixed order, defaults left out (``""`` for none)."""
        parts: list[str] = []
        if self.width is not None:
            parts.append(f"w={self.width}")
        if self.height is not None:
            parts.append(f"h={self.height}")
        if self.fit != "contain":
            parts.append(f"fit={self.fit}")
        if self.gravity != "center" and self.fit == "cover":
            parts.append(f"gravity={self.gravity}")
        if self.format is not None:
            parts.append(f"format={self.format}")
        if self.quality is not None:
            parts.append(f"q={self.quality}")
        if self.filters:
            parts.append(
                "filter=" + ",".join(name if arg is None else f"{name}:{arg}" for name, arg in self.filters)
            )
        if self.download:
            parts.append("dl=1")
        return "&".join(parts)

    def box(self) -> tuple[int, int]:
        """The box to fit, a missing side unbounded (up to MAX_SIDE)."""
        return self.width or MAX_SIDE, self.height or MAX_SIDE


def _invalid(message: str) -> ImageshelfError:
    return ImageshelfError("invalid_request", message)


def _int(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", value) or not low <= int(value) <= high:
        raise _invalid(f"Parameter '{name}' must be a whole number from {low} to {high}, not {value!r}.")
    return int(value)


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise _invalid(f"Parameter '{name}' must be one of {', '.join(allowed)}, not {value!r}.")
    return value


def _filter(item: str) -> tuple[str, str | None]:
    name, _, arg = item.partition(":")
    if name not in _FILTER_ARGS:
        raise _invalid(
            f"Unknown filter {name!r} in parameter 'filter': use grayscale, sepia, negate, "
            f"blur:<sigma up to {MAX_BLUR:g}>, sharpen, rotate:90|180|270 or flip:h|v."
        )
    allowed = _FILTER_ARGS[name]
    if allowed is None:
        if arg or ":" in item:
            raise _invalid(f"Filter '{name}' takes no argument, not {item!r}.")
        return name, None
    if name == "blur":
        if not re.fullmatch(r"[0-9]{1,2}(\.[0-9]{1,2})?", arg) or not 0 < float(arg) <= MAX_BLUR:
            raise _invalid(
                f"Filter 'blur' needs a sigma above 0 and up to {MAX_BLUR:g}, like blur:2.5, not {item!r}."
            )
        return name, f"{float(arg):g}"
    if arg not in allowed:
        raise _invalid(
            f"Filter '{name}' needs one of {'|'.join(allowed)}, like {name}:{allowed[0]}, not {item!r}."
        )
    return name, arg


def parse(params: Mapping[str, Sequence[str]]) -> Spec:
    """A ``Spec`` from query parameters (each name with all its values); ``invalid_request``
    naming the parameter for anything unknown, repeated or out of range. ``sig`` and ``preset``
    are not render parameters: ``request_spec`` handles them."""
    for name, values in params.items():
        if name not in PARAMETERS:
            raise _invalid(
                f"Unknown parameter {name!r}: a render takes {', '.join(PARAMETERS)}, "
                f"{PRESET} and {SIGNATURE}."
            )
        if name != "filter" and len(values) != 1:
            raise _invalid(f"Parameter {name!r} is given {len(values)} times; give it once.")
    one = {name: values[0] for name, values in params.items() if name != "filter"}
    filters = tuple(_filter(item.strip()) for value in params.get("filter", ()) for item in value.split(","))
    if len(filters) > MAX_FILTERS:
        raise _invalid(f"Parameter 'filter' names {len(filters)} filters; at most {MAX_FILTERS} are allowed.")
    spec = Spec(
        width=_int("w", one["w"], 1, MAX_SIDE) if "w" in one else None,
        height=_int("h", one["h"], 1, MAX_SIDE) if "h" in one else None,
        fit=_choice("fit", one["fit"], FITS) if "fit" in one else "contain",
        gravity=_choice("gravity", one["gravity"], GRAVITIES) if "gravity" in one else "center",
        format=_choice("format", one["format"], FORMATS) if "format" in one else None,
        quality=_int("q", one["q"], 1, 100) if "q" in one else None,
        filters=filters,
        download=_choice("dl", one["dl"], ("0", "1")) == "1" if "dl" in one else False,
    )
    if spec.fit != "contain" and (spec.width is None or spec.height is None):
        raise _invalid(f"fit={spec.fit} needs both 'w' and 'h' (a box to fill).")
    if spec.quality is not None and spec.format == "png":
        raise _invalid("Parameter 'q' does not apply to format=png, which is lossless.")
    return spec


def parse_query(query: str) -> Spec:
    """``parse`` of a query string (``w=800&fit=cover``), as presets are written."""
    params: dict[str, list[str]] = {}
    for part in filter(None, query.split("&")):
        name, sep, value = part.partition("=")
        if not sep:
            raise _invalid(f"{part!r} is not name=value.")
        params.setdefault(name, []).append(value)
    return parse(params)


# --- presets ------------------------------------------------------------------------------

# The gallery's lightbox asks for the smallest ``view-<N>`` box covering the screen (CSS pixels
# times the pixel ratio), so every screen shares a few cached objects; downloads use the format
# presets. RENDER_PRESETS adds or replaces presets (config.py).
VIEW_SIDES = (640, 960, 1280, 1600, 1920, 2560, 3200, 4096)
DEFAULT_PRESETS: dict[str, str] = {
    "thumb": "w=400&h=400",
    "large": "w=1600&h=1600",
    "square": "w=400&h=400&fit=cover&gravity=smart",
    **{f"view-{side}": f"w={side}&h={side}&format=auto" for side in VIEW_SIDES},
    **{name: f"w={MAX_SIDE}&h={MAX_SIDE}&format={name}&dl=1" for name in ("jpeg", "png", "webp", "avif")},
}
_PRESET_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def parse_presets(spec: str) -> dict[str, Spec]:
    """``RENDER_PRESETS``: whitespace-separated ``name:query`` pairs, e.g.
    ``square:w=400&h=400&fit=cover hero:w=1600&h=900&fit=cover&format=auto``. Raises ValueError
    naming the bad entry."""
    presets: dict[str, Spec] = {}
    for entry in spec.split():
        name, sep, query = entry.partition(":")
        if not sep or not _PRESET_NAME.fullmatch(name):
            raise ValueError(f"{entry!r} is not name:query (a lower-case name, then its parameters)")
        try:
            presets[name] = parse_query(query)
        except ImageshelfError as error:
            raise ValueError(f"preset {name!r}: {error.message}") from None
    return presets


def default_presets() -> dict[str, Spec]:
    return parse_presets(" ".join(f"{name}:{query}" for name, query in DEFAULT_PRESETS.items()))


# --- signatures -----------------------------------------------------------------------------


def sign(spec: Spec, key: str, subject: str = "") -> str:
    """The ``sig`` for ``spec`` on ``subject`` (an image id, or ``"sample"``) under ``key``:
    HMAC-SHA256 of ``subject/canonical``, base64url, its first SIGNATURE_CHARS characters.
    Tying the signature to the image means a signed URL cannot be replayed on other images."""
    mac = hmac.new(key.encode(), f"{subject}/{spec.canonical}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:SIGNATURE_CHARS]


def request_spec(
    params: Mapping[str, Sequence[str]],
    subject: str,
    presets: Mapping[str, Spec],
    signing_key: str,
) -> Spec:
    """The ``Spec`` a request asks for, authorised: a preset alone, or parameters (signed with
    ``signing_key`` when there is one). ``forbidden`` (403) for a missing or wrong signature."""
    params = dict(params)
    preset = params.pop(PRESET, None)
    signature = params.pop(SIGNATURE, None)
    if preset is not None:
        if len(preset) != 1 or preset[0] not in presets:
            raise _invalid(
                f"Unknown preset {preset[-1]!r}: this stage has {', '.join(sorted(presets)) or 'none'}."
            )
        if params or signature is not None:
            raise _invalid("'preset' stands alone: give either a preset or render parameters, not both.")
        return presets[preset[0]]
    spec = parse(params)
    if not signing_key:
        return spec
    if signature is None:
        raise ImageshelfError(
            "forbidden",
            "Renders need a signature here: add 'sig' (HMAC of the parameters, see docs/api.md) "
            f"or use a preset ({', '.join(sorted(presets))}).",
        )
    if len(signature) != 1 or not hmac.compare_digest(
        signature[0].encode(), sign(spec, signing_key, subject).encode()
    ):
        raise ImageshelfError("forbidden", "The render signature does not match these parameters.")
    return spec


# --- format negotiation -----------------------------------------------------------------------


def accepted(accept: str | None) -> str:
    """What ``format=auto`` may use, from an ``Accept`` header: ``"avif"``, ``"webp"`` or ``""``
    (neither: the renditions' JPEG/PNG). Only explicit types count, not ``*/*`` or ``image/*``,
    which browsers send whatever they can decode."""
    types = {item.split(";")[0].strip().lower(): item for item in (accept or "").split(",") if item.strip()}

    def ok(mime: str) -> bool:
        params = types.get(mime)
        if params is None:
            return False
        q = re.search(r";\s*q=([0-9.]+)", params)
        return not q or float(q.group(1) or 0) > 0

    return "avif" if ok("image/avif") else "webp" if ok("image/webp") else ""


def resolve(spec: Spec, accept: str | None) -> Spec:
    """``spec`` with ``format=auto`` narrowed by ``Accept``: ``auto-avif``, ``auto-webp`` or
    ``auto`` (neither). The narrowed spec names the cached object; transform picks the format
    (an animation stays animated WebP)."""
    if spec.format != "auto":
        return spec
    choice = accepted(accept)
    return replace(spec, format=f"auto-{choice}" if choice else "auto")
