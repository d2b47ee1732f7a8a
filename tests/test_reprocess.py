"""``make reprocess``: images processed before placeholders and AVIF/WebP get them, once."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from chalicelib import processing, storage
from chalicelib.config import get_settings
from tests.support import IMAGES_BUCKET, jpeg, png_rgba, process
from tools import reprocess


def objects(aws: Any) -> dict[str, str]:
    listed = aws.list_objects_v2(Bucket=IMAGES_BUCKET).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed if not o["Key"].startswith("~")}


def as_before_the_change(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch, data: bytes, name: str
) -> str:
    """An image as processed before this change: JPEG/PNG renditions only, a record without a
    placeholder or formats."""
    monkeypatch.setenv("RENDITION_FORMATS", "jpeg")
    image_id = process(client, aws, data, name)
    monkeypatch.delenv("RENDITION_FORMATS")
    settings = get_settings()
    record = storage.get_record(image_id, settings)
    assert record is not None and record.status == "ready"
    body = storage.read_record_body(record, settings)
    old = replace(record, placeholder=None, formats=None, renditions=(), source_key=body["source_key"])
    storage.put_record(old, settings)
    aws.delete_object(Bucket=IMAGES_BUCKET, Key=storage.record_key(replace(record, renditions=())))
    return image_id


def test_old_images_get_placeholders_and_new_formats_once(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = as_before_the_change(client, aws, monkeypatch, jpeg(1600, 1200), "photo.jpg")
    clear = as_before_the_change(client, aws, monkeypatch, png_rgba(600, 400), "clear.png")
    before = json.loads(client.http.get(f"/images/{photo}").body)
    assert "placeholder" not in before
    assert [[f["content_type"] for f in r["formats"]] for r in before["renditions"]] == [["image/jpeg"]] * 2
    jpegs = {k: e for k, e in objects(aws).items() if k.endswith(".jpg")}

    counts = reprocess.run(get_settings())
    assert counts == {"images": 2, "reprocessed": 2, "current": 0, "skipped": 0, "failed": 0}
    after = json.loads(client.http.get(f"/images/{photo}").body)
    assert after["status"] == "ready" and after["placeholder"]["color"].startswith("#")
    for rendition in after["renditions"]:
        types = [f["content_type"] for f in rendition["formats"]]
        assert sorted(types) == ["image/avif", "image/jpeg", "image/webp"]
        assert rendition["content_type"] == "image/jpeg"  # still the JPEG, for every client
    assert {k: e for k, e in objects(aws).items() if k.endswith(".jpg")} == jpegs  # rewritten alike
    assert "placeholder" in json.loads(client.http.get(f"/images/{clear}").body)
    for image_id in (photo, clear):
        assert len(storage.image_records(image_id, storage.image_objects(image_id, get_settings()))) == 1

    # Idempotent: a second run finds nothing to do and writes nothing.
    snapshot = objects(aws)
    puts: list[str] = []
    storage.s3().meta.events.register("before-call.s3.PutObject", lambda **kw: puts.append("put"))
    assert reprocess.run(get_settings())["reprocessed"] == 0
    assert puts == [] and objects(aws) == snapshot


def test_an_image_whose_original_was_replaced_is_left_to_its_own_processing(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_id = as_before_the_change(client, aws, monkeypatch, jpeg(800, 600), "a.jpg")
    settings = get_settings()
    record = storage.get_record(image_id, settings)
    assert record is not None
    source = storage.read_record_body(record, settings)["source_key"]
    aws.put_object(Bucket=settings.upload_bucket, Key=source, Body=jpeg(640, 480, color=(0, 0, 200)))
    outcome = processing.reprocess_image(image_id, settings)
    assert outcome.outcome == "ignored" and "replaced" in (outcome.error_message or "")
    assert "placeholder" not in json.loads(client.http.get(f"/images/{image_id}").body)
