"""On-demand renders and image details: asked for by URL, made once, cached in the images bucket.

``GET /images/{id}/render?...`` answers a redirect to the cached object. A hit costs one
HeadObject and no decode. A miss lists the image's keys (it must be ready), takes the render's
lease so that a burst of identical misses renders once while the rest wait for the object, reads
the original (or, with DELETE_ORIGINALS, the largest rendition), renders (``transform.py``, with
the uploads' limits), stores the object, and checks the original was neither replaced nor
deleted meanwhile. ``info`` answers from what processing stored: the original is never read.

The bundled sample photo (``sample.jpg``) goes through the same paths as ``"sample"``.
Pillow is imported only for a miss or the sample's details: listing and presigning never load it.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import auth, images, operations, storage
from .config import Settings
from .errors import ImageshelfError
from .filenames import content_disposition
from .operations import Spec

SAMPLE = "sample"
SAMPLE_PATH = Path(__file__).with_name("sample.jpg")
SAMPLE_FILENAME = "sample.jpg"
# How long a request waits for a render another request is making (the API function has 28 s).
WAIT_SECONDS = 20.0
_POLL = (0.05, 0.1, 0.2, 0.3, 0.5)  # then 0.5 s between looks


@dataclass(frozen=True)
class Rendered:
    """Where a render is, and what a redirect to it must say."""

    key: str
    url: str
    vary_accept: bool  # format=auto: the object depends on the request's Accept
    content_type: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "content_type": self.content_type,
            "bytes": self.bytes,
            "width": self.width,
            "height": self.height,
        }


@dataclass(frozen=True)
class _Source:
    """What a miss renders from, and what it must still be when the render is stored."""

    owner: str  # the image id, or storage.SAMPLE_OWNER
    version: str
    filename: str
    read: Any  # () -> bytes


def render(
    subject: str,
    params: Mapping[str, Sequence[str]],
    accept: str | None,
    settings: Settings,
    signed: bool = True,
) -> Rendered:
    """The render ``params`` ask for of image ``subject`` (or ``"sample"``): made if not cached.
    ``signed=False`` skips the signature check (the Lambda entry point, which IAM authorises)."""
    # A preset needs no key: the gallery's renders keep working while SSM is unreachable.
    key = signing_key(settings) if signed and operations.PRESET not in params else ""
    if signed and settings.render_signing_required and not key:
        key = "\x00no key stored"  # fail closed: only presets until the stage's key exists
    spec = operations.request_spec(params, subject, dict(settings.render_presets), key)
    return render_spec(subject, spec, accept, settings)


def render_spec(subject: str, spec: Spec, accept: str | None, settings: Settings) -> Rendered:
    """``render`` of an authorised ``Spec``."""
    resolved = operations.resolve(spec, accept)
    owner = storage.SAMPLE_OWNER if subject == SAMPLE else _checked_id(subject)
    salt = _sample_version() if subject == SAMPLE else ""
    key = storage.render_key(owner, _digest(resolved, salt))
    head = storage.head_render(key, settings)
    if head is None:
        head = _make(
            key, resolved, _sample_source() if subject == SAMPLE else _image_source(owner, settings), settings
        )
    return _rendered(key, head, spec.format == "auto", settings)


def info(subject: str, settings: Settings) -> dict[str, Any]:
    """``GET /images/{id}/info``: the original's details, read when it was processed."""
    if subject == SAMPLE:
        return {"id": SAMPLE, "filename": SAMPLE_FILENAME, **_sample_details()}
    image_id = _checked_id(subject)
    record = _ready(image_id, storage.image_objects(image_id, settings), settings)
    details = storage.read_record_body(record, settings).get("details") if record.identified else None
    if not isinstance(details, dict):  # processed before details were kept: `make reprocess`
        details = dict.fromkeys(DETAIL_FIELDS) | {
            "format": record.format,
            "content_type": record.content_type,
            "width": record.width,
            "height": record.height,
            "frames": record.frames,
            "animated": record.animated,
        }
    return {"id": image_id, "filename": record.filename, **details}


DETAIL_FIELDS = (
    "format", "content_type", "width", "height", "frames", "animated", "mode", "bit_depth",
    "has_alpha", "color_profile", "orientation", "camera", "has_location", "dominant_color",
)  # fmt: skip


def signing_key(settings: Settings) -> str:
    """The render signing key in force (``RENDER_SIGNING_KEY`` or its SSM parameter), or ``""``."""
    return auth.render_signing_key(settings)


# --- a miss --------------------------------------------------------------------------------


def _make(key: str, spec: Spec, source: _Source, settings: Settings) -> dict[str, Any]:
    """Render into ``key`` once: the lease holder renders, everyone else waits for its object."""
    deadline = time.monotonic() + WAIT_SECONDS
    for delay in (*_POLL, *([0.5] * int(WAIT_SECONDS / 0.5))):
        if storage.take_render_lease(key, settings):
            try:
                head = storage.head_render(key, settings)  # made while we looked
                if head is None:
                    head = _render_and_store(key, spec, source, settings)
                return head
            finally:
                storage.release_render_lease(key, settings)
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        head = storage.head_render(key, settings)
        if head is not None:
            return head
    raise ImageshelfError(
        "render_busy", "This render is still being made by another request: try again in a few seconds."
    )


def _render_and_store(key: str, spec: Spec, source: _Source, settings: Settings) -> dict[str, Any]:
    from . import imaging, transform  # Pillow: only when something is rendered

    limits = imaging.Limits(settings.max_upload_bytes, settings.max_pixels, settings.max_frames)
    out = transform.render(source.read(), spec, limits)
    filename = f"{Path(source.filename).stem or 'image'}.{out.format.extension}"
    disposition = content_disposition(filename, attachment=spec.download)
    meta = {"version": source.version, "width": str(out.width), "height": str(out.height)}
    storage.put_render(key, out.data, out.format, meta, disposition, settings)
    if source.owner != storage.SAMPLE_OWNER:
        # Deleted or replaced while we rendered: what we stored describes no current original.
        record = storage.get_record(source.owner, settings)
        if record is None or record.status != "ready" or record.version != source.version:
            storage.delete_image_object(key, settings)
            raise ImageshelfError(
                "not_found" if record is None else "image_pending",
                "The image was deleted while it was being rendered."
                if record is None
                else "The image was replaced while it was being rendered: ask again shortly.",
            )
    return {"ContentType": out.format.mime, "ContentLength": len(out.data), "Metadata": meta}


def _image_source(image_id: str, settings: Settings) -> _Source:
    objects = storage.image_objects(image_id, settings)
    record = _ready(image_id, objects, settings)
    version = record.version or ""

    def read() -> bytes:
        source_key = str(storage.read_record_body(record, settings).get("source_key") or "")
        upload = storage.head_upload(source_key, settings) if source_key else None
        if upload is not None and storage.version_tag(upload.etag) == version:
            return storage.read_upload(upload, settings)
        if record.renditions:  # DELETE_ORIGINALS: the largest rendition is the best there is
            return storage.read_image_object(record.renditions[-1].key, settings, settings.max_upload_bytes)
        raise ImageshelfError("image_pending", "The image's original is being replaced: ask again shortly.")

    return _Source(image_id, version, record.filename, read)


def _ready(image_id: str, objects: list[dict[str, Any]], settings: Settings) -> storage.Record:
    """The image's ready record; ``not_found``, ``image_pending`` or ``image_failed`` otherwise."""
    record = images.current(image_id, objects, settings)
    if record.status == "pending":
        raise ImageshelfError(
            "image_pending", "The image is still being processed: ask again when its status is ready."
        )
    if record.status == "failed":
        raise ImageshelfError(
            "image_failed",
            f"The image could not be processed ({record.error_code}): "
            f"{record.error_message or 'no reason given'}",
        )
    return record


def _rendered(key: str, head: Mapping[str, Any], vary_accept: bool, settings: Settings) -> Rendered:
    meta = head.get("Metadata") or {}
    return Rendered(
        key=key,
        url=storage.rendition_url(key, settings),
        vary_accept=vary_accept,
        content_type=head.get("ContentType"),
        bytes=head.get("ContentLength"),
        width=_int_or_none(meta.get("width")),
        height=_int_or_none(meta.get("height")),
    )


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _digest(spec: Spec, salt: str) -> str:
    """The cached object's name: a hash of the normalised parameters (and the sample's version)."""
    return hashlib.sha256(f"{salt}|{spec.canonical}".encode()).hexdigest()[:32]


def _checked_id(subject: str) -> str:
    images.check_id(subject)  # validated before any S3 call
    return subject


# --- the sample ------------------------------------------------------------------------------


@functools.cache
def _sample_bytes() -> bytes:
    return SAMPLE_PATH.read_bytes()


def _sample_version() -> str:
    return hashlib.sha256(_sample_bytes()).hexdigest()[:10]


def _sample_source() -> _Source:
    return _Source(storage.SAMPLE_OWNER, _sample_version(), SAMPLE_FILENAME, _sample_bytes)


@functools.cache
def _sample_details() -> dict[str, Any]:
    from . import transform

    return transform.identify(_sample_bytes())
