"""Listing at scale: constant S3 calls per page, stable pagination, ids and record keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import formats, storage
from chalicelib.config import get_settings


def store_ready_images(count: int, start: float = 1_800_000_000.0) -> list[str]:
    """Write ``count`` ready images (a rendition pair and a record each) straight through storage."""
    settings = get_settings()
    ids = []
    for n in range(count):
        image_id = storage.new_id(at=start + n)
        for name, size in (("thumb", 40), ("large", 160)):
            storage.put_rendition(
                image_id, name, b"x", (size, size), "0123456789", formats.BY_NAME["JPEG"], settings
            )
        storage.put_record(
            storage.Record(
                id=image_id,
                status="ready",
                filename=f"{n}.jpg",
                bytes=1,
                content_type="image/jpeg",
                format="JPEG",
                width=160,
                height=160,
            ),
            settings,
        )
        ids.append(image_id)
    return ids[::-1]  # newest first


def s3_calls() -> list[str]:
    calls: list[str] = []
    storage.s3().meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    return calls


def walk(client: Any, limit: int) -> list[str]:
    seen, cursor = [], None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = json.loads(client.http.get(f"/images?{query}").body)
        seen += [image["id"] for image in page["images"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_a_page_costs_the_same_s3_calls_with_10_or_2000_images(client: Any) -> None:
    counts = {}
    for total in (10, 2000):
        existing = len(walk(client, 100))
        store_ready_images(total - existing, start=1_700_000_000.0 + existing * 10)
        calls = s3_calls()
        for limit in (1, 10, 100):
            response = client.http.get(f"/images?limit={limit}")
            assert len(json.loads(response.body)["images"]) == min(limit, total)
        counts[total] = list(calls)
    assert counts[10] == counts[2000]
    # only listings: no GET or HEAD per image
    assert set(counts[2000]) == {"ListObjectsV2"}
    assert len(counts[2000]) == 3  # one ListObjectsV2 per page


def test_walking_all_pages_returns_every_image_once_newest_first(client: Any) -> None:
    ids = store_ready_images(57)
    assert walk(client, 10) == ids
    assert walk(client, 100) == ids
    assert walk(client, 1)[:5] == ids[:5]


def test_pagination_is_stable_while_new_uploads_arrive(client: Any) -> None:
    ids = store_ready_images(30)
    first = json.loads(client.http.get("/images?limit=10").body)
    # newer images arrive between pages: they sort before the cursor, never into later pages
    store_ready_images(5, start=1_900_000_000.0)
    seen = [image["id"] for image in first["images"]]
    cursor = first["next_cursor"]
    while cursor:
        page = json.loads(client.http.get(f"/images?limit=10&cursor={cursor}").body)
        seen += [image["id"] for image in page["images"]]
        cursor = page["next_cursor"]
    assert seen == ids


def test_abandoned_presigned_uploads_are_never_listed(client: Any) -> None:
    for _ in range(3):
        body = json.dumps({"filename": "a.jpg", "content_type": "image/jpeg"})
        assert (
            client.http.post("/uploads", headers={"Content-Type": "application/json"}, body=body).status_code
            == 201
        )
    assert json.loads(client.http.get("/images").body)["images"] == []


def test_pending_older_than_the_timeout_is_reported_failed(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    old = storage.new_id(at=(datetime.now(UTC) - timedelta(minutes=20)).timestamp())
    fresh = storage.new_id()
    for image_id in (old, fresh):
        storage.put_record(
            storage.Record(id=image_id, status="pending", filename="p.jpg", bytes=10), settings
        )
    images = {i["id"]: i for i in json.loads(client.http.get("/images").body)["images"]}
    assert images[fresh]["status"] == "pending"
    assert images[old]["status"] == "failed"
    assert images[old]["error"]["code"] == "processing_timeout"
    monkeypatch.setenv("PENDING_TIMEOUT", "3600")
    assert json.loads(client.http.get(f"/images/{old}").body)["status"] == "pending"


def test_ids_sort_newest_first_and_carry_their_time() -> None:
    now = 1_795_000_000.123
    older, newer = storage.new_id(at=now), storage.new_id(at=now + 0.001)
    assert newer < older
    assert storage.is_id(older) and len(older) == storage.ID_LENGTH
    assert storage.id_created_at(older) == datetime.fromtimestamp(1_795_000_000.123, tz=UTC)
    assert len({storage.new_id(at=now) for _ in range(1000)}) == 1000


@pytest.mark.parametrize("filename", ["cat.jpg", "ü" * 255, "😀" * 255, "a\"b'c<d>&e.jpg", "x" * 255])
def test_record_keys_round_trip_within_s3_key_limit(filename: str) -> None:
    record = storage.Record(
        id=storage.new_id(),
        status="failed",
        filename=filename,
        bytes=12,
        error_code="corrupt_image",
        error_message="m" * 500,
    )
    key = storage.record_key(record)
    assert len(key.encode()) <= 1024
    parsed = storage.parse_record_key(record.id, key[storage.ID_LENGTH + 1 :])
    assert parsed is not None and parsed.status == "failed" and parsed.error_code == "corrupt_image"
    if len(filename.encode()) <= 600:  # the message is shortened first: the filename matters more
        assert parsed.filename == filename
    else:
        assert parsed.filename.startswith(filename[:4]) and "…" in parsed.filename


def test_deleted_images_and_bookkeeping_keys_leave_pages_full_and_cost_nothing(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tombstones of deleted images sit between images until the reconciler retires them, and the
    reconciler's index (``~todo/``) after them: neither shortens a page nor adds a call."""
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    ids = store_ready_images(40)
    for image_id in ids[::3]:
        response = client.http.delete(f"/images/{image_id}", headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 204
    for _ in range(30):  # grants not used yet: each in the index
        body = json.dumps({"filename": "a.jpg", "content_type": "image/jpeg"})
        client.http.post("/uploads", headers={"Content-Type": "application/json"}, body=body)
    kept = [i for i in ids if i not in ids[::3]]
    calls = s3_calls()
    pages, cursor = [], None
    while True:
        query = "limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = json.loads(client.http.get(f"/images?{query}").body)
        pages.append([image["id"] for image in page["images"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [10, 10, 6]
    assert [i for p in pages for i in p] == kept
    assert calls == ["ListObjectsV2"] * len(pages)
