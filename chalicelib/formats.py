"""The one registry of image formats: every fact about a format, read by every part of imageshelf.

Uploads take their allow-list from it, imaging its sniffing and Pillow names, storage its MIME
types and extensions, the gallery its display names and what a browser can preview (the page
hands that to its script). Adding a format is one row here plus its codec; ``tests/test_formats``
checks every row against the installed Pillow, so a row whose codec is missing fails a test
rather than an upload.

No Pillow and no AWS here: the API function reads this table without loading either.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    """One image format, as users, browsers, S3 and Pillow know it."""

    name: str  # Pillow's format name, also the ``format`` field of the API's Image
    mime: str  # the one content type imageshelf uses for it
    extension: str  # the extension of files imageshelf writes in it (rendition keys, downloads)
    label: str  # what people call it ("WebP")
    extensions: tuple[str, ...] = ()  # every file-name extension it goes by, ``extension`` first
    pillow: tuple[str, ...] = ()  # other names Pillow reports for it (MPO: phones' JPEGs)
    upload: bool = True  # may be uploaded (decoded by the pipeline)
    output: bool = False  # renditions may be written in it
    animated: bool = False  # may hold frames that the pipeline keeps as an animation
    previewable: bool = False  # every current browser shows it in an <img> (the upload preview)
    codec: str = ""  # the Pillow feature it needs beyond the core (``PIL.features.check``)
    aliases: tuple[str, ...] = ()  # other MIME types clients send for it


def _bmp(head: bytes) -> bool:
    # "BM" alone is too common a start for text; the DIB header size pins it down.
    return (
        head[:2] == b"BM"
        and len(head) >= 18
        and struct.unpack("<I", head[14:18])[0] in (12, 16, 40, 52, 56, 64, 108, 124)
    )


# Order matters only for display: it is the order of "JPEG, PNG, … or AVIF" in messages.
FORMATS: tuple[Format, ...] = (
    Format("JPEG", "image/jpeg", "jpg", "JPEG", ("jpg", "jpeg", "jpe", "jfif"), ("MPO",),
           output=True, previewable=True, aliases=("image/jpg", "image/pjpeg")),
    Format("PNG", "image/png", "png", "PNG", ("png", "apng"), output=True, animated=True,
           previewable=True, aliases=("image/apng",)),
    Format("GIF", "image/gif", "gif", "GIF", ("gif",), animated=True, previewable=True),
    Format("WEBP", "image/webp", "webp", "WebP", ("webp",), output=True, animated=True,
           previewable=True, codec="webp"),
    Format("TIFF", "image/tiff", "tif", "TIFF", ("tif", "tiff")),
    Format("BMP", "image/bmp", "bmp", "BMP", ("bmp", "dib"), previewable=True,
           aliases=("image/x-ms-bmp",)),
    Format("AVIF", "image/avif", "avif", "AVIF", ("avif",), output=True, previewable=True, codec="avif"),
    # iPhone photos. Decoded by pi-heif (a Pillow plugin, registered by imaging when it first opens
    # a file); most browsers cannot show it, so the gallery shows no local preview of one.
    Format("HEIF", "image/heic", "heic", "HEIC", ("heic", "heif", "hif"), codec="pi_heif",
           aliases=("image/heif", "image/heic-sequence", "image/heif-sequence")),
)  # fmt: skip

# Magic numbers of the formats above: (format name, test of the file's first 64 bytes).
_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("JPEG", lambda h: h.startswith(b"\xff\xd8\xff")),
    ("PNG", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    ("GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    ("WEBP", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    ("TIFF", lambda h: h[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")),
    ("BMP", _bmp),
    ("AVIF", lambda h: _avif(h)),
    ("HEIF", lambda h: _heif(h)),
)

# Formats recognised only to be refused by name: (magic at the start, name).
REFUSED: tuple[tuple[bytes, str], ...] = (
    (b"%pdf", "PDF"), (b"%!ps", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"8bps", "PSD"),
    (b"\0\0\1\0", "ICO"), (b"\0\0\2\0", "CUR"), (b"icns", "ICNS"), (b"qoif", "QOI"), (b"dds ", "DDS"),
    (b"\xff\x0a", "JPEG XL"), (b"\0\0\0\x0cjxl ", "JPEG XL"), (b"\0\0\0\x0cjp  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"gimp xcf", "XCF"), (b"v/1\x01", "OpenEXR"),
    (b"#?radiance", "HDR"),
)  # fmt: skip
# ISO base media brands (the ``ftyp`` box) of HEIF files: HEVC-coded (iPhone), or generic.
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")


def _generic_avif(head: bytes) -> bool:
    """A generic HEIF (major brand mif1/msf1) listing AVIF among its compatible brands."""
    return head[8:12] in (b"mif1", b"msf1") and b"avif" in head[16 : int.from_bytes(head[:4])]


def _avif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and (head[8:12] in (b"avif", b"avis") or _generic_avif(head))


def _heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS and not _generic_avif(head)


BY_NAME: dict[str, Format] = {f.name: f for f in FORMATS}
BY_MIME: dict[str, Format] = {m: f for f in FORMATS for m in (f.mime, *f.aliases)}
BY_EXTENSION: dict[str, Format] = {e: f for f in FORMATS for e in f.extensions}
UPLOADS: tuple[Format, ...] = tuple(f for f in FORMATS if f.upload)
OUTPUTS: tuple[Format, ...] = tuple(f for f in FORMATS if f.output)
ANIMATED: frozenset[str] = frozenset(f.name for f in FORMATS if f.animated)


def by_pillow(pillow_format: str) -> Format | None:
    """The row of a format as Pillow names it (``"MPO"`` is a JPEG)."""
    for fmt in FORMATS:
        if pillow_format == fmt.name or pillow_format in fmt.pillow:
            return fmt
    return None


def for_upload(content_type: str) -> Format | None:
    """The uploadable format whose content type a client declared (any case, parameters ignored),
    by its canonical name or an alias in use (``image/heif``, which many tools write for HEIC)."""
    fmt = BY_MIME.get(content_type.split(";")[0].strip().lower())
    return fmt if fmt is not None and fmt.upload else None


def upload_types() -> tuple[str, ...]:
    """The uploadable content types by their canonical names (``for_upload`` takes aliases too)."""
    return tuple(f.mime for f in UPLOADS)


def labels(formats: tuple[Format, ...] = UPLOADS) -> str:
    """``"JPEG, PNG, GIF, WebP, TIFF, BMP or AVIF"``: for messages to people."""
    names = [f.label for f in formats]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def mime_for_extension(extension: str) -> str | None:
    fmt = BY_EXTENSION.get(extension.lower())
    return fmt.mime if fmt else None


def sniff(data: bytes) -> tuple[Format | None, str | None]:
    """What the bytes are: ``(format, None)`` for an uploadable one, ``(None, name)`` for one
    refused by name (SVG, PDF, HEIC, ...), ``(None, None)`` when no signature matches."""
    head = data[:64]
    for name, test in _SIGNATURES:
        if test(head):
            fmt = BY_NAME[name]
            return (fmt, None) if fmt.upload else (None, fmt.label)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for magic, refused in REFUSED:
        if text.startswith(magic):
            return None, refused
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return None, "SVG"
    return None, None
