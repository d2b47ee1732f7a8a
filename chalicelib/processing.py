"""The resize handler's work: one uploaded object in, renditions and a status record out.

Storage does the S3 calls and imaging the pixels; this module only orders them so that
every delivery of an event, duplicated or racing or retried after a crash, ends in the
same state, and nothing is lost:

1. refuse keys outside the watched prefix (the handler can never run on its own output);
2. HEAD the object: size is checked before any byte is downloaded;
3. a final record for this version of the original (its ETag) means this event was handled;
4. write a ``pending`` record (the gallery shows the upload while it is processed);
5. read, decode and resize, then write every rendition;
6. write the final ``ready`` (or ``failed``) record last, so an image is listed as ready only
   once all its renditions exist;
7. HEAD the original again: deleted meanwhile, remove what was written; replaced meanwhile,
   leave the image to the replacement's event; otherwise drop every other record and older
   versions' renditions.

S3 errors that survive the client's retries are raised, so Lambda retries the event;
problems with the image itself are recorded as ``failed`` with a stable code, and the
original is kept.
"""

from __future__ import annotations

import json
import logging
import resource
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from . import storage
from .config import Settings
from .errors import ImageshelfError, too_large
from .timing import Stopwatch

log = logging.getLogger("imageshelf.processing")


@dataclass
class Outcome:
    """What one invocation did: logged as one JSON line per event."""

    key: str
    request_id: str | None = None  # the Lambda invocation's
    outcome: str = "ignored"  # ready | failed | duplicate | superseded | ignored | retry
    image_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    durations_ms: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # of the process (on Lambda: the warm container) so far

    def as_log(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def timed(self, stage: str) -> AbstractContextManager[None]:
        """``with outcome.timed("read"):`` adds the block's milliseconds to ``durations_ms``."""
        return Stopwatch(self.durations_ms)(stage)


def log_json_lines(logger: logging.Logger) -> None:
    """Log at INFO with the bare message: each Outcome line is then a JSON event whose fields
    CloudWatch Logs Insights reads (``filter outcome = "failed" | stats count() by error_code``)."""
    logger.setLevel(logging.INFO)
    for handler in logger.handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))


def process_upload(
    bucket: str,
    key: str,
    settings: Settings,
    request_id: str | None = None,
    line_log: logging.Logger | None = None,
) -> Outcome:
    """Make the renditions of the object ``key`` in ``bucket`` (an S3 event's object).

    Logs one JSON line to ``line_log`` (the app's log) however it ends, raised errors included.
    """
    outcome = Outcome(key=key, request_id=request_id)
    try:
        _process(bucket, key, settings, outcome)
    except Exception as error:
        outcome.outcome = "retry"  # raised on: Lambda delivers the event again
        outcome.error_message = storage.describe(error)
        raise
    finally:
        outcome.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if line_log is not None:
            line_log.info(json.dumps(outcome.as_log(), ensure_ascii=False))
    return outcome


def _process(bucket: str, key: str, settings: Settings, outcome: Outcome) -> None:
    if bucket != settings.upload_bucket or not storage.is_upload_key(key):
        outcome.error_message = (
            f"not an upload: s3://{bucket}/{key} is outside s3://{settings.upload_bucket}/uploads/"
        )
        return
    if key.endswith("/"):
        outcome.error_message = "a folder marker, not a file"
        return
    with outcome.timed("head"):
        upload = storage.head_upload(key, settings)
    if upload is None:
        outcome.error_message = "the object was deleted before it could be processed"
        return
    outcome.image_id = image_id = storage.id_for_upload(key, upload)
    outcome.bytes_in = upload.size
    version = storage.version_tag(upload.etag)
    current = storage.get_record(image_id, settings)
    if current is not None and current.status != "pending" and current.version in (None, version):
        outcome.outcome = "duplicate"
        return
    pending = storage.Record(
        id=image_id, status="pending", filename=upload.filename, bytes=upload.size, version=version,
        source_key=key,
    )  # fmt: skip
    if current is None:
        storage.put_record(pending, settings)
    try:
        final = _render(upload, pending, outcome, settings)
    except ImageshelfError as error:
        final = replace(pending, status="failed", error_code=error.code, error_message=error.message)
    except Exception as error:
        if storage.is_transient(error):
            raise  # Lambda retries the event; the pending record stays until it succeeds
        if _superseded(upload, outcome, settings):
            return
        log.exception("processing %s failed", key)
        final = replace(
            pending,
            status="failed",
            error_code="internal_error",
            error_message=f"Processing failed ({storage.describe(error)}); the original is kept.",
        )
    with outcome.timed("record"):
        storage.put_record(final, settings)
        if _superseded(upload, outcome, settings):
            return
        storage.settle(image_id, version, settings)
    if final.status == "ready" and settings.delete_originals:
        storage.delete_upload(key, settings)
    outcome.outcome = final.status
    outcome.error_code, outcome.error_message = final.error_code, final.error_message


def _superseded(upload: storage.UploadObject, outcome: Outcome, settings: Settings) -> bool:
    """True if the original was deleted or replaced while this delivery worked on it.

    Deleted (``DELETE /images/{id}`` while it was processing): remove what this delivery wrote,
    so the image does not come back. Replaced (a second upload to the same key): leave the image
    to the replacement's own event.
    """
    now = storage.head_upload(upload.key, settings)
    if now is not None and now.etag == upload.etag:
        return False
    outcome.outcome = "superseded"
    if now is None:
        outcome.error_message = "the original was deleted while it was processed"
        storage.purge_image(outcome.image_id or "", settings)
    else:
        outcome.error_message = "the original was replaced while it was processed; its own event follows"
    return True


def _render(
    upload: storage.UploadObject, pending: storage.Record, outcome: Outcome, settings: Settings
) -> storage.Record:
    """Read, check, resize and write renditions; the ``ready`` record to write last."""
    # Pillow is imported here, not at module import: the API function never loads it.
    from . import imaging

    limits = imaging.Limits(settings.max_upload_bytes, settings.max_pixels, settings.max_frames)
    if upload.size == 0:
        raise ImageshelfError("empty_file", "The file is empty (0 bytes). Upload the photo again.")
    if upload.size > settings.max_upload_bytes:
        raise too_large(upload.size, settings.max_upload_bytes)
    with outcome.timed("read"):
        data = storage.read_upload(upload, settings)
    # Fills durations_ms with decode, resize and encode, even when the image is refused.
    info, renditions = imaging.render(
        data, [box for _, box in settings.renditions], limits, timings=outcome.durations_ms
    )
    del data
    with outcome.timed("write"):
        for (name, _), rendition in zip(settings.renditions, renditions, strict=True):
            size = (rendition.width, rendition.height)
            storage.put_rendition(
                pending.id, name, rendition.data, size, pending.version or "", rendition.extension, settings
            )
            outcome.bytes_out += len(rendition.data)
    return replace(
        pending,
        status="ready",
        content_type=info.content_type,
        format=info.format,
        width=info.width,
        height=info.height,
        frames=info.frames,
        animated=any(r.animated for r in renditions),
    )
