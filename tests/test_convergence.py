"""Nothing lost, nothing resurrected: deletes, overwrites, duplicates and out-of-order deliveries
interleaved with every step of processing, deterministically (a hook after each step, no sleeps),
each ending in the invariants of docs/convergence.md (``assert_invariants``).

The resize handler runs through Chalice's test client or ``processing.process_upload`` against moto;
the interfering action runs synchronously inside the delivery, at the step under test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import processing, reconcile, storage
from chalicelib.config import get_settings
from tests.support import (
    IMAGES_BUCKET,
    UPLOAD_BUCKET,
    assert_invariants,
    jpeg,
    s3_event,
    thread_safe_moto_overwrites,
)

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# The steps of one delivery, in order (processing.on_step names them).
GRANTED_STEPS = [
    "head",
    "listed",
    "pending",
    "read",
    "rendition:thumb",
    "rendition:large",
    "final",
    "settled",
]
INBOX_STEPS = ["head", "claimed", *GRANTED_STEPS[1:]]
RAW_KEY = "uploads/holiday photo.jpg"


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    thread_safe_moto_overwrites(monkeypatch)
    yield
    processing.on_step = None


def at_step(step: str, action: Callable[[], None]) -> list[str]:
    """Run ``action`` once, inside the next delivery, right after ``step``; returns the steps seen."""
    seen: list[str] = []

    def hook(name: str, outcome: processing.Outcome) -> None:
        seen.append(name)
        if name == step and seen.count(step) == 1 and not fired:
            fired.append(name)
            action()

    fired: list[str] = []
    processing.on_step = hook
    return seen


def grant(client: Any, filename: str = "cat.jpg") -> dict[str, Any]:
    body = json.dumps({"filename": filename, "content_type": "image/jpeg"})
    return json.loads(
        client.http.post("/uploads", headers={"Content-Type": "application/json"}, body=body).body
    )


def put_granted(aws: Any, granted: dict[str, Any], data: bytes) -> None:
    """What a browser's presigned POST leaves in the upload bucket (again, for a reused grant)."""
    fields = granted["fields"]
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=fields["key"],
        Body=data,
        Metadata={"filename": fields["x-amz-meta-filename"]},
    )


def deliver(client: Any, key: str) -> None:
    client.lambda_.invoke("resize", s3_event(key))


def reconcile_later(hours: float = 2) -> reconcile.Report:
    """A reconciler run long after everything above (every grace period and grant is over)."""
    return reconcile.run(get_settings(), now=datetime.now(UTC) + timedelta(hours=hours), full=True)


def listed_ids(client: Any) -> list[str]:
    return [i["id"] for i in json.loads(client.http.get("/images?limit=100").body)["images"]]


def status_of(client: Any, image_id: str) -> tuple[int, dict[str, Any]]:
    response = client.http.get(f"/images/{image_id}")
    return response.status_code, json.loads(response.body)


def raw_image_id(aws: Any, key: str = RAW_KEY) -> str:
    head = aws.head_object(Bucket=UPLOAD_BUCKET, Key=key)
    return storage.derived_id(key, head["ETag"].strip('"'), head["LastModified"])


def every_step(aws: Any, steps: list[str], scenario: Callable[[str], None]) -> None:
    """Run ``scenario`` once for each step, from empty buckets, in one test (one moto and one
    Chalice client for all: the steps' set-up would otherwise cost more than the scenarios)."""
    failures = {}
    for step in steps:
        for bucket in (UPLOAD_BUCKET, IMAGES_BUCKET):
            listed = aws.list_objects_v2(Bucket=bucket).get("Contents", [])
            if listed:
                aws.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
        try:
            scenario(step)
        except AssertionError as error:
            failures[step] = str(error).splitlines()[0][:300]
        finally:
            processing.on_step = None
    assert failures == {}


# --- deletes -------------------------------------------------------------------------------------


def test_a_delete_at_any_step_of_a_granted_upload_is_final(client: Any, aws: Any) -> None:
    def scenario(step: str) -> None:
        granted = grant(client)
        image_id, key = granted["id"], granted["fields"]["key"]
        put_granted(aws, granted, jpeg(800, 600))
        answers: list[int] = []

        def delete() -> None:
            answers.append(client.http.delete(f"/images/{image_id}", headers=BEARER).status_code)

        if step == "before":
            delete()
        seen = at_step(step, delete)
        deliver(client, key)
        processing.on_step = None
        if step == "after":
            delete()
        assert step in ("before", "after") or step in seen, seen
        assert answers == [204]
        assert status_of(client, image_id)[0] == 404 and image_id not in listed_ids(client)
        assert_invariants(aws, deleted=[image_id])  # the delivery cleaned up after itself
        # Nothing brings it back: a late retry of the event, the reconciler.
        deliver(client, key)
        assert_invariants(aws, deleted=[image_id])
        reconcile_later(hours=0)
        assert status_of(client, image_id)[0] == 404 and image_id not in listed_ids(client)
        assert_invariants(aws, deleted=[image_id])

    every_step(aws, ["before", *GRANTED_STEPS, "after"], scenario)


def test_a_grant_used_again_after_the_delete_does_not_bring_the_image_back(client: Any, aws: Any) -> None:
    """On AWS a presigned grant works for its whole life, after a delete too."""
    granted = grant(client)
    image_id, key = granted["id"], granted["fields"]["key"]
    put_granted(aws, granted, jpeg(320, 240))
    deliver(client, key)
    assert client.http.delete(f"/images/{image_id}", headers=BEARER).status_code == 204
    put_granted(aws, granted, jpeg(640, 480))
    deliver(client, key)
    assert status_of(client, image_id)[0] == 404 and image_id not in listed_ids(client)
    assert_invariants(aws, deleted=[image_id])
    put_granted(aws, granted, jpeg(640, 480))  # its event lost: the reconciler's sweep finds it
    reconcile_later(hours=0)
    assert_invariants(aws, deleted=[image_id])
    # Once no grant can write the original again, the tombstone goes too, and the id stays gone.
    reconcile_later()
    assert storage.image_objects(image_id, get_settings()) == []
    assert status_of(client, image_id)[0] == 404 and image_id not in listed_ids(client)


def test_a_delete_at_any_step_of_an_s3_client_upload_is_final(client: Any, aws: Any) -> None:
    """The image of an ``aws s3 cp`` has no id anyone knows before its first record: a delete
    before then finds nothing (404) and the image is made whole; one after it (204) is final."""

    def scenario(step: str) -> None:
        aws.put_object(Bucket=UPLOAD_BUCKET, Key=RAW_KEY, Body=jpeg(800, 600))
        image_id = raw_image_id(aws)
        answers: list[int] = []

        def delete() -> None:
            answers.append(client.http.delete(f"/images/{image_id}", headers=BEARER).status_code)

        if step == "before":
            delete()
        at_step(step, delete)
        deliver(client, RAW_KEY)
        processing.on_step = None
        if step == "after":
            delete()
        deliver(client, RAW_KEY)  # a late retry
        assert_invariants(aws, deleted=[image_id] if answers == [204] else [])
        reconcile_later(hours=0)
        if answers == [404]:
            assert step in ("before", "head", "claimed", "listed")
            assert status_of(client, image_id)[1]["status"] == "ready"
            assert list(assert_invariants(aws)) == [image_id]
        else:
            assert answers == [204]
            assert status_of(client, image_id)[0] == 404 and image_id not in listed_ids(client)
            assert_invariants(aws, deleted=[image_id])

    every_step(aws, ["before", *INBOX_STEPS, "after"], scenario)


# --- overwrites ----------------------------------------------------------------------------------


@pytest.mark.parametrize("settles_first", [False, True], ids=["replaced", "replaced-and-settled"])
def test_an_original_replaced_at_any_step_ends_showing_only_the_newest(
    client: Any, aws: Any, settles_first: bool
) -> None:
    """The same grant used twice (possible for its whole life on AWS). ``replaced-and-settled``:
    the replacement's own delivery finishes before the superseded one goes on, which must then
    clean up after itself rather than win."""

    def scenario(step: str) -> None:
        granted = grant(client)
        image_id, key = granted["id"], granted["fields"]["key"]
        put_granted(aws, granted, jpeg(800, 600))

        def replace() -> None:
            put_granted(aws, granted, jpeg(300, 500))
            if settles_first:
                processing.on_step = None
                deliver(client, key)
                assert status_of(client, image_id)[1]["original"]["width"] == 300
                processing.on_step = hook

        seen = at_step(step, replace)
        hook = processing.on_step
        deliver(client, key)  # the first delivery, interrupted by the replacement
        processing.on_step = None
        assert step in seen, seen
        if not settles_first:
            deliver(client, key)  # the replacement's own event
        shown = assert_invariants(aws)  # the superseded delivery cleaned up after itself
        deliver(client, key)  # a late duplicate of the first event
        shown = assert_invariants(aws)
        assert list(shown) == [image_id]
        code, image = status_of(client, image_id)
        assert code == 200 and image["status"] == "ready"
        assert (image["original"]["width"], image["original"]["height"]) == (300, 500)
        assert {(r["width"], r["height"]) for r in image["renditions"]} == {(240, 400), (300, 500)}

    every_step(aws, GRANTED_STEPS, scenario)


def test_a_second_upload_to_the_same_key_at_any_step_is_an_image_of_its_own(client: Any, aws: Any) -> None:
    """Two ``aws s3 cp`` to one key: two images that share no bytes, each with the upload's name.
    Overwritten before its event could copy it (right after the first HEAD), the first upload is
    gone, as with any S3 overwrite; the second is then the one image."""

    def scenario(step: str) -> None:
        first, second = jpeg(800, 600), jpeg(300, 500)
        aws.put_object(Bucket=UPLOAD_BUCKET, Key=RAW_KEY, Body=first)
        at_step(step, lambda: aws.put_object(Bucket=UPLOAD_BUCKET, Key=RAW_KEY, Body=second))
        deliver(client, RAW_KEY)
        processing.on_step = None
        deliver(client, RAW_KEY)  # the second upload's event
        shown = assert_invariants(aws)
        deliver(client, RAW_KEY)  # a late duplicate
        reconcile_later(hours=0)
        assert assert_invariants(aws) == shown
        sizes = sorted((r.width, r.height) for r in shown.values())
        assert sizes == ([(300, 500)] if step == "head" else [(300, 500), (800, 600)])
        for image_id in shown:
            body = aws.get_object(Bucket=UPLOAD_BUCKET, Key=storage.original_key(image_id))["Body"].read()
            assert body in (first, second)
            assert status_of(client, image_id)[1]["original"]["filename"] == "holiday photo.jpg"

    every_step(aws, INBOX_STEPS, scenario)


@pytest.mark.parametrize("deleted", [0, 1], ids=["delete-first", "delete-second"])
def test_two_uploads_to_one_key_then_deleting_either_leaves_the_other_whole(
    client: Any, aws: Any, deleted: int
) -> None:
    uploads = [jpeg(800, 600), jpeg(300, 500)]
    made = []
    for data in uploads:
        aws.put_object(Bucket=UPLOAD_BUCKET, Key=RAW_KEY, Body=data)
        made.append(raw_image_id(aws))
        deliver(client, RAW_KEY)
    gone, kept = made[deleted], made[1 - deleted]
    assert client.http.delete(f"/images/{gone}", headers=BEARER).status_code == 204
    shown = assert_invariants(aws, deleted=[gone])
    assert list(shown) == [kept] and shown[kept].status == "ready"
    code, image = status_of(client, kept)
    assert code == 200 and image["original"]["filename"] == "holiday photo.jpg"
    assert len(image["renditions"]) == 2
    original = aws.get_object(Bucket=UPLOAD_BUCKET, Key=storage.original_key(kept))["Body"].read()
    assert original == uploads[1 - deleted]
    assert listed_ids(client) == [kept]


# --- duplicates and order ------------------------------------------------------------------------


def test_a_duplicate_delivery_at_any_step_leaves_one_image(client: Any, aws: Any) -> None:
    def scenario(step: str) -> None:
        granted = grant(client)
        put_granted(aws, granted, jpeg(800, 600))
        key = granted["fields"]["key"]

        def duplicate() -> None:
            processing.on_step = None
            deliver(client, key)

        at_step(step, duplicate)
        deliver(client, key)
        shown = assert_invariants(aws)
        assert list(shown) == [granted["id"]] and shown[granted["id"]].status == "ready"

    every_step(aws, GRANTED_STEPS, scenario)


def test_a_duplicate_delivery_of_an_s3_client_upload_at_any_step_leaves_one_image(
    client: Any, aws: Any
) -> None:
    def scenario(step: str) -> None:
        aws.put_object(Bucket=UPLOAD_BUCKET, Key=RAW_KEY, Body=jpeg(800, 600))

        def duplicate() -> None:
            processing.on_step = None
            deliver(client, RAW_KEY)

        at_step(step, duplicate)
        deliver(client, RAW_KEY)
        shown = assert_invariants(aws)
        assert len(shown) == 1 and next(iter(shown.values())).status == "ready"

    every_step(aws, INBOX_STEPS, scenario)


def test_out_of_order_deliveries_end_with_the_newest_original(client: Any, aws: Any) -> None:
    """The replacement's event arrives first, the first upload's last: the first event finds
    the newer original, which has already settled."""
    granted = grant(client)
    key = granted["fields"]["key"]
    put_granted(aws, granted, jpeg(800, 600))
    put_granted(aws, granted, jpeg(300, 500))
    deliver(client, key)
    deliver(client, key)
    shown = assert_invariants(aws)
    assert (shown[granted["id"]].width, shown[granted["id"]].height) == (300, 500)


def test_a_delivery_that_crashed_after_its_final_record_is_finished_by_the_reconciler(
    client: Any, aws: Any
) -> None:
    granted = grant(client)
    put_granted(aws, granted, jpeg(800, 600))

    def crash() -> None:
        raise RuntimeError("the process died here")

    at_step("final", crash)
    with pytest.raises(RuntimeError):
        deliver(client, granted["fields"]["key"])
    processing.on_step = None
    reconcile_later(hours=0)
    assert list(assert_invariants(aws)) == [granted["id"]]


def test_a_presigned_key_named_like_an_id_no_grant_made_is_not_taken_as_that_id(
    client: Any, aws: Any
) -> None:
    """An id from centuries ahead would pin the image to the top of the gallery."""
    future = storage.new_id(at=datetime(2900, 1, 1, tzinfo=UTC).timestamp())
    key = f"uploads/{future}"
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(320, 240))
    deliver(client, key)
    shown = assert_invariants(aws)
    assert future not in shown and len(shown) == 1
    image_id = next(iter(shown))
    assert abs((storage.id_created_at(image_id) - datetime.now(UTC)).total_seconds()) < 120
    assert status_of(client, image_id)[1]["original"]["filename"] == future
    assert status_of(client, future)[0] == 404
