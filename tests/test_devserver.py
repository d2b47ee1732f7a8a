"""The local stack's mirror of the embedded S3 (tools/devserver.py ``Mirror``): what it saves comes
back as it was, ETag and LastModified included, which ids, versions and grant checks are made of."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib import storage
from chalicelib.config import get_settings
from tests.support import IMAGES_BUCKET, UPLOAD_BUCKET, jpeg
from tools.devserver import Mirror


def backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def test_objects_come_back_with_their_etag_time_and_metadata(aws: Any, tmp_path: Path) -> None:
    made = time.time() - 3600
    image_id = storage.new_id(at=made)
    key = storage.upload_key(image_id)
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(64, 48), Metadata={"filename": "cat.jpg"})
    # uploaded an hour ago, through its grant: a restore now must not make it look new
    backend().get_object(UPLOAD_BUCKET, key).last_modified = datetime.fromtimestamp(made + 5, UTC).replace(
        tzinfo=None
    )
    aws.put_object(Bucket=IMAGES_BUCKET, Key="gone", Body=b"x")
    mirror = Mirror(backend(), [UPLOAD_BUCKET, IMAGES_BUCKET], tmp_path)
    mirror.persist()
    aws.delete_object(Bucket=IMAGES_BUCKET, Key="gone")
    mirror.persist()  # deletions are mirrored too
    before = aws.head_object(Bucket=UPLOAD_BUCKET, Key=key)
    aws.delete_object(Bucket=UPLOAD_BUCKET, Key=key)
    assert Mirror(backend(), [UPLOAD_BUCKET, IMAGES_BUCKET], tmp_path).restore() == 1
    after = aws.head_object(Bucket=UPLOAD_BUCKET, Key=key)
    for field in ("ETag", "LastModified", "Metadata", "ContentLength"):
        assert after[field] == before[field], field
    assert storage.granted_id(key, after["LastModified"], get_settings()) == image_id


def test_folders_of_earlier_versions_are_restored_with_uploads_times_from_their_ids(
    aws: Any, tmp_path: Path
) -> None:
    """They kept no times: a presigned upload restored "now" would no longer look like its grant's."""
    made = time.time() - 3 * 24 * 3600
    image_id = storage.new_id(at=made)
    key = storage.upload_key(image_id)
    folder = tmp_path / UPLOAD_BUCKET
    folder.mkdir(parents=True)
    meta = {
        "Key": key,
        "ContentType": "image/jpeg",
        "CacheControl": None,
        "Metadata": {"filename": "old.jpg"},
    }
    (folder / "a.json").write_text(json.dumps(meta))
    (folder / "a.bin").write_bytes(jpeg(64, 48))
    assert Mirror(backend(), [UPLOAD_BUCKET, IMAGES_BUCKET], tmp_path).restore() == 1
    head = aws.head_object(Bucket=UPLOAD_BUCKET, Key=key)
    assert head["Metadata"] == {"filename": "old.jpg"} and head["ContentType"] == "image/jpeg"
    assert abs(head["LastModified"].timestamp() - made) < 1
    assert storage.granted_id(key, head["LastModified"], get_settings()) == image_id
