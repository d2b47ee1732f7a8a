"""The reconciler (chalicelib/reconcile.py) against moto: uploads that never settled are processed
again a bounded number of times, then fail with a stable code; grants never used are forgotten;
what belongs to no original is removed; the dead-letter queue is drained; and a run's S3 calls stay
within the bound docs/convergence.md states, at 10,000 stored images."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import reconcile, storage
from chalicelib.config import get_settings
from tests.support import (
    IMAGES_BUCKET,
    UPLOAD_BUCKET,
    assert_invariants,
    jpeg,
    post_upload,
    s3_event,
    thread_safe_moto_overwrites,
)

GRACE = get_settings().reconcile_grace


@pytest.fixture(autouse=True)
def _racing_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    thread_safe_moto_overwrites(monkeypatch)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def granted_upload(client: Any, aws: Any, data: bytes) -> tuple[str, str]:
    """A presigned upload whose S3 event never arrived; returns (id, key)."""
    grant = json.loads(post_upload(client, filename="lost.jpg", content_type="image/jpeg").body)
    fields = grant["fields"]
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=fields["key"],
        Body=data,
        Metadata={"filename": fields["x-amz-meta-filename"]},
    )
    return grant["id"], fields["key"]


def image(client: Any, image_id: str) -> dict[str, Any]:
    response = client.http.get(f"/images/{image_id}")
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def s3_calls() -> list[str]:
    calls: list[str] = []
    storage.s3().meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    return calls


def test_an_upload_whose_event_was_lost_is_processed_once_its_grace_period_is_over(
    client: Any, aws: Any
) -> None:
    image_id, _ = granted_upload(client, aws, jpeg(640, 480))
    assert reconcile.run(get_settings()).redriven == []  # its own delivery may still be on its way
    assert image(client, image_id)["status"] == "pending"
    report = reconcile.run(get_settings(), now=later(GRACE + 1))
    assert report.redriven == [image_id]
    assert image(client, image_id)["status"] == "ready"
    assert list(assert_invariants(aws)) == [image_id]
    assert reconcile.run(get_settings(), now=later(2 * GRACE + 2)).redriven == []  # settled: left alone


def test_an_upload_that_keeps_failing_is_retried_a_bounded_number_of_times_then_times_out(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_id, key = granted_upload(client, aws, jpeg(640, 480))
    reads: list[str] = []

    def unavailable(upload: storage.UploadObject, settings: Any) -> bytes:
        reads.append(upload.key)
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "GetObject")

    monkeypatch.setattr(storage, "read_upload", unavailable)
    with pytest.raises(ClientError):
        client.lambda_.invoke("resize", s3_event(key))  # Lambda's own tries, then it gives up
    attempts = get_settings().reconcile_attempts
    for run in range(1, attempts + 1):
        report = reconcile.run(get_settings(), now=later(run * (GRACE + 1)))
        assert report.redriven == [image_id] and report.timed_out == []
        assert image(client, image_id)["status"] == "pending"
    report = reconcile.run(get_settings(), now=later((attempts + 1) * (GRACE + 1)))
    assert report.timed_out == [image_id]
    assert len(reads) == 1 + attempts  # the delivery, then each re-drive: bounded
    failed = image(client, image_id)
    assert failed["status"] == "failed" and failed["error"]["code"] == "processing_timeout"
    assert assert_invariants(aws)[image_id].error_code == "processing_timeout"  # original kept, settled
    assert reconcile.run(get_settings(), now=later(10 * GRACE)).redriven == []


def test_a_grant_never_used_is_forgotten_once_it_can_no_longer_be_used(client: Any, aws: Any) -> None:
    grant = json.loads(post_upload(client, filename="never.jpg", content_type="image/jpeg").body)
    assert storage.list_markers(get_settings())[0].image_id == grant["id"]
    assert reconcile.run(get_settings(), now=later(GRACE + 1)).expired == []  # the URL still works
    settings = get_settings()
    deadline = settings.upload_url_expires + storage.GRANT_SLACK + 1
    assert reconcile.run(settings, now=later(deadline)).expired == [grant["id"]]
    assert storage.list_markers(settings) == []
    assert client.http.get(f"/images/{grant['id']}").status_code == 404


def test_what_belongs_to_no_original_is_removed_and_lost_events_are_found(client: Any, aws: Any) -> None:
    settings = get_settings()
    kept, _ = granted_upload(client, aws, jpeg(320, 240))
    orphan, orphan_key = granted_upload(client, aws, jpeg(320, 240))
    for key in (storage.upload_key(kept), orphan_key):
        client.lambda_.invoke("resize", s3_event(key))
    aws.delete_object(Bucket=UPLOAD_BUCKET, Key=orphan_key)  # removed by hand, not through the API
    # an old version's rendition left behind by a crash, and an `aws s3 cp` whose event was lost
    stale = storage.rendition_key(kept, "thumb", 1, 1, "0123456789", "jpg")
    aws.put_object(Bucket=IMAGES_BUCKET, Key=stale, Body=b"x")
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/lost event.jpg", Body=jpeg(300, 200))
    first = reconcile.run(settings, now=later(GRACE + 1))
    assert first.purged == [orphan] and first.stale_keys == 1 and len(first.marked) == 1
    second = reconcile.run(settings, now=later(2 * GRACE + 2))
    assert second.redriven == first.marked
    shown = assert_invariants(aws)
    assert sorted(shown) == sorted([kept, *first.marked])
    assert image(client, first.marked[0])["original"]["filename"] == "lost event.jpg"


def test_with_delete_originals_a_ready_image_without_its_original_is_kept(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELETE_ORIGINALS", "true")
    image_id, key = granted_upload(client, aws, jpeg(320, 240))
    client.lambda_.invoke("resize", s3_event(key))
    assert aws.list_objects_v2(Bucket=UPLOAD_BUCKET).get("KeyCount") == 0
    assert reconcile.run(get_settings(), now=later(GRACE + 1)).purged == []
    assert image(client, image_id)["status"] == "ready"


@pytest.fixture
def dead_letters(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="imageshelf-local-resize-dlq")["QueueUrl"]
    monkeypatch.setenv("RESIZE_DLQ_URL", url)
    yield sqs, url


def test_the_dead_letter_queue_is_drained(client: Any, aws: Any, dead_letters: tuple[Any, str]) -> None:
    """Both shapes Lambda uses: a DLQ message is the event itself; an on-failure destination's
    record wraps it in ``requestPayload``."""
    sqs, url = dead_letters
    plain, plain_key = granted_upload(client, aws, jpeg(320, 240))
    wrapped, wrapped_key = granted_upload(client, aws, jpeg(320, 240))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(plain_key)))
    destination = {"version": "1.0", "requestContext": {"condition": "RetriesExhausted"}}
    sqs.send_message(
        QueueUrl=url, MessageBody=json.dumps(destination | {"requestPayload": s3_event(wrapped_key)})
    )
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Event": "s3:TestEvent"}))
    report = reconcile.run(get_settings())  # within the grace period: only the queue is worked
    assert report.dead_letters == 3
    assert image(client, plain)["status"] == image(client, wrapped)["status"] == "ready"
    assert sorted(assert_invariants(aws)) == sorted([plain, wrapped])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)


def test_a_dead_letter_that_fails_again_stays_until_the_index_takes_over(
    client: Any, aws: Any, dead_letters: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs, url = dead_letters
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    image_id, key = granted_upload(client, aws, jpeg(320, 240))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(key)))

    real_read, failing = storage.read_upload, [True]

    def unavailable(upload: storage.UploadObject, settings: Any) -> bytes:
        if failing:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "GetObject")
        return real_read(upload, settings)

    monkeypatch.setattr(storage, "read_upload", unavailable)
    attempts = get_settings().reconcile_attempts
    for _ in range(attempts):
        reconcile.run(get_settings())
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # given up on after that many
    failing.clear()
    reconcile.run(get_settings(), now=later(GRACE + 1))  # the index processes it instead
    assert image(client, image_id)["status"] == "ready"


# --- cost ----------------------------------------------------------------------------------------

STEADY_CALLS = 6  # LIST markers, GET + PUT cursor, LIST images, LIST uploads/, LIST originals/


def store_settled_images(count: int) -> list[str]:
    """``count`` ready images as the pipeline leaves them (original, two renditions, a record),
    written straight into moto's S3 (40,000 objects through the API would take minutes)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    start = datetime.now(UTC) - timedelta(days=30)
    ids = []
    for n in range(count):
        at = start + timedelta(seconds=n)
        image_id = storage.new_id(at=at.timestamp())
        body = f"photo {n}".encode()
        etag = hashlib.md5(body).hexdigest()
        version = storage.version_tag(etag)
        original = backend.put_object(
            UPLOAD_BUCKET, storage.upload_key(image_id), body, disable_notification=True
        )
        original.last_modified = at.replace(tzinfo=None)  # granted when the id was made
        for name, size in (("thumb", 40), ("large", 160)):
            key = storage.rendition_key(image_id, name, size, size, version, "jpg")
            backend.put_object(IMAGES_BUCKET, key, b"x", disable_notification=True)
        record = storage.Record(
            id=image_id, status="ready", filename=f"{n}.jpg", bytes=len(body), content_type="image/jpeg",
            format="JPEG", width=160, height=160, version=version, at=int(at.timestamp()),
        )  # fmt: skip
        backend.put_object(IMAGES_BUCKET, storage.record_key(record), b"{}", disable_notification=True)
        ids.append(image_id)
    return ids


def test_s3_calls_per_run_stay_within_the_bound_at_10000_images(aws: Any) -> None:
    """A run reads a fixed slice whatever the number of images: at rest it costs STEADY_CALLS S3
    requests; a full sweep takes ceil(keys / RECONCILE_SWEEP_KEYS) runs and finds an orphan
    wherever it is."""
    settings = get_settings()
    ids = store_settled_images(10_000)
    keys = 3 * len(ids)  # in the images bucket
    orphan = ids[7_777]
    aws.delete_object(Bucket=UPLOAD_BUCKET, Key=storage.upload_key(orphan))
    calls = s3_calls()
    per_run, found_at = [], None
    for run in range(1, math.ceil(keys / settings.reconcile_sweep_keys) + 3):
        calls.clear()
        report = reconcile.run(settings, now=later(GRACE + 1))
        per_run.append(len(calls))
        assert report.redriven == report.marked == [], report
        if report.purged:
            assert report.purged == [orphan] and found_at is None
            found_at = run
            assert len(calls) <= STEADY_CALLS + 1, calls  # + one DeleteObjects
        else:
            assert len(calls) <= STEADY_CALLS, calls
        if report.wrapped:
            break
    assert report.wrapped and found_at is not None
    assert run <= math.ceil(keys / (settings.reconcile_sweep_keys - 3)) + 1  # a slice ends on a whole image
    print(f"\n[reconcile] 10,000 images: {max(per_run)} S3 calls per run at most, a full sweep in {run} runs")
    # The index: a thousand unsettled uploads add one LIST to each run, and at most RECONCILE_BATCH
    # of them are worked per run.
    for image_id in ids[:1000]:
        storage.mark_unsettled(image_id, storage.upload_key(image_id), settings)
    calls.clear()
    report = reconcile.run(settings, now=later(GRACE + 1))
    assert len(report.settled) == settings.reconcile_batch
    per_marker = 5  # GET marker, LIST its keys, HEAD the original, DeleteObjects (settle), DELETE marker
    assert len(calls) <= STEADY_CALLS + 1 + settings.reconcile_batch * per_marker, calls
