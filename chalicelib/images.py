"""The images API: listing, one image, deletion, and the JSON shape of an Image."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import auth, placeholder, storage
from .config import Settings
from .errors import ImageshelfError

DEFAULT_LIMIT = 24
MAX_LIMIT = 100


def to_json(record: storage.Record, settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """An Image as the API and the gallery show it."""
    status, error = record.status, None
    if record.status == "failed":
        error = {"code": record.error_code or "internal_error", "message": record.error_message or ""}
    elif record.status == "pending" and _age(record, now) > settings.pending_timeout:
        # Lambda gave up on the event (or never ran): say so rather than spin forever.
        status = "failed"
        error = {
            "code": "processing_timeout",
            "message": f"The image was not processed within {settings.pending_timeout} seconds. "
            "Upload it again; if this persists, check the resize function's logs.",
        }
    image: dict[str, Any] = {
        "id": record.id,
        "status": status,
        "created_at": record.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "original": {
            "filename": record.filename,
            "content_type": record.content_type,
            "bytes": record.bytes,
            "width": record.width,
            "height": record.height,
            "format": record.format,
            "frames": record.frames,
        },
        "renditions": [
            {
                "name": r.name,
                "url": storage.rendition_url(r.key, settings),
                "width": r.width,
                "height": r.height,
                "content_type": r.content_type,
                "bytes": r.bytes,
                # an animation's renditions are animated too; otherwise they show the first frame
                "frames": record.frames if record.animated and record.frames else 1,
                # every format it is stored in, smallest first (the one above among them)
                "formats": [
                    {
                        "content_type": f.content_type,
                        "url": storage.rendition_url(f.key, settings),
                        "bytes": f.bytes,
                    }
                    for f in sorted(each, key=lambda f: (f.bytes, f.content_type))
                ],
            }
            for r, each in _by_name(record.renditions)
        ],
    }
    if record.status == "ready" and (shown := placeholder.to_json(record.placeholder)):
        image["placeholder"] = shown
    if error:
        image["error"] = error
    return image


# The rendition's own format, when a size is stored in several: the one every client can show.
_PRIMARY = {"image/jpeg": 0, "image/png": 1, "image/gif": 2, "image/webp": 3}


def _by_name(
    renditions: tuple[storage.Rendition, ...],
) -> list[tuple[storage.Rendition, list[storage.Rendition]]]:
    """Renditions grouped by name and size (one object per format), in listing order: each
    group's JPEG or PNG (a transparent one's lossless WebP, when that was smaller) and all."""
    groups: dict[tuple[str, int, int], list[storage.Rendition]] = {}
    for r in renditions:
        groups.setdefault((r.name, r.width, r.height), []).append(r)
    return [(min(each, key=lambda r: _PRIMARY.get(r.content_type, 9)), each) for each in groups.values()]


def _age(record: storage.Record, now: datetime | None) -> float:
    return ((now or datetime.now(UTC)) - record.created_at).total_seconds()


def parse_page_args(params: dict[str, str] | None) -> tuple[int, str | None]:
    """``limit`` (1..100, default 24) and ``cursor`` from a query string."""
    params = params or {}
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ImageshelfError("invalid_request", f"'limit' must be a whole number from 1 to {MAX_LIMIT}.")
    cursor = params.get("cursor") or None
    if cursor is not None and not storage.is_id(cursor):
        raise ImageshelfError(
            "invalid_request", "'cursor' is not valid: pass the next_cursor of the previous page."
        )
    return int(raw_limit), cursor


def page(params: dict[str, str] | None, settings: Settings) -> dict[str, Any]:
    """``GET /images``: a page of images, newest first."""
    limit, cursor = parse_page_args(params)
    records, next_cursor = storage.list_images(limit, cursor, settings)
    return {"images": [to_json(r, settings) for r in records], "next_cursor": next_cursor}


def get(image_id: str, settings: Settings) -> dict[str, Any]:
    """``GET /images/{id}``: one image, or pending when only its upload exists yet."""
    check_id(image_id)
    return to_json(current(image_id, storage.image_objects(image_id, settings), settings), settings)


def current(image_id: str, objects: list[dict[str, Any]], settings: Settings) -> storage.Record:
    """The image's record from its listed keys, or a pending one when only its upload exists yet;
    ``not_found`` when there is neither, or it was deleted."""
    if any(storage.is_tombstone(obj["Key"]) for obj in objects):
        raise not_found(image_id)  # deleted, whatever a late delivery or a reused grant did since
    record = storage.image_state(image_id, objects)
    if record is None:
        upload = storage.head_upload(storage.upload_key(image_id), settings)
        # Only an object a grant for this id could have written is this image's upload.
        if upload is None or storage.granted_id(upload.key, upload.last_modified, settings) != image_id:
            raise not_found(image_id)
        record = storage.Record(id=image_id, status="pending", filename=upload.filename, bytes=upload.size)
    return record


def delete(image_id: str, authorization: str | None, settings: Settings) -> None:
    """``DELETE /images/{id}``: needs ``Authorization: Bearer <admin token>``."""
    auth.require_admin(authorization, settings)
    check_id(image_id)
    if not storage.delete_image(image_id, settings):
        raise not_found(image_id)


def check_id(image_id: str) -> None:
    # Validated before any S3 call: no user input reaches a key unchecked.
    if not storage.is_id(image_id):
        raise not_found(image_id)


def not_found(image_id: str) -> ImageshelfError:
    shown = image_id if len(image_id) <= 40 else image_id[:40] + "…"
    return ImageshelfError("not_found", f"No image has the id {shown!r}.")
