"""The resize handler's work: one uploaded object in, renditions and a status record out.

Storage does the S3 calls and imaging the pixels; this module only orders them so that every
delivery of an event, duplicated, racing, late, retried after a crash or re-driven by the
reconciler, ends in the same state whatever a delete or an overwrite does meanwhile
(docs/convergence.md states the invariants):

1. refuse keys outside the watched prefix (the handler can never run on its own output);
2. HEAD the object: size is checked before any byte is downloaded;
3. its image: a presigned upload's id is in its key (when a grant could have written it); any
   other object under ``uploads/`` is copied to an original of its own, ``originals/{id}``, and
   leaves the inbox, so two uploads to one key are two images that share no bytes;
4. list the image's keys: a tombstone means it was deleted (the upload, a grant reused after the
   deletion, is removed and nothing is written); a final record for this version of the original
   (its ETag) means this event was handled;
5. mark the image unsettled in the reconciler's index, and write ``pending``;
6. read, decode and resize, then write every rendition;
7. write the final ``ready`` (or ``failed``) record last, so an image is listed as ready only once
   all its renditions exist;
8. after every write, HEAD the original: deleted meanwhile, remove everything of the image;
   replaced meanwhile, remove what this version wrote (the replacement's own delivery takes over).
   A deletion removes the original before it lists what to delete, so whatever was written before
   a check that still found the original is in that listing, and whatever was written after it is
   removed by this delivery;
9. settle: drop every other record and older versions' renditions, and the marker.
10. a version settled ``failed``: tag its original so the upload bucket's lifecycle expires it
    (``_tag_failed``; a ready image's original never keeps that tag).

S3 errors that survive the client's retries are raised, so Lambda retries the event (and the
reconciler re-drives it later, a bounded number of times); problems with the image itself are
recorded as ``failed`` with a stable code, and the original is kept.
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import storage
from .config import Settings
from .errors import ImageshelfError, too_large
from .timing import Stopwatch

if TYPE_CHECKING:
    from . import imaging

log = logging.getLogger("imageshelf.processing")

# Called after each step with its name (tests put barriers here to interleave deletes, overwrites
# and other deliveries deterministically); None in production.
on_step: Callable[[str, Outcome], None] | None = None


@dataclass
class Outcome:
    """What one invocation did: logged as one JSON line per event."""

    key: str
    request_id: str | None = None  # the Lambda invocation's
    # ready | failed | duplicate | superseded | deleted | ignored | retry
    outcome: str = "ignored"
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


class _Gone(Exception):
    """The original was deleted or replaced while this delivery worked; it has cleaned up."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def _step(name: str, outcome: Outcome) -> None:
    if on_step is not None:
        on_step(name, outcome)


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
    return _logged(
        Outcome(key=key, request_id=request_id), line_log, lambda o: _process(bucket, key, settings, o)
    )


def process_image(
    image_id: str,
    key: str,
    settings: Settings,
    request_id: str | None = None,
    line_log: logging.Logger | None = None,
) -> Outcome:
    """Process the image ``image_id`` from its original ``key`` (``uploads/{id}`` or
    ``originals/{id}``): what the reconciler does for an upload that never settled."""

    def work(outcome: Outcome) -> None:
        outcome.image_id = image_id
        with outcome.timed("head"):
            upload = storage.head_upload(key, settings)
        if upload is None:
            outcome.error_message = "the original is gone"
            return
        outcome.bytes_in = upload.size
        _process_original(image_id, upload, settings, outcome)

    return _logged(Outcome(key=key, request_id=request_id), line_log, work)


def _logged(outcome: Outcome, line_log: logging.Logger | None, work: Callable[[Outcome], None]) -> Outcome:
    try:
        work(outcome)
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
    outcome.bytes_in = upload.size
    _step("head", outcome)
    image_id = storage.granted_id(key, upload.last_modified, settings)
    objects = None
    if image_id is None:
        # Put by any S3 client (or named like an id no grant could have made): an image of its own.
        outcome.image_id = image_id = storage.derived_id(key, upload.etag, upload.last_modified)
        objects = storage.image_objects(image_id, settings)
        if any(storage.is_tombstone(obj["Key"]) for obj in objects):
            # A retry of an upload whose image was deleted since: it must not come back.
            storage.delete_upload(key, settings, etag=upload.etag)
            outcome.outcome, outcome.error_message = "deleted", "the image was deleted"
            return
        with outcome.timed("claim"):
            owned = storage.claim_upload(upload, image_id, settings)
        if owned is None:
            outcome.outcome = "superseded"
            outcome.error_message = "the object was replaced before it could be copied; its own event follows"
            return
        _step("claimed", outcome)
        outcome.image_id = image_id
        _process_original(image_id, owned, settings, outcome, objects)
        # Settled (or deleted): the inbox copy goes, unless a second upload replaced it meanwhile.
        storage.release_upload(upload, settings)
        return
    outcome.image_id = image_id
    _process_original(image_id, upload, settings, outcome, objects)


def _process_original(
    image_id: str,
    upload: storage.UploadObject,
    settings: Settings,
    outcome: Outcome,
    objects: list[dict[str, Any]] | None = None,
) -> None:
    """Steps 4 to 9 for the image's own original ``upload`` (``objects``: its keys, if just listed)."""
    version = storage.version_tag(upload.etag)
    if objects is None:
        objects = storage.image_objects(image_id, settings)
    _step("listed", outcome)
    if any(storage.is_tombstone(obj["Key"]) for obj in objects):
        # Deleted: an original here now came through a grant reused after the deletion.
        storage.delete_upload(upload.key, settings, etag=upload.etag)
        storage.purge_image(image_id, settings)
        outcome.outcome, outcome.error_message = "deleted", "the image was deleted"
        return
    mine = [r for r in storage.image_records(image_id, objects) if r.version == version]
    if any(r.status != "pending" for r in mine):
        if not any(r.status == "ready" for r in mine):
            _tag_failed(upload, image_id, settings)  # a retry after the tagging failed sets it
        outcome.outcome = "duplicate"
        return
    pending = storage.Record(
        id=image_id, status="pending", filename=upload.filename, bytes=upload.size, version=version,
        at=int(upload.last_modified.timestamp()), source_key=upload.key,
    )  # fmt: skip

    def check(remark: bool = False) -> None:
        _check(upload, image_id, version, settings, remark)

    try:
        storage.mark_unsettled(image_id, upload.key, settings)
        if not mine:
            storage.put_record(pending, settings)
            check()
        _step("pending", outcome)
        final = _final_record(upload, pending, outcome, settings, check)
        with outcome.timed("record"):
            storage.put_record(final, settings)
            _step("final", outcome)
            listed = storage.image_objects(image_id, settings)
            storage.clear_marker(image_id, settings)
            check(remark=True)  # a replacement's marker cleared just now is put back
            storage.settle(image_id, version, settings, listed)
        _step("settled", outcome)
    except _Gone as gone:
        outcome.outcome, outcome.error_message = gone.outcome, gone.message
        return
    if final.status == "failed":
        _tag_failed(upload, image_id, settings)
    elif any(r.status == "failed" for r in storage.image_records(image_id, listed)):
        # A failed record beside this ready one (the reconciler's timeout of this version, an
        # older version's delivery): its tag may have landed on this original, an image's.
        storage.tag_failed(upload.key, settings, failed=False)
    if final.status == "ready" and settings.delete_originals:
        storage.delete_upload(upload.key, settings, etag=upload.etag)
    outcome.outcome = final.status
    outcome.error_code, outcome.error_message = final.error_code, final.error_message


def _tag_failed(upload: storage.UploadObject, image_id: str, settings: Settings) -> None:
    """Tag the original of a version that settled ``failed``, so the upload bucket's lifecycle
    expires it (tools/provision.py); the reconciler's sweep then removes its record.

    S3 tags whatever object is at the key, with no condition: if the original was replaced
    meanwhile, or this version became ready after all (a late delivery beside the reconciler's
    timeout), the tag may sit on an image's original. So, after tagging, HEAD the original and
    list its records: unless the current original's own state is ``failed``, the tag goes. A
    ready delivery does the reverse (it clears the tag when it lists a failed record beside its
    own), so whichever finishes last, no ready image's original keeps the tag.
    """
    if not storage.tag_failed(upload.key, settings):
        return  # deleted: nothing is left to expire
    now = storage.head_upload(upload.key, settings)
    if now is None:
        return
    current = storage.version_tag(now.etag)
    states = {r.status for r in storage.image_records(image_id, storage.image_objects(image_id, settings))
              if r.version == current}  # fmt: skip
    if "failed" not in states or "ready" in states:
        storage.tag_failed(upload.key, settings, failed=False)


def _check(
    upload: storage.UploadObject, image_id: str, version: str, settings: Settings, remark: bool
) -> None:
    """Raise _Gone, having cleaned up, if the original is no longer the one being processed.

    Deleted (``DELETE /images/{id}``, or by hand): nothing of the image may stay. Replaced (the
    same grant used again): what this version wrote goes, and the replacement's own delivery
    takes over (``remark``: its place in the reconciler's index is put back).
    """
    now = storage.head_upload(upload.key, settings)
    if now is not None and now.etag == upload.etag:
        return
    if now is None:
        objects = storage.image_objects(image_id, settings)
        if settings.delete_originals and any(
            r.version == version and r.status == "ready" for r in storage.image_records(image_id, objects)
        ):
            # DELETE_ORIGINALS: another delivery of this upload finished first and removed it.
            storage.settle(image_id, version, settings, objects)
            raise _Gone("duplicate", "another delivery of this upload finished first")
        storage.purge_image(image_id, settings, objects)
        raise _Gone("deleted", "the original was deleted while it was processed")
    objects = storage.image_objects(image_id, settings)
    storage.purge_version(image_id, version, settings, objects)
    newest = storage.version_tag(now.etag)
    if any(r.version == newest and r.status != "pending" for r in storage.image_records(image_id, objects)):
        storage.clear_marker(image_id, settings)  # the replacement settled first: nothing is left to do
    elif remark:
        storage.mark_unsettled(image_id, upload.key, settings)
    raise _Gone("superseded", "the original was replaced while it was processed; its own event follows")


def _final_record(
    upload: storage.UploadObject,
    pending: storage.Record,
    outcome: Outcome,
    settings: Settings,
    check: Callable[[], None],
) -> storage.Record:
    """Make and write the renditions: the ``ready`` record, or a ``failed`` one with its code."""
    try:
        return _render(upload, pending, outcome, settings, check)
    except ImageshelfError as error:
        return replace(pending, status="failed", error_code=error.code, error_message=error.message)
    except _Gone:
        raise
    except Exception as error:
        if storage.is_transient(error):
            raise  # Lambda retries the event; the pending record stays until it succeeds
        check()  # the read fails once the original is replaced (If-Match) or deleted
        log.exception("processing %s failed", upload.key)
        return replace(
            pending,
            status="failed",
            error_code="internal_error",
            error_message=f"Processing failed ({storage.describe(error)}); the original is kept.",
        )


def record_timeout(image_id: str, key: str, attempts: int, settings: Settings) -> Outcome:
    """The reconciler gives up on an upload after ``attempts`` re-drives: ``processing_timeout``."""
    outcome = Outcome(key=key, image_id=image_id)
    upload = storage.head_upload(key, settings)
    if upload is None:
        return outcome
    version = storage.version_tag(upload.etag)
    failed = storage.Record(
        id=image_id, status="failed", filename=upload.filename, bytes=upload.size, version=version,
        at=int(upload.last_modified.timestamp()), source_key=key, error_code="processing_timeout",
        error_message=f"The image could not be processed after {attempts} attempts; the original is kept. "
        "Upload it again; if this persists, check the resize function's logs.",
    )  # fmt: skip
    try:
        storage.put_record(failed, settings)
        listed = storage.image_objects(image_id, settings)
        storage.clear_marker(image_id, settings)
        _check(upload, image_id, version, settings, remark=True)
        storage.settle(image_id, version, settings, listed)
    except _Gone as gone:
        outcome.outcome, outcome.error_message = gone.outcome, gone.message
        return outcome
    _tag_failed(upload, image_id, settings)
    outcome.outcome, outcome.error_code = "failed", "processing_timeout"
    return outcome


def _render(
    upload: storage.UploadObject,
    pending: storage.Record,
    outcome: Outcome,
    settings: Settings,
    check: Callable[[], None],
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
    _step("read", outcome)
    # Fills durations_ms with decode, resize and encode, even when the image is refused.
    info, renditions = imaging.render(
        data,
        [box for _, box in settings.renditions],
        limits,
        timings=outcome.durations_ms,
        alternates=settings.rendition_formats,
    )
    # GET /images/{id}/info answers from these: read now, while the bytes are here. The dominant
    # colour comes from the smallest rendition's few pixels.
    with outcome.timed("identify"):
        details = _identify(data, limits, min(renditions, key=lambda r: r.width * r.height))
    del data
    with outcome.timed("write"):
        for (name, _), rendition in zip(settings.renditions, renditions, strict=True):
            size = (rendition.width, rendition.height)
            for encoded in (*rendition.alternates, rendition):  # the JPEG/PNG last: it is the rendition
                storage.put_rendition(
                    pending.id, name, encoded.data, size, pending.version or "", encoded.format, settings
                )
                outcome.bytes_out += len(encoded.data)
            check()
            _step(f"rendition:{name}", outcome)
    return replace(
        pending,
        status="ready",
        content_type=info.content_type,
        format=info.format,
        width=info.width,
        height=info.height,
        frames=info.frames,
        animated=any(r.animated for r in renditions),
        placeholder=info.placeholder,
        formats=",".join(settings.rendition_formats).lower() or None,
        identified=details is not None or None,
        details=details,
    )


def _identify(data: bytes, limits: imaging.Limits, smallest: imaging.Encoded) -> dict[str, Any] | None:
    """The original's details for GET /images/{id}/info; None (logged) if they cannot be read:
    the renditions are good, and only the details are missing."""
    try:
        from . import transform

        details: dict[str, Any] = transform.identify(
            data, limits, pixels=None if smallest.animated else smallest.data
        )
    except Exception:
        log.warning("could not read the details of an image that rendered", exc_info=True)
        return None
    return details


def needs_reprocessing(record: storage.Record, settings: Settings) -> bool:
    """A ready image processed before placeholders or details, or with other RENDITION_FORMATS."""
    wanted = ",".join(settings.rendition_formats).lower() or None
    return record.status == "ready" and (
        record.placeholder is None or record.formats != wanted or not record.identified
    )


def reprocess_image(image_id: str, settings: Settings, line_log: logging.Logger | None = None) -> Outcome:
    """Redo a ready image's renditions from its original with today's settings (``make reprocess``):
    its placeholder and the RENDITION_FORMATS copies are added, the JPEG/PNG rewritten as they were.

    Idempotent: an image already processed with today's settings is left alone (``duplicate``).
    The original must still be the version the record describes; a replacement or a deletion
    meanwhile is left to its own delivery, as for a first processing (``_check``).
    """

    def work(outcome: Outcome) -> None:
        outcome.image_id = image_id
        objects = storage.image_objects(image_id, settings)
        record = storage.image_state(image_id, objects)
        if record is None or not needs_reprocessing(record, settings):
            outcome.outcome = "duplicate"
            return
        (old_key,) = [
            key
            for key, parsed in storage.parse_image_keys(image_id, objects)
            if isinstance(parsed, storage.Record)
            and parsed.status == "ready"
            and parsed.version == record.version
        ][-1:]
        outcome.key = str(storage.read_record_body(record, settings).get("source_key") or "")
        upload = storage.head_upload(outcome.key, settings) if outcome.key else None
        if upload is None or storage.version_tag(upload.etag) != record.version:
            outcome.error_message = "the original is gone or was replaced: its own processing follows"
            return
        outcome.bytes_in = upload.size
        version = record.version or ""
        try:
            final = _render(
                upload, record, outcome, settings, lambda: _check(upload, image_id, version, settings, False)
            )
            with outcome.timed("record"):
                new_key = storage.put_record(replace(final, renditions=()), settings)
                if new_key != old_key:
                    storage.delete_keys(settings.images_bucket, [old_key])
        except _Gone as gone:
            outcome.outcome, outcome.error_message = gone.outcome, gone.message
            return
        outcome.outcome = "ready"

    return _logged(Outcome(key="", request_id=None), line_log, work)
