"""Uploads that never became images expire (tools/provision.py, docs/deploy.md): processing tags
the original of a version that ended ``failed``, the upload bucket's lifecycle expires what carries
the tag, and the reconciler's sweep then removes the image's record. A ready image's original never
carries the tag, even when a failed record or a replacement races with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import processing, reconcile, storage
from chalicelib.config import get_settings
from tests.support import (
    UPLOAD_BUCKET,
    assert_invariants,
    jpeg,
    process,
    s3_event,
    thread_safe_moto_overwrites,
)

FAILED = [{"Key": "imageshelf-state", "Value": "failed"}]
TAKEN_BACK = [{"Key": "imageshelf-state", "Value": "ready"}]  # what no lifecycle rule expires
GRACE = get_settings().reconcile_grace


@pytest.fixture(autouse=True)
def _racing_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    thread_safe_moto_overwrites(monkeypatch)


def tags(aws: Any, key: str) -> list[dict[str, str]]:
    return list(aws.get_object_tagging(Bucket=UPLOAD_BUCKET, Key=key)["TagSet"])


def expire_as_lifecycle_would(aws: Any) -> list[str]:
    """Apply the upload bucket's provisioned expiration rules as S3 does once their days have
    passed: delete each object under a rule's prefix carrying all of the rule's tags."""
    rules = aws.get_bucket_lifecycle_configuration(Bucket=UPLOAD_BUCKET)["Rules"]
    expired = []
    for rule in (r for r in rules if "Expiration" in r and r["Status"] == "Enabled"):
        match = rule["Filter"].get("And") or rule["Filter"]
        wanted = match.get("Tags") or ([match["Tag"]] if "Tag" in match else [])
        pages = aws.get_paginator("list_objects_v2").paginate(
            Bucket=UPLOAD_BUCKET, Prefix=match.get("Prefix", "")
        )
        for obj in (o for page in pages for o in page.get("Contents", [])):
            if all(tag in tags(aws, obj["Key"]) for tag in wanted):
                aws.delete_object(Bucket=UPLOAD_BUCKET, Key=obj["Key"])
                expired.append(obj["Key"])
    return sorted(expired)


def status(client: Any, image_id: str) -> Any:
    response = client.http.get(f"/images/{image_id}")
    return json.loads(response.body)["status"] if response.status_code == 200 else response.status_code


def test_failed_originals_expire_then_the_sweep_removes_their_images(client: Any, aws: Any) -> None:
    ready = process(client, aws, jpeg(320, 240))
    refused = process(client, aws, b"this is not an image", filename="notes.jpg")
    # `aws s3 cp` of a file that is no image: copied to an original of its own, tagged there.
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/scan.jpg", Body=b"%PDF-1.4 not an image")
    client.lambda_.invoke("resize", s3_event("uploads/scan.jpg"))
    (inbox,) = set(assert_invariants(aws)) - {ready, refused}
    assert (status(client, ready), status(client, refused), status(client, inbox)) == (
        "ready",
        "failed",
        "failed",
    )
    assert tags(aws, storage.upload_key(refused)) == FAILED
    assert tags(aws, storage.original_key(inbox)) == FAILED
    assert tags(aws, storage.upload_key(ready)) == []  # an image's original never expires

    expired = expire_as_lifecycle_would(aws)
    assert expired == sorted([storage.upload_key(refused), storage.original_key(inbox)])
    report = reconcile.run(get_settings(), now=datetime.now(UTC) + timedelta(seconds=GRACE + 1))
    assert sorted(report.purged) == sorted([refused, inbox])
    assert (status(client, refused), status(client, inbox), status(client, ready)) == (404, 404, "ready")
    assert list(assert_invariants(aws)) == [ready]
    listed = json.loads(client.http.get("/images").body)["images"]
    assert [i["id"] for i in listed] == [ready]


def test_a_processing_timeout_is_tagged_too(client: Any, aws: Any) -> None:
    image_id = process(client, aws, jpeg(64, 48))
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=storage.upload_key(image_id), Body=b"\xff\xd8 truncated",
                   Metadata={"filename": "photo.jpg"})  # fmt: skip
    # The replacement's deliveries never came, and the reconciler ran out of attempts.
    storage.mark_unsettled(image_id, storage.upload_key(image_id), get_settings(), attempts=99)
    later = datetime.now(UTC) + timedelta(seconds=GRACE + 1)
    assert reconcile.run(get_settings(), now=later).timed_out == [image_id]
    assert assert_invariants(aws)[image_id].error_code == "processing_timeout"
    assert tags(aws, storage.upload_key(image_id)) == FAILED


def test_a_timeout_recorded_beside_a_ready_version_leaves_its_original_untagged(
    client: Any, aws: Any
) -> None:
    """The reconciler gives up on a version whose slow delivery then finishes: ready wins, and the
    tag the timeout put on its original goes."""
    image_id = process(client, aws, jpeg(64, 48))
    processing.record_timeout(image_id, storage.upload_key(image_id), 3, get_settings())
    assert status(client, image_id) == "ready"
    assert tags(aws, storage.upload_key(image_id)) == TAKEN_BACK
    assert expire_as_lifecycle_would(aws) == []


def test_a_tag_that_lands_on_a_ready_replacement_is_removed(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same grant used twice: the first upload fails, and the second, an image, replaces it and
    settles ready before the first delivery tags the key. S3 tags whatever is at the key, so the
    first delivery checks, and the ready image's original is left untagged."""
    refused = process(client, aws, b"not an image")
    key = storage.upload_key(refused)
    aws.delete_object_tagging(Bucket=UPLOAD_BUCKET, Key=key)
    # Replay: the failed version's record is there; a duplicate delivery re-tags. Replace the
    # object as its tagging starts, and settle the replacement first.
    replaced = False
    tag_failed = storage.tag_failed

    def racing(tagged: str, settings: Any, failed: bool = True) -> bool:
        nonlocal replaced
        if failed and not replaced:
            replaced = True
            aws.put_object(
                Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(80, 60), Metadata={"filename": "photo.jpg"}
            )
            client.lambda_.invoke("resize", s3_event(key))
        return tag_failed(tagged, settings, failed)

    monkeypatch.setattr(storage, "tag_failed", racing)
    outcome = processing.process_image(refused, key, get_settings())
    assert replaced and outcome.outcome in ("duplicate", "superseded")
    assert status(client, refused) == "ready"
    assert tags(aws, key) == TAKEN_BACK
    assert assert_invariants(aws)[refused].status == "ready"
