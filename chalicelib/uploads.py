"""``POST /uploads``: check what the client asks for and answer with a presigned URL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from . import auth, formats, storage
from .config import Settings
from .errors import ImageshelfError, too_large
from .filenames import clean_filename

_FIELDS = ("filename", "content_type", "size", "method")
# "Not blank" as the OpenAPI pattern \S means it (ECMA-262 white space, not Python's, which also
# counts the separators \x1c-\x1f); control characters are then removed by clean_filename.
_NOT_BLANK = re.compile("[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]")
_EXAMPLE = '{"filename": "cat.jpg", "content_type": "image/jpeg", "size": 123456}'
# Parsed as JSON whatever the client calls it (curl -d sends form-urlencoded).
REQUEST_CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]
# What a client sends when it cannot name the file's type (a browser reports a JPEG without an
# extension as "", scripts say application/octet-stream): accepted, signed as the latter (what
# the client is told to send), and judged by the bytes, as every upload is.
UNNAMED_TYPE = "application/octet-stream"


def parse_request(body: bytes | None, settings: Settings) -> dict[str, Any]:
    """Validate an upload request; raises ImageshelfError saying what to send instead."""
    try:
        request = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise ImageshelfError("invalid_request", f"Send a JSON object, for example {_EXAMPLE}.") from None
    if not isinstance(request, dict):
        raise ImageshelfError("invalid_request", f"Send a JSON object, for example {_EXAMPLE}.")
    unknown = sorted(set(request) - set(_FIELDS))
    if unknown:
        raise ImageshelfError(
            "invalid_request", f"Unknown field {unknown[0]!r}; the fields are {', '.join(_FIELDS)}."
        )
    filename = request.get("filename")
    if not isinstance(filename, str) or not _NOT_BLANK.search(filename):
        raise ImageshelfError(
            "invalid_request", "'filename' is required: the photo's file name, e.g. cat.jpg."
        )
    content_type = request.get("content_type")
    if not isinstance(content_type, str):
        raise ImageshelfError("invalid_request", "'content_type' is required, e.g. image/jpeg.")
    content_type = content_type.split(";")[0].strip().lower() or UNNAMED_TYPE
    if content_type != UNNAMED_TYPE and formats.for_upload(content_type) is None:
        raise ImageshelfError(
            "unsupported_media_type",
            f"{content_type or 'That type'} is not accepted; "
            f"upload one of: {', '.join(formats.upload_types())}.",
        )
    method = request.get("method", "post")
    if not isinstance(method, str) or method.lower() not in ("post", "put"):
        raise ImageshelfError("invalid_request", "'method' is 'post' (browsers, the default) or 'put'.")
    method = method.lower()
    size = request.get("size")
    if isinstance(size, float) and size.is_integer():
        size = int(size)  # 2048.0 is a whole number too (JSON has one number type)
    if size is None and method == "put":
        raise ImageshelfError("invalid_request", "'size' (the file's length in bytes) is required for put.")
    if size == 0 and not isinstance(size, bool):
        raise ImageshelfError("empty_file", "The file is empty (0 bytes): pick the photo again.")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ImageshelfError(
                "invalid_request", "'size' is the file's length in bytes: a whole number >= 1."
            )
        if size > settings.max_upload_bytes:
            raise too_large(size, settings.max_upload_bytes)
    return {
        "filename": clean_filename(filename),
        "content_type": content_type,
        "size": size,
        "method": method,
    }


def create(body: bytes | None, settings: Settings, authorization: str | None = None) -> dict[str, Any]:
    """Pick an id and key and presign an upload to it: the response of ``POST /uploads``.

    ``authorization`` is the request's header: checked first when the stage needs an upload token.
    """
    auth.require_uploader(authorization, settings)
    request = parse_request(body, settings)
    image_id = storage.new_id()
    # In the reconciler's index from the start: if the upload's event is ever lost, it is still
    # processed; if the grant is never used, the marker goes when it expires.
    storage.mark_unsettled(image_id, storage.upload_key(image_id), settings, attempts=0)
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.upload_url_expires)
    response: dict[str, Any] = {"id": image_id, "method": request["method"].upper()}
    if request["method"] == "post":
        post = storage.presign_post(image_id, request["content_type"], request["filename"], settings)
        response.update(url=post["url"], fields=post["fields"])
    else:
        url, headers = storage.presign_put(
            image_id, request["content_type"], request["size"], request["filename"], settings
        )
        response.update(url=url, headers=headers)
    response.update(
        expires_at=expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        max_bytes=settings.max_upload_bytes,
        status_url=f"/images/{image_id}",
    )
    return response
