"""Helpers shared by the tests: images, S3 events, and the local stack in a subprocess."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_plus

from PIL import Image

from tools.stack import IMAGES_BUCKET, UPLOAD_BUCKET, Stack, free_port

__all__ = [
    "IMAGES_BUCKET",
    "UPLOAD_BUCKET",
    "Stack",
    "assert_invariants",
    "free_port",
    "jpeg",
    "png_rgba",
    "post_upload",
    "process",
    "s3_event",
    "thread_safe_moto_overwrites",
]


def jpeg(
    width: int = 1200, height: int = 800, color: tuple[int, int, int] = (200, 40, 40), **save: Any
) -> bytes:
    """A JPEG whose top-left quarter is white, so orientation and cropping are visible."""
    image = Image.new("RGB", (width, height), color)
    image.paste((255, 255, 255), (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def png_rgba(width: int = 300, height: int = 200) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 255, 0))
    image.paste((0, 128, 255, 255), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def s3_event(key: str, bucket: str = UPLOAD_BUCKET, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 notification as Lambda receives it: the key URL-encoded, as S3 sends it
    (Chalice's test client does not encode keys; real S3 does)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-23T12:00:00.000Z",
                "eventName": event,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "resize",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": 1, "eTag": "x", "sequencer": "0"},
                },
            }
        ]
    }


def post_upload(client: Any, **body: Any) -> Any:
    """``POST /uploads`` through Chalice's test client."""
    return client.http.post("/uploads", headers={"Content-Type": "application/json"}, body=json.dumps(body))


def process(client: Any, aws: Any, data: bytes, filename: str = "photo.jpg") -> str:
    """Upload through a presigned grant's key and deliver the S3 event; returns the id."""
    grant = json.loads(post_upload(client, filename=filename, content_type="image/jpeg").body)
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=grant["fields"]["key"],
        Body=data,
        Metadata={"filename": grant["fields"]["x-amz-meta-filename"]},
    )
    client.lambda_.invoke("resize", s3_event(grant["fields"]["key"]))
    return grant["id"]


def thread_safe_moto_overwrites(monkeypatch: Any) -> None:
    """For tests that race writes, moto made to behave like S3 (tools/moto_patches.py): buffers of
    replaced objects outlive the requests reading them, and conditional writes are atomic."""
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    from tools import moto_patches

    for cls, name in ((FakeKey, "dispose"), (S3Response, "put_object"), (S3Response, "delete_object")):
        monkeypatch.setattr(cls, name, getattr(cls, name))  # restored after the test
    moto_patches.keep_replaced_buffers()
    moto_patches.atomic_conditional_writes()


def _all_objects(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"]: obj for page in pages for obj in page.get("Contents", [])}


def assert_invariants(
    s3: Any,
    deleted: Iterable[str] = (),
    upload_bucket: str = UPLOAD_BUCKET,
    images_bucket: str = IMAGES_BUCKET,
    settings: Any = None,
) -> dict[str, Any]:
    """Check the convergence invariants (docs/convergence.md) over both buckets, at rest (every
    delivery finished); returns the Record shown for each image, by id.

    1. Every original has exactly one image, settled, and every image owns its original: an
       original is ``uploads/{id}`` (a grant's) or ``originals/{id}``, never both, and nothing else
       is left under ``uploads/`` (each object from any S3 client was copied to its own original).
    2. An image whose original is gone has no record, no rendition and no marker left (a deleted
       one keeps only its tombstone); a deleted image has no original.
    3. The record shown is the one for the current original: its version is the original's ETag's,
       it is the image's only record, and its renditions are that version's, one per configured
       rendition when it is ready.
    4. Nothing is left unsettled: no pending record, and no marker but a deleted image's (kept
       until its tombstone is retired).
    5. On-demand renders belong to a ready image and were made from its current original; no
       render's lease is left behind.
    """
    from chalicelib import storage
    from chalicelib.config import Settings

    settings = settings or Settings()
    uploads = _all_objects(s3, upload_bucket)
    images = _all_objects(s3, images_bucket)
    originals: dict[str, dict[str, Any]] = {}
    for key, obj in uploads.items():
        name = key.split("/", 1)[1]
        if key.startswith(storage.ORIGINALS_PREFIX) or (
            key.startswith(storage.UPLOAD_PREFIX) and storage.granted_id(key, obj["LastModified"], settings)
        ):
            assert name not in originals, f"{name} has two originals"
            originals[name] = obj
        else:
            raise AssertionError(f"{key} was never given an image of its own")
    groups: dict[str, list[dict[str, Any]]] = {}
    markers = set()
    for key, obj in images.items():
        if key.startswith(storage.MARKER_PREFIX):
            markers.add(key[len(storage.MARKER_PREFIX) :])
        elif key.startswith(f"{storage.SAMPLE_OWNER}/"):
            assert not key.endswith(".lock"), f"{key}: a render's lease left behind"
        elif key != storage.SWEEP_KEY:
            assert storage.is_id(key[: storage.ID_LENGTH]), f"{key} is not an image's key"
            groups.setdefault(key[: storage.ID_LENGTH], []).append(obj)
    deleted = set(deleted)
    tombstoned = {i for i, keys in groups.items() if any(storage.is_tombstone(o["Key"]) for o in keys)}
    # a deleted image's marker stays until its tombstone is retired; any other is unsettled work
    assert markers <= tombstoned, f"unsettled: {sorted(markers - tombstoned)}"
    shown = {}
    for image_id, original in originals.items():
        assert image_id not in deleted, f"the deleted image {image_id} has an original again"
        keys = groups.get(image_id, [])
        assert not any(storage.is_tombstone(o["Key"]) for o in keys), (
            f"{image_id} has an original and a tombstone"
        )
        version = storage.version_tag(original["ETag"].strip('"'))
        records = storage.image_records(image_id, keys)
        assert len(records) == 1, f"{image_id} has {len(records)} records: {[o['Key'] for o in keys]}"
        record = storage.image_state(image_id, keys)
        assert record is not None and record.status in ("ready", "failed"), (image_id, record)
        assert record.version == version, f"{image_id} shows another version than its original's"
        renditions = [
            p for _, p in storage.parse_image_keys(image_id, keys) if isinstance(p, storage.Rendition)
        ]
        assert all(r.version == version for r in renditions), f"{image_id} keeps another version's renditions"
        if record.status == "ready":
            assert {r.name for r in renditions} == {name for name, _ in settings.renditions}
        else:
            assert renditions == []
        for key in (o["Key"] for o in keys if storage.is_render_key(o["Key"])):
            assert not key.endswith(".lock"), f"{key}: a render's lease left behind"
            assert record.status == "ready", f"{image_id} is {record.status} but keeps the render {key}"
            made_from = s3.head_object(Bucket=images_bucket, Key=key)["Metadata"].get("version")
            assert made_from == version, f"{key} was made from another version of the original"
        shown[image_id] = record
    for image_id, keys in groups.items():
        if image_id in originals:
            continue
        left = [o["Key"] for o in keys if not storage.is_tombstone(o["Key"])]
        assert left == [], f"{image_id} has no original but keeps {left}"
    for image_id in deleted:
        assert [o["Key"] for o in groups.get(image_id, [])] in ([], [storage.tombstone_key(image_id)])
    return shown
