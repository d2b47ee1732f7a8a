"""The HTML gallery at ``/`` and its static assets (Jinja2, autoescape on; no build step).

The first page of images is rendered on the server, so the grid shows before (and
without) JavaScript; failed images are left out of it (see ``public_cards``).
``static/gallery.js`` then takes over: uploads, polling, paging, the lightbox and deletion,
all through the same JSON API every other client uses.

A tile's markup is written once, in ``templates/card.html``: the page carries it as a
``<template id="card-template">`` that the script clones and fills, and the server fills the
same macro for the first page. This module only computes the values that go into it.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chalice import Response

from . import formats, operations, storage
from .config import Settings
from .errors import ImageshelfError

_HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"

PAGE_SIZE = 24  # what the JSON API returns without a limit; the script asks for the same

# The grid's layout until the visitor picks one (templates/gallery.html has the switch, and
# static/gallery.js keeps the choice in the browser): "justified", rows of whole photos at their own
# aspect ratios, as Flickr and Google Photos show them; or "grid", the square grid of crops.
DEFAULT_LAYOUT = "justified"

# The justified rows' target height in CSS pixels (gallery.css: --row-h, 8vw + 100px, within 110
# and 280) on a phone, a tablet, and a laptop or wider. With it the first page's tiles say how wide
# they will be (their `sizes`), so a browser fetches a fitting rendition before the script has
# measured the real widths, or without the script.
_ROW_HEIGHTS = ((480, 135), (1000, 170))
_ROW_HEIGHT_WIDE = 220
_WIDEST = 1320  # gallery.css: the content's max-width

# The only files /static/{name} serves: the name must match exactly, so no path tricks apply.
ASSETS: dict[str, str] = {
    "gallery.css": "text/css; charset=utf-8",
    "gallery.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
ASSET_CACHE_CONTROL = "public, max-age=300"

# Anything else in a CSP source list would end the directive or add a keyword.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


# --- words ---------------------------------------------------------------------------


def human_bytes(size: int) -> str:
    """``20971520`` -> ``"20 MB"``: binary multiples, named the way people say them."""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def preview_types() -> list[str]:
    """Types the script may show from a local file while it uploads: every MIME type (aliases
    included, as browsers may report them) of the formats every current browser displays."""
    return [mime for f in formats.FORMATS if f.previewable for mime in (f.mime, *f.aliases)]


def error_words(settings: Settings) -> dict[str, str]:
    """Every error code the page can meet, in words a person understands.

    One table for the server-rendered page and the script (which gets it in its config),
    so a refused upload reads the same whether the browser or the API caught it.
    """
    limit = human_bytes(settings.max_upload_bytes)
    megapixels = f"{settings.max_pixels / 1_000_000:g}"
    types = formats.labels()
    return {
        # the image was stored but could not become a photo
        "empty_file": "This file is empty, so there is nothing to show.",
        "not_an_image": f"This file isn't a photo. Choose a {types} image.",
        "unsupported_format": f"This kind of image isn't supported. Choose a {types} image.",
        "corrupt_image": "This photo is damaged or incomplete, so it couldn't be opened.",
        "too_many_pixels": f"This photo has too many pixels (the limit is {megapixels} megapixels).",
        "too_many_frames": f"This animation has too many frames (the limit is {settings.max_frames}).",
        "file_too_large": f"This file is larger than the {limit} limit.",
        "processing_timeout": "This photo took too long to process. Please upload it again.",
        "internal_error": "Something went wrong on our side. Please try again in a moment.",
        # the upload itself was refused
        "unsupported_media_type": f"This file isn't a photo. Choose a {types} image.",
        "invalid_request": "The upload was refused.",
        "upload_failed": "The upload didn't finish. Check your connection and try again.",
        "network": "Couldn't reach imageshelf. Check your connection and try again.",
        "upload_token_needed": "Uploads here need a token: choose Retry and enter it.",
        "upload_token_refused": "That upload token was refused, so the photo was not uploaded.",
        # deletion
        "unauthorized": "Enter the admin token to delete photos.",
        "forbidden": "That admin token was refused, so nothing was deleted.",
        "not_found": "This photo no longer exists.",
    }


# --- page ----------------------------------------------------------------------------


def origins(endpoints: dict[str, str]) -> dict[str, str]:
    """The origins the page talks to, from the URLs ``storage.endpoint_urls`` answers:
    ``upload`` (where the browser POSTs files) and ``image`` (where thumbnails come from)."""
    return {role: _origin_of(url) for role, url in endpoints.items()}


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy(origins: dict[str, str]) -> str:
    """The page's CSP: only our own scripts and styles, images from S3, uploads to S3."""
    image = _checked_origin(origins.get("image", ""))
    upload = _checked_origin(origins.get("upload", ""))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' {image} data: blob:".replace("  ", " "),
            f"connect-src 'self' {upload}".rstrip(),
            f"form-action 'self' {upload}".rstrip(),
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _checked_origin(origin: str) -> str:
    # Origins come from configuration, but a stray ';' or space would rewrite the policy.
    origin = origin.rstrip("/")
    if not origin:
        return ""
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(f"not an origin for a Content-Security-Policy: {origin!r}")
    return origin


def page_config(first_page: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """What the script needs, embedded in the page as JSON (no inline script, no extra request)."""
    return {
        "pageSize": PAGE_SIZE,
        "maxUploadBytes": settings.max_upload_bytes,
        "maxUploadLabel": human_bytes(settings.max_upload_bytes),
        "contentTypes": list(formats.upload_types()),
        "previewTypes": preview_types(),
        "deletionEnabled": settings.deletion_enabled,
        "uploadTokenRequired": settings.upload_token_required,
        "errors": error_words(settings),
        "firstPage": first_page,
        # The lightbox: the view-<N> preset sides it picks from, and the converted copies its
        # Download menu offers (also read by templates/gallery.html to write the menu's items).
        "viewSides": view_sides(settings),
        "downloads": downloads(settings),
        # What people call each format, by its name (an info answer's) and its MIME types.
        "formatLabels": {key: f.label for f in formats.FORMATS for key in (f.name, f.mime, *f.aliases)},
    }


def view_sides(settings: Settings) -> list[int]:
    """The sides of the ``view-<N>`` presets this stage has, smallest first: the lightbox asks for
    the smallest covering the screen (presets need no signature where renders must be signed)."""
    presets = dict(settings.render_presets)
    return sorted(side for side in operations.VIEW_SIDES if f"view-{side}" in presets)


def downloads(settings: Settings) -> list[dict[str, Any]]:
    """The Download menu's converted copies: each output format of the registry that this stage
    has a preset of the same name for (``jpeg``, ``png``, ``webp``, ``avif``), with the box the
    preset fits the photo in (so the menu can say how large the copy is)."""
    presets = dict(settings.render_presets)
    return [
        {
            "preset": f.name.lower(),
            "label": f.label,
            "extension": f.extension,
            "box": list(presets[f.name.lower()].box()),
        }
        for f in formats.OUTPUTS
        if f.name.lower() in presets
    ]


# The types a tile offers before its JPEG/PNG, in <source> elements (RENDITION_FORMATS' alternates).
ALTERNATE_TYPES = tuple(f.mime for name in ("AVIF", "WEBP") for f in formats.FORMATS if f.name == name)

# The values of the card template that shows every state (the script clones that one).
_EVERY_STATE: dict[str, Any] = {
    "id": "",
    "status": "",
    "filename": "",
    "info": "",
    "href": "",
    "src": "",
    "srcset": "",
    "sources": [{"type": t, "srcset": ""} for t in ALTERNATE_TYPES],
    "width": "",
    "height": "",
    "sizes": "",
    "reason": "",
    "color": "",
    "placeholder": "",
}


def tile_sizes(width: int, height: int) -> str:
    """The `sizes` of a ``width`` x ``height`` photo in justified rows: its width at the target row
    height of each kind of screen, at most the screen's width (a panorama's row is as wide as the
    screen). The script puts the width the tile really has in its place once it has laid it out."""
    ratio = width / height
    sizes = [f"(max-width: {screen}px) {min(round(ratio * row), screen)}px" for screen, row in _ROW_HEIGHTS]
    return ", ".join([*sizes, f"{min(round(ratio * _ROW_HEIGHT_WIDE), _WIDEST)}px"])


def srcset(renditions: list[dict[str, Any]], content_type: str) -> str:
    """The ``srcset`` of a ``<source type=content_type>`` over the renditions: each size in that
    type where it is stored in it, else in its own JPEG/PNG ("": the <img>'s own, JPEG/PNG only)."""
    return ", ".join(f"{(_stored(r, content_type) or r)['url']} {r['width']}w" for r in renditions)


def _stored(rendition: dict[str, Any], content_type: str) -> dict[str, Any] | None:
    """The rendition's entry in ``formats`` for ``content_type``, or None if it is not stored so."""
    return next((f for f in rendition.get("formats") or [] if f["content_type"] == content_type), None)


def source_types(renditions: list[dict[str, Any]]) -> list[str]:
    """``ALTERNATE_TYPES``, the smaller first for this image: a browser takes the first <source>
    type it can show, so that one should be the smaller. Compared on the thumbnail (the first of
    ``renditions``, the size a tile shows on most screens), then on all sizes; AVIF wins a tie.
    A size stored in no such type counts as its JPEG/PNG."""

    def size(r: dict[str, Any], content_type: str) -> int:
        return int((_stored(r, content_type) or r).get("bytes") or 0)

    return sorted(
        ALTERNATE_TYPES, key=lambda t: (size(renditions[0], t), sum(size(r, t) for r in renditions))
    )


def card(image: dict[str, Any], words: dict[str, str]) -> dict[str, Any]:
    """The values templates/card.html fills one image's tile with (static/gallery.js computes the
    same in ``buildCard`` for images it meets later; the markup itself is only in the template)."""
    original = image.get("original") or {}
    renditions = sorted(image.get("renditions") or [], key=lambda r: r["width"] * r["height"])
    width, height = original.get("width"), original.get("height")
    status = image["status"]
    if status == "ready" and not renditions:
        status = "failed"  # ready without renditions: nothing to show
    view = dict(_EVERY_STATE, id=image["id"], status=status, filename=original.get("filename") or "Untitled")
    if status == "ready":
        thumb, largest = renditions[0], renditions[-1]
        view.update(
            info=f"{width} × {height}" if width and height else "",
            href=largest["url"],
            src=thumb["url"],
            srcset=srcset(renditions, ""),
            sources=[{"type": t, "srcset": srcset(renditions, t)} for t in source_types(renditions)],
            width=thumb["width"],
            height=thumb["height"],
            sizes=tile_sizes(thumb["width"], thumb["height"]),
            color=(image.get("placeholder") or {}).get("color", ""),
            placeholder=(image.get("placeholder") or {}).get("preview", ""),
        )
    elif status == "pending":
        view["info"] = "Processing"
    else:
        code = (image.get("error") or {}).get("code", "internal_error")
        view.update(info="Failed", reason=words.get(code, words["internal_error"]))
    return view


def public_cards(first_page: dict[str, Any], words: dict[str, str]) -> list[dict[str, Any]]:
    """The tiles everyone sees: the page's images without the failed ones.

    A failure interests the person who uploaded the file and the admin, not every visitor, so
    the public grid leaves it out. The script still gets the whole page in its config and shows
    a failure to the browser that uploaded it (which remembers its uploads' ids) and, while it
    holds the admin token, every failure with a delete button.
    """
    views = [card(image, words) for image in first_page.get("images", [])]
    return [view for view in views if view["status"] != "failed"]


def render_page(first_page: dict[str, Any], settings: Settings) -> str:
    words = error_words(settings)
    template = _environment().get_template("gallery.html")
    return template.render(
        config=page_config(first_page, settings),
        cards=public_cards(first_page, words),
        every_state=_EVERY_STATE,
        layout=DEFAULT_LAYOUT,
        has_more=bool(first_page.get("next_cursor")),
        max_upload=human_bytes(settings.max_upload_bytes),
        types=formats.labels(),
        accept=",".join(formats.upload_types()),
        deletion_enabled=settings.deletion_enabled,
        upload_token_required=settings.upload_token_required,
        asset=asset_url,
    )


def page_response(first_page: dict[str, Any], settings: Settings) -> Response:
    """``GET /``: the gallery page with its Content-Security-Policy."""
    return Response(
        body=render_page(first_page, settings),
        status_code=200,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": content_security_policy(origins(storage.endpoint_urls(settings))),
        },
    )


@lru_cache(maxsize=1)
def _environment() -> Any:
    # Built on first use: Jinja2 is only imported by the function that serves the page.
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


# --- static assets -------------------------------------------------------------------


def asset_url(name: str) -> str:
    """A relative URL with a content hash, so a changed file is never served stale from a cache.

    Relative (no leading slash) so the page also works under API Gateway's stage prefix.
    """
    return f"static/{name}?v={_asset(name)[1]}"


def asset_response(name: str) -> Response:
    """``GET /static/{name}``: one of the allow-listed files, cacheable for five minutes."""
    if name not in ASSETS:
        raise ImageshelfError("not_found", f"There is no static file called {name[:60]!r}.")
    body, _ = _asset(name)
    return Response(
        body=body,
        status_code=200,
        headers={"Content-Type": ASSETS[name], "Cache-Control": ASSET_CACHE_CONTROL},
    )


def _asset(name: str) -> tuple[str, str]:
    """The file's text and a short hash of it; re-read when the file changes (handy in `make run`)."""
    path = STATIC_DIR / name
    return _read_asset(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _read_asset(path: Path, _mtime_ns: int) -> tuple[str, str]:
    text = path.read_text(encoding="utf-8")
    return text, hashlib.sha256(text.encode()).hexdigest()[:10]
