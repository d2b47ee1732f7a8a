"""The reconciler: S3 is the truth, and everything else converges to it (docs/convergence.md).

Each run, scheduled (``@app.schedule`` on AWS; ``make run`` at start and every minute;
``python -m tools.reconcile`` for ``chalice local``):

1. drains the resize function's dead-letter queue, when one is configured (``RESIZE_DLQ_URL``):
   each S3 event Lambda gave up on is processed again, then deleted from the queue;
2. works the index of unsettled uploads (``~todo/{id}``: written when an upload is granted or a
   delivery starts, removed when the image settles). An upload left unsettled longer than
   ``RECONCILE_GRACE`` is processed again, at most ``RECONCILE_ATTEMPTS`` times (the count is kept
   in the marker, written before each attempt, so a crash counts too), then recorded as failed
   with ``processing_timeout``. Markers of deleted images, and of grants never used once they can
   no longer be used, are removed;
3. sweeps a slice of the images bucket (``RECONCILE_SWEEP_KEYS`` keys from a cursor kept in
   ``~sweep``) against the same range of the upload bucket: renditions and records of an image
   whose original is gone, and of versions of an original that was since replaced, are removed;
   what a deletion left half-done is finished, and tombstones go once no grant can bring their
   original back; uploads with no settled record and no marker (an event lost for good) are
   marked, so step 2 processes them.

Cost, in S3 requests per run, whatever the number of images stored: one LIST per 1,000
markers; for each upload acted on (at most ``RECONCILE_BATCH``) a GET, a LIST, up to three HEADs
and then what processing it costs; and for the sweep a GET and a PUT of the cursor, one LIST of
each bucket's slice and one DeleteObjects per 1,000 keys it removes. A run with nothing to do is
6 requests; a full sweep takes (keys in the images bucket) / ``RECONCILE_SWEEP_KEYS`` runs.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

from . import processing, storage
from .config import Settings, aws_target

log = logging.getLogger("imageshelf.reconcile")


@dataclass
class Report:
    """What one run did: logged as one JSON line."""

    redriven: list[str] = field(default_factory=list)  # image ids processed again
    timed_out: list[str] = field(default_factory=list)  # recorded as failed: processing_timeout
    settled: list[str] = field(default_factory=list)  # markers of images that had settled
    expired: list[str] = field(default_factory=list)  # markers of grants never used
    purged: list[str] = field(default_factory=list)  # images whose original is gone, or deleted
    stale_keys: int = 0  # keys of superseded versions removed
    tombstones_removed: int = 0
    marked: list[str] = field(default_factory=list)  # unsettled uploads the sweep found unmarked
    dead_letters: int = 0  # events drained from the dead-letter queue
    swept_keys: int = 0  # images-bucket keys the sweep read
    cursor: str = ""  # where the next sweep starts ("" : from the beginning)
    wrapped: bool = False  # this run's sweep reached the end of the bucket

    def as_log(self) -> dict[str, Any]:
        return {"reconcile": {k: v for k, v in asdict(self).items() if v not in ([], 0, "")}}


def run(
    settings: Settings,
    *,
    now: datetime | None = None,
    full: bool = False,
    workers: int = 1,
    line_log: logging.Logger | None = None,
) -> Report:
    """One reconciler run. ``full`` (the local stack's start): no grace, no batch limit, and the
    sweep goes over the whole bucket, so every upload the last process left unfinished is done,
    ``workers`` at a time."""
    now = now or datetime.now(UTC)
    grace = 0 if full else settings.reconcile_grace
    batch = None if full else settings.reconcile_batch
    report = Report()
    if settings.resize_dlq_url:
        drain_dead_letters(settings, report, None if full else settings.reconcile_batch, line_log)
    markers = storage.list_markers(settings)
    _work_index(markers, settings, now, grace, batch, report, line_log, workers)
    marked = {m.image_id for m in markers}
    while True:
        _sweep(settings, marked, now, grace, report)
        if not full or report.wrapped:
            break
    if full and report.marked:
        _work_index(storage.list_markers(settings), settings, now, grace, batch, report, line_log, workers)
    if line_log is not None:
        line_log.info(json.dumps(report.as_log(), ensure_ascii=False))
    return report


# --- 1. the dead-letter queue ------------------------------------------------------------------


def _sqs() -> Any:
    import boto3

    return boto3.session.Session().client("sqs", region_name=aws_target().region)


def drain_dead_letters(
    settings: Settings, report: Report, limit: int | None, line_log: logging.Logger | None = None
) -> None:
    """Process again the S3 events the resize function gave up on, then delete them from the queue.

    A message whose processing fails again stays (it comes back after its visibility timeout) until
    it has been received ``RECONCILE_ATTEMPTS`` times; by then the upload is in the index of
    unsettled work, which takes over.
    """
    sqs = _sqs()
    while limit is None or report.dead_letters < limit:
        want = 10 if limit is None else max(1, min(10, limit - report.dead_letters))
        messages = sqs.receive_message(
            QueueUrl=settings.resize_dlq_url,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=0,
            AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            return
        for message in messages:
            report.dead_letters += 1
            done = True
            for bucket, key in s3_objects(message.get("Body", "")):
                try:
                    processing.process_upload(bucket, key, settings, line_log=line_log)
                except Exception:
                    log.exception("a dead-lettered event for %s failed again", key)
                    done = False
            received = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            if done or received >= settings.reconcile_attempts:
                sqs.delete_message(QueueUrl=settings.resize_dlq_url, ReceiptHandle=message["ReceiptHandle"])


def s3_objects(body: str) -> list[tuple[str, str]]:
    """The (bucket, key) pairs of a dead-lettered S3 event: a Lambda DLQ message is the event itself,
    an on-failure destination's wraps it in ``requestPayload``. Keys arrive URL-encoded."""
    try:
        event = json.loads(body)
    except ValueError:
        return []
    if isinstance(event, dict) and isinstance(event.get("requestPayload"), dict):
        event = event["requestPayload"]
    records = event.get("Records") if isinstance(event, dict) else None
    found = []
    for record in records if isinstance(records, list) else []:
        try:
            found.append((record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])))
        except (KeyError, TypeError):
            continue  # not an S3 object event (s3:TestEvent, or junk)
    return found


# --- 2. the index of unsettled uploads ---------------------------------------------------------


def _work_index(
    markers: list[storage.Marker],
    settings: Settings,
    now: datetime,
    grace: int,
    batch: int | None,
    report: Report,
    line_log: logging.Logger | None,
    workers: int = 1,
) -> None:
    due = [m for m in sorted(markers, key=lambda m: m.last_modified)
           if not grace or m.last_modified <= now - timedelta(seconds=grace)]  # fmt: skip

    def work(marker: storage.Marker) -> bool:
        try:
            return _redrive(marker, settings, now, grace, report, line_log)
        except Exception:
            log.exception("could not reconcile image %s", marker.image_id)
            return True

    if batch is None and workers > 1:  # the local stack's start: everything, on every worker
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
            list(pool.map(work, due))
        return
    acted = 0
    for marker in due:
        if batch is not None and acted >= batch:
            return
        acted += work(marker)


def _redrive(
    marker: storage.Marker,
    settings: Settings,
    now: datetime,
    grace: int,
    report: Report,
    line_log: logging.Logger | None,
) -> bool:
    """Act on one marker; False if there was nothing to do yet (it does not count in the batch)."""
    image_id = marker.image_id
    body = storage.read_marker(image_id, settings)
    if body is None:
        return False  # settled meanwhile
    attempts: int = body["attempts"] if isinstance(body.get("attempts"), int) else 0
    source: str = body["source"] if isinstance(body.get("source"), str) else storage.upload_key(image_id)
    objects = storage.image_objects(image_id, settings)
    tombstone = next((obj for obj in objects if storage.is_tombstone(obj["Key"])), None)
    if tombstone is not None:
        return _bury(image_id, source, objects, tombstone, settings, now, grace, report)
    kind, upload = _find_original(image_id, source, settings)
    if upload is None:
        if now < _grant_deadline(image_id, settings):
            return False  # a grant that may still be used
        storage.purge_image(image_id, settings, objects)  # and any record whose original is gone
        report.expired.append(image_id)
        return True
    version = storage.version_tag(upload.etag)
    final = any(
        r.version == version and r.status != "pending" for r in storage.image_records(image_id, objects)
    )
    if final and (kind != "inbox" or storage.head_upload(storage.original_key(image_id), settings)):
        if kind == "inbox":
            storage.release_upload(upload, settings)
        # A delivery that stopped after its final record: what it had still to remove goes (listed
        # before the original was looked at, so nothing of a newer original).
        storage.settle(image_id, version, settings, objects)
        storage.clear_marker(image_id, settings)
        report.settled.append(image_id)
        return True
    latest = max([marker.last_modified, *(obj["LastModified"] for obj in objects)])
    if grace and latest > now - timedelta(seconds=grace):
        return False  # a delivery wrote something recently: still at work
    if attempts >= settings.reconcile_attempts:
        if kind == "inbox":
            owned = storage.claim_upload(upload, image_id, settings)
            if owned is None:
                return True  # replaced meanwhile: the replacement has its own marker
            processing.record_timeout(image_id, owned.key, attempts, settings)
            storage.release_upload(upload, settings)
        else:
            processing.record_timeout(image_id, upload.key, attempts, settings)
        report.timed_out.append(image_id)
        return True
    # Counted before the attempt, so an attempt that crashes the process counts too.
    storage.mark_unsettled(image_id, upload.key, settings, attempts=attempts + 1)
    report.redriven.append(image_id)
    if kind == "inbox":
        processing.process_upload(settings.upload_bucket, upload.key, settings, line_log=line_log)
    else:
        processing.process_image(image_id, upload.key, settings, line_log=line_log)
    return True


def _find_original(image_id: str, source: str, settings: Settings) -> tuple[str, storage.UploadObject | None]:
    """Where the image's upload is: ``granted`` (``uploads/{id}``), ``owned`` (``originals/{id}``)
    or ``inbox`` (an object under ``uploads/`` from any S3 client, not yet copied)."""
    for key in dict.fromkeys([source, storage.original_key(image_id), storage.upload_key(image_id)]):
        upload = storage.head_upload(key, settings)
        if upload is None:
            continue
        if key == storage.original_key(image_id):
            return "owned", upload
        if storage.granted_id(key, upload.last_modified, settings) == image_id:
            return "granted", upload
        if (
            storage.is_upload_key(key)
            and storage.derived_id(key, upload.etag, upload.last_modified) == image_id
        ):
            return "inbox", upload
    return "", None


def _bury(
    image_id: str,
    source: str,
    objects: list[dict[str, Any]],
    tombstone: dict[str, Any],
    settings: Settings,
    now: datetime,
    grace: int,
    report: Report,
) -> bool:
    """A deleted image (``DELETE`` leaves its marker, so this comes soon): remove whatever original
    came back (a reused grant, a retried inbox object) and whatever a delivery left; once no grant
    can write the original again, the tombstone and the marker go too."""
    came_back = False
    for _ in range(3):  # uploads/{id}, originals/{id}, the inbox object: each found, then removed
        upload = _find_original(image_id, source, settings)[1]
        if upload is None:
            break
        came_back = True
        storage.delete_upload(upload.key, settings, etag=upload.etag)
    doomed = [obj["Key"] for obj in objects if obj is not tombstone]
    if doomed or came_back:
        report.purged.append(image_id)
    old = tombstone["LastModified"] <= now - timedelta(seconds=grace)
    if not came_back and old and now >= _grant_deadline(image_id, settings):
        doomed += [tombstone["Key"], storage.marker_key(image_id)]
        report.tombstones_removed += 1
    storage.delete_keys(settings.images_bucket, doomed)
    return bool(doomed or came_back)


def _grant_deadline(image_id: str, settings: Settings) -> datetime:
    """After this, no presigned grant for the id can write its object any more."""
    return storage.id_created_at(image_id) + timedelta(
        seconds=settings.upload_url_expires + storage.GRANT_SLACK
    )


# --- 3. the sweep ----------------------------------------------------------------------------


@dataclass
class _Slice:
    """One image id's keys in this run's range of both buckets."""

    keys: list[dict[str, Any]] = field(default_factory=list)  # under {id}/ in the images bucket
    granted: dict[str, Any] | None = None  # uploads/{id}, when a grant could have written it
    owned: dict[str, Any] | None = None  # originals/{id}


def _sweep(settings: Settings, marked: set[str], now: datetime, grace: int, report: Report) -> None:
    """Judge the next slice of images against the same id range of the upload bucket.

    The images bucket is listed before the upload bucket: a key of another version listed first
    was written before its original was replaced, so an original seen afterwards is newer than it.
    """
    cursor = storage.read_sweep_cursor(settings)
    size = settings.reconcile_sweep_keys
    images = storage.list_range(settings.images_bucket, "", f"{cursor}0" if cursor else "", size)
    report.swept_keys += len(images.objects)
    slices: dict[str, _Slice] = {}
    end = not images.truncated
    for obj in images.objects:
        key = obj["Key"]
        if storage.is_id(key[: storage.ID_LENGTH]) and key[storage.ID_LENGTH : storage.ID_LENGTH + 1] == "/":
            slices.setdefault(key[: storage.ID_LENGTH], _Slice()).keys.append(obj)
        elif key >= "~":  # the bookkeeping keys, after every image
            end = True
            break
    # The range judged is (cursor, high]: the last image listed may go on in the next page.
    ids = list(slices)
    high: str | None = None if end else (ids[-2] if len(ids) > 1 else ids[-1] if ids else None)
    listed: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for prefix in (storage.UPLOAD_PREFIX, storage.ORIGINALS_PREFIX):
        page = storage.list_range(settings.upload_bucket, prefix, f"{prefix}{cursor}" if cursor else "", size)
        listed[prefix] = [(obj["Key"][len(prefix) :], obj) for obj in page.objects]
        if page.truncated and listed[prefix]:
            last = listed[prefix][-1][0]
            high = last if high is None else min(high, last)

    def inside(name: str) -> bool:
        return high is None or name <= high

    inbox = []
    for name, obj in listed[storage.UPLOAD_PREFIX]:
        if not inside(name):
            continue
        if storage.granted_id(obj["Key"], obj["LastModified"], settings) == name:
            slices.setdefault(name, _Slice()).granted = obj
        else:
            inbox.append(obj)
    for name, obj in listed[storage.ORIGINALS_PREFIX]:
        if inside(name) and storage.is_id(name):
            slices.setdefault(name, _Slice()).owned = obj
    doomed: list[str] = []
    for image_id in sorted(slices):
        if inside(image_id):
            doomed += _judge(image_id, slices[image_id], settings, marked, now, grace, report)
    for obj in inbox:
        if obj["LastModified"] <= now - timedelta(seconds=grace):
            image_id = storage.derived_id(obj["Key"], obj["ETag"].strip('"'), obj["LastModified"])
            if image_id not in marked:  # an event lost for good: the index takes it from here
                storage.mark_unsettled(image_id, obj["Key"], settings)
                marked.add(image_id)
                report.marked.append(image_id)
    storage.delete_keys(settings.images_bucket, doomed)
    report.cursor, report.wrapped = high or "", high is None
    storage.write_sweep_cursor(report.cursor, settings)


def _judge(
    image_id: str,
    found: _Slice,
    settings: Settings,
    marked: set[str],
    now: datetime,
    grace: int,
    report: Report,
) -> list[str]:
    """What to do about one image; returns the images-bucket keys to delete."""
    tombstone = next((o for o in found.keys if storage.is_tombstone(o["Key"])), None)
    originals = [o for o in (found.granted, found.owned) if o is not None]
    if tombstone is not None:
        for obj in originals:  # brought back after the deletion (a reused grant): refused
            storage.delete_upload(obj["Key"], settings, etag=obj["ETag"].strip('"'))
        doomed = [o["Key"] for o in found.keys if o is not tombstone]
        if doomed:
            report.purged.append(image_id)
        deleted_long_ago = tombstone["LastModified"] <= now - timedelta(seconds=grace)
        if not originals and deleted_long_ago and now >= _grant_deadline(image_id, settings):
            doomed.append(tombstone["Key"])  # no grant can bring the original back any more
            doomed += [storage.marker_key(image_id)] if image_id in marked else []
            report.tombstones_removed += 1
        return doomed
    original = found.owned or found.granted
    records = storage.image_records(image_id, found.keys)
    if original is None:
        if not found.keys or (settings.delete_originals and any(r.status == "ready" for r in records)):
            return []  # DELETE_ORIGINALS: a ready image's original is removed on purpose
        report.purged.append(image_id)  # the original is gone: nothing of the image may stay
        return [o["Key"] for o in found.keys] + ([storage.marker_key(image_id)] if image_id in marked else [])
    version = storage.version_tag(original["ETag"].strip('"'))
    stale = [key for key, parsed in storage.parse_image_keys(image_id, found.keys)
             if parsed.version not in (None, version)]  # fmt: skip
    report.stale_keys += len(stale)
    settled = any(r.version == version and r.status != "pending" for r in records)
    old = original["LastModified"] <= now - timedelta(seconds=grace)
    if not settled and old and image_id not in marked:
        storage.mark_unsettled(image_id, original["Key"], settings)
        marked.add(image_id)
        report.marked.append(image_id)
    return stale
