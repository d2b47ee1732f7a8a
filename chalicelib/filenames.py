"""Uploaders' file names: made safe to store and show, and encoded for S3 object metadata.

Not storage: the rules are about what a person sees (no folders, no control characters, a length
a gallery caption can hold) and what fits in S3's 2 KB of ASCII user metadata.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

MAX_FILENAME = 255
_MAX_FILENAME_METADATA = 1024


def clean_filename(raw: str) -> str:
    """A filename safe to store and show: no folders, no control characters, <= 255 chars."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if name in ("", ".", ".."):
        name = "upload"
    name = name[:MAX_FILENAME]
    # S3 allows 2 KB of user metadata; percent-encoding makes a CJK character 9 bytes.
    stem, dot, extension = name.rpartition(".") if len(name.rpartition(".")[2]) <= 10 else (name, "", "")
    while len(encode_filename(name)) > _MAX_FILENAME_METADATA and len(stem) > 1:
        stem = stem[: -max(1, len(stem) // 10)]
        name = f"{stem}{dot}{extension}"
    return name


def encode_filename(filename: str) -> str:
    """Filenames travel in S3 metadata, which must be ASCII: percent-encode them."""
    return quote(filename, safe=" ()[]-_.,~!'")


def decode_filename(encoded: str) -> str:
    """The filename an upload's metadata carries, cleaned (any client may have written it)."""
    return clean_filename(unquote(encoded))


def content_disposition(filename: str, attachment: bool = False) -> str:
    """A ``Content-Disposition`` naming ``filename``: an ASCII fallback for old clients and the
    exact name RFC 6266 style (``filename*``), so any name survives and none can break the header."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in filename)
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
