"""The resize handler, invoked the way Lambda invokes it (Chalice's test client) against moto."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import processing, storage
from chalicelib.config import get_settings
from chalicelib.filenames import clean_filename
from tests.support import IMAGES_BUCKET, UPLOAD_BUCKET, jpeg, s3_event, thread_safe_moto_overwrites

NASTY_KEYS = [
    "uploads/my photo+1.jpg",
    "uploads/100% real.jpg",
    "uploads/a%2Fb%20c.jpg",
    "uploads/üñïçødé 写真.jpg",
    "uploads/../../etc/passwd.jpg",
    "uploads/tab\there.jpg",
    "uploads/ctrl\x01char.jpg",
    "uploads/deep/folder/with spaces/IMG_0001.JPG",
    "uploads/" + "long-" * 200 + ".jpg",
]


# The extensions of the copies each still rendition also has (RENDITION_FORMATS, default webp,avif).
ALTERNATES = (".webp", ".avif")


@pytest.fixture(autouse=True)
def _racing_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    thread_safe_moto_overwrites(monkeypatch)


def keys(s3: Any, bucket: str) -> dict[str, str]:
    """Every key in a bucket with its ETag."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"]: obj["ETag"] for page in pages for obj in page.get("Contents", [])}


def count_calls(operation: str) -> list[str]:
    """Record every call of one S3 operation made by the app's client."""
    calls: list[str] = []
    storage.s3().meta.events.register(f"before-call.s3.{operation}", lambda **kw: calls.append(operation))
    return calls


def only_image(client: Any) -> dict[str, Any]:
    images = json.loads(client.http.get("/images").body)["images"]
    assert len(images) == 1, images
    return images[0]


@pytest.mark.parametrize("key", NASTY_KEYS)
def test_any_key_under_uploads_is_processed_once_with_its_filename(client: Any, aws: Any, key: str) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(800, 600))
    client.lambda_.invoke("resize", s3_event(key))
    image = only_image(client)
    assert image["status"] == "ready", image
    assert image["original"]["filename"] == clean_filename(key.rsplit("/", 1)[-1])
    assert storage.is_id(image["id"])
    assert {r["name"] for r in image["renditions"]} == {"thumb", "large"}
    # the same event again: nothing new, nothing rewritten
    before = keys(aws, IMAGES_BUCKET)
    client.lambda_.invoke("resize", s3_event(key))
    assert keys(aws, IMAGES_BUCKET) == before
    assert only_image(client)["id"] == image["id"]


def test_thumbnail_fits_the_box_keeps_aspect_and_is_a_real_jpeg(client: Any, aws: Any) -> None:
    from io import BytesIO

    from PIL import Image

    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/wide.jpg", Body=jpeg(3000, 1000))
    client.lambda_.invoke("resize", s3_event("uploads/wide.jpg"))
    thumb = next(r for r in only_image(client)["renditions"] if r["name"] == "thumb")
    key = next(k for k in keys(aws, IMAGES_BUCKET) if "/r/thumb." in k and k.endswith(".jpg"))
    pixels = Image.open(BytesIO(aws.get_object(Bucket=IMAGES_BUCKET, Key=key)["Body"].read()))
    assert pixels.format == "JPEG" and thumb["content_type"] == "image/jpeg"
    assert thumb["url"].split("?")[0].endswith(key)
    assert pixels.size == (thumb["width"], thumb["height"]) == (400, 133)
    assert pixels.getpixel((10, 10))[0] > 240 and pixels.getpixel((390, 120))[1] < 80  # white corner kept


def test_exif_orientation_is_applied_and_metadata_stripped(client: Any, aws: Any) -> None:
    from io import BytesIO

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "SecretCam serial 1234"
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/rotated.jpg", Body=jpeg(800, 400, exif=exif.tobytes()))
    client.lambda_.invoke("resize", s3_event("uploads/rotated.jpg"))
    image = only_image(client)
    assert (image["original"]["width"], image["original"]["height"]) == (400, 800)
    thumbs = sorted(k for k in keys(aws, IMAGES_BUCKET) if "/r/thumb." in k)
    assert [k.rsplit(".", 1)[1] for k in thumbs] == ["avif", "jpg", "webp"]  # every format, alike
    for key in thumbs:
        data = aws.get_object(Bucket=IMAGES_BUCKET, Key=key)["Body"].read()
        assert b"SecretCam" not in data and b"Exif" not in data
        thumb = Image.open(BytesIO(data))
        assert thumb.size == (200, 400) and not thumb.info.get("exif") and not thumb.getexif()
        rgb = thumb.convert("RGB")
        # the white top-left quarter of the stored image is the top-right after rotating clockwise
        assert rgb.getpixel((190, 10))[1] > 240 and rgb.getpixel((10, 10))[1] < 80


def test_keys_outside_the_upload_prefix_or_bucket_are_refused(client: Any, aws: Any) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="elsewhere/photo.jpg", Body=jpeg())
    aws.put_object(Bucket=IMAGES_BUCKET, Key="uploads/photo.jpg", Body=jpeg())
    settings = get_settings()
    for bucket, key in (
        (UPLOAD_BUCKET, "elsewhere/photo.jpg"),
        (IMAGES_BUCKET, "uploads/photo.jpg"),
        (UPLOAD_BUCKET, "uploads/"),
        (UPLOAD_BUCKET, "uploads/folder/"),
    ):
        outcome = processing.process_upload(bucket, key, settings)
        assert outcome.outcome == "ignored" and outcome.error_message
    assert set(keys(aws, IMAGES_BUCKET)) == {"uploads/photo.jpg"}


def test_nothing_the_handler_writes_can_trigger_it_again(client: Any, aws: Any) -> None:
    uploads_before = keys(aws, UPLOAD_BUCKET)
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/a.jpg", Body=jpeg())
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/b.txt", Body=b"text")
    client.lambda_.invoke("resize", s3_event("uploads/a.jpg"))
    client.lambda_.invoke("resize", s3_event("uploads/b.txt"))
    # each upload moved to an original of its own, outside the watched prefix; all output is in
    # the images bucket, and nothing is written under uploads/
    uploads = set(keys(aws, UPLOAD_BUCKET)) - set(uploads_before)
    assert len(uploads) == 2 and all(k.startswith(storage.ORIGINALS_PREFIX) for k in uploads), uploads
    written = keys(aws, IMAGES_BUCKET)
    # two renditions and a ready record, one failed record (and the renditions' WebP/AVIF copies)
    assert len([k for k in written if not k.endswith(ALTERNATES)]) == 4
    assert not any(storage.is_upload_key(k) for k in written)
    # and by construction: every key layout function yields keys outside uploads/
    image_id = storage.new_id()
    record = storage.Record(id=image_id, status="ready", filename="uploads/x.jpg", bytes=1)
    for key in (storage.rendition_key(image_id, "thumb", 1, 1, "0" * 10, "jpg"), storage.record_key(record)):
        assert not storage.is_upload_key(key)


def test_oversized_object_is_refused_from_its_head_without_download(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "50000")
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/big.jpg", Body=b"\xff" * 50001)
    gets = count_calls("GetObject")
    client.lambda_.invoke("resize", s3_event("uploads/big.jpg"))
    image = only_image(client)
    assert image["status"] == "failed"
    assert image["error"]["code"] == "file_too_large"
    assert "limit" in image["error"]["message"]
    assert gets == []
    assert storage.original_key(image["id"]) in keys(aws, UPLOAD_BUCKET)  # the original is kept


def test_empty_object_is_recorded_as_empty_file(client: Any, aws: Any) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/empty.jpg", Body=b"")
    client.lambda_.invoke("resize", s3_event("uploads/empty.jpg"))
    assert only_image(client)["error"]["code"] == "empty_file"


def test_crash_between_renditions_is_repaired_by_the_next_delivery(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/crash.jpg", Body=jpeg(2000, 1000))
    real_put = storage.put_rendition
    written: list[str] = []

    def put_then_die(*args: Any, **kwargs: Any) -> str:
        if written:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")
        written.append(real_put(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(storage, "put_rendition", put_then_die)
    with pytest.raises(ClientError):  # raised, so Lambda retries the event
        client.lambda_.invoke("resize", s3_event("uploads/crash.jpg"))
    half = only_image(client)
    assert half["status"] == "pending" and half["renditions"] == []  # never half-listed as ready
    assert len(written) == 1

    monkeypatch.setattr(storage, "put_rendition", real_put)
    client.lambda_.invoke("resize", s3_event("uploads/crash.jpg"))
    image = only_image(client)
    assert image["status"] == "ready"
    assert len(image["renditions"]) == 2
    records = [k for k in keys(aws, IMAGES_BUCKET) if "/s/" in k]
    assert len(records) == 1 and "/s/ready." in records[0]


def test_transient_s3_failure_is_raised_not_recorded(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/t.jpg", Body=jpeg())

    def unavailable(*args: Any, **kwargs: Any) -> bytes:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "GetObject")

    monkeypatch.setattr(storage, "read_upload", unavailable)
    with pytest.raises(ClientError):
        client.lambda_.invoke("resize", s3_event("uploads/t.jpg"))
    assert only_image(client)["status"] == "pending"


def test_delete_originals_removes_the_upload_only_after_success(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELETE_ORIGINALS", "true")
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/ok.jpg", Body=jpeg())
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/bad.jpg", Body=b"nope")
    client.lambda_.invoke("resize", s3_event("uploads/ok.jpg"))
    client.lambda_.invoke("resize", s3_event("uploads/bad.jpg"))
    images = {i["status"]: i["id"] for i in json.loads(client.http.get("/images").body)["images"]}
    assert set(images) == {"ready", "failed"}
    # the ready image's original is gone; a failed image keeps its own
    assert set(keys(aws, UPLOAD_BUCKET)) == {storage.original_key(images["failed"])}


def test_racing_deliveries_leave_one_set_of_renditions(client: Any, aws: Any) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/race.jpg", Body=jpeg(1600, 1200))
    settings = get_settings()
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def deliver() -> None:
        barrier.wait()
        try:
            processing.process_upload(UPLOAD_BUCKET, "uploads/race.jpg", settings)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    written = keys(aws, IMAGES_BUCKET)
    assert len({k[: storage.ID_LENGTH] for k in written}) == 1
    assert sorted(k.split("/")[1] for k in written if not k.endswith(ALTERNATES)) == ["r", "r", "s"]
    assert only_image(client)["status"] == "ready"


def test_each_invocation_logs_one_json_line(client: Any, aws: Any, caplog: pytest.LogCaptureFixture) -> None:
    from app import app

    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/log.jpg", Body=jpeg())
    with caplog.at_level("INFO", logger="imageshelf"):
        client.lambda_.invoke("resize", s3_event("uploads/log.jpg"))
    records = [r for r in caplog.records if r.name == "imageshelf"]
    assert len(records) == 1
    # what the function writes to its log stream is the bare JSON, which Logs Insights reads as fields
    assert app.log.handlers
    line = json.loads(app.log.handlers[0].format(records[0]))
    assert line["outcome"] == "ready" and storage.is_id(line["image_id"]) and line["key"] == "uploads/log.jpg"
    assert line["request_id"]
    assert line["bytes_in"] == len(jpeg()) and line["bytes_out"] > 0
    assert {"head", "read", "decode", "resize", "encode", "write", "record"} <= set(line["durations_ms"])
    assert line["peak_rss_mb"] > 0


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        yield self.data


def fail_first(operation: str, times: int, status: int, code: str) -> list[int]:
    """Answer the first ``times`` calls of ``operation`` with an S3 error, as S3 does under load."""
    from botocore.awsrequest import AWSResponse

    seen: list[int] = []

    def maybe_fail(request: Any, **kwargs: Any) -> Any:
        seen.append(status)
        if len(seen) <= times:
            body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Body(body))
        return None

    storage.s3().meta.events.register(f"before-send.s3.{operation}", maybe_fail)
    return seen


@pytest.mark.parametrize(
    ("operation", "status", "code"), [("GetObject", 503, "SlowDown"), ("PutObject", 500, "InternalError")]
)
def test_transient_s3_errors_are_retried_by_the_client(
    client: Any, aws: Any, operation: str, status: int, code: str
) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/retry.jpg", Body=jpeg())
    seen = fail_first(operation, 2, status, code)
    client.lambda_.invoke("resize", s3_event("uploads/retry.jpg"))
    assert only_image(client)["status"] == "ready"
    assert len(seen) > 2  # the failures happened and were retried


def test_permanent_s3_failure_is_recorded_as_internal_error(client: Any, aws: Any) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/denied.jpg", Body=jpeg())
    fail_first("GetObject", 100, 403, "AccessDenied")
    client.lambda_.invoke("resize", s3_event("uploads/denied.jpg"))
    image = only_image(client)
    assert image["status"] == "failed"
    assert image["error"] == {
        "code": "internal_error",
        "message": "Processing failed (S3 error AccessDenied); the original is kept.",
    }
    assert storage.original_key(image["id"]) in keys(aws, UPLOAD_BUCKET)


def _frames(kind: str, count: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    frames = [Image.new("RGB", (120, 80), (40 * n % 256, 200, 90)) for n in range(count)]
    buffer = BytesIO()
    frames[0].save(buffer, kind, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


@pytest.mark.parametrize(("kind", "frames", "animated"), [("GIF", 4, True), ("TIFF", 3, False)])
def test_frames_are_reported_for_animations_and_multi_page_files(
    client: Any, aws: Any, kind: str, frames: int, animated: bool
) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=f"uploads/many.{kind.lower()}", Body=_frames(kind, frames))
    client.lambda_.invoke("resize", s3_event(f"uploads/many.{kind.lower()}"))
    image = only_image(client)
    assert image["status"] == "ready"
    assert image["original"]["frames"] == frames
    # animated renditions carry every frame; a multi-page TIFF's show its first page
    assert {r["frames"] for r in image["renditions"]} == {frames if animated else 1}


def _upload_grant(client: Any) -> dict[str, Any]:
    body = json.dumps({"filename": "v.jpg", "content_type": "image/jpeg"})
    return json.loads(
        client.http.post("/uploads", headers={"Content-Type": "application/json"}, body=body).body
    )


def test_a_replaced_original_is_processed_again_and_only_its_renditions_show(client: Any, aws: Any) -> None:
    key = _upload_grant(client)["fields"]["key"]
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(800, 600))
    client.lambda_.invoke("resize", s3_event(key))
    assert only_image(client)["original"]["width"] == 800
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(600, 900))  # the same presigned key, again
    client.lambda_.invoke("resize", s3_event(key))
    image = only_image(client)
    assert (image["original"]["width"], image["original"]["height"]) == (600, 900)
    assert {(r["width"], r["height"]) for r in image["renditions"]} == {(267, 400), (600, 900)}
    left = [k for k in keys(aws, IMAGES_BUCKET) if not k.endswith(ALTERNATES)]
    assert len(left) == 3  # the first version's renditions and record are gone
    assert len({k.split(".")[-2] for k in keys(aws, IMAGES_BUCKET) if "/r/" in k}) == 1  # and their copies


def test_an_image_deleted_while_it_is_processed_does_not_come_back(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    grant = _upload_grant(client)
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=grant["fields"]["key"], Body=jpeg())
    real_put = storage.put_rendition
    deleted: list[int] = []

    def delete_meanwhile(*args: Any, **kwargs: Any) -> str:
        if not deleted:  # an admin deletes the card while it says "Processing…"
            response = client.http.delete(
                f"/images/{grant['id']}", headers={"Authorization": "Bearer s3cret"}
            )
            deleted.append(response.status_code)
        return real_put(*args, **kwargs)

    monkeypatch.setattr(storage, "put_rendition", delete_meanwhile)
    client.lambda_.invoke("resize", s3_event(grant["fields"]["key"]))
    assert deleted == [204]
    assert client.http.get(f"/images/{grant['id']}").status_code == 404
    # only the tombstone, and the marker that has the reconciler retire it once the grant has expired
    assert sorted(keys(aws, IMAGES_BUCKET)) == [
        storage.tombstone_key(grant["id"]),
        storage.marker_key(grant["id"]),
    ]
    assert keys(aws, UPLOAD_BUCKET) == {}


def test_an_original_replaced_while_it_is_processed_is_left_to_its_own_event(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _upload_grant(client)["fields"]["key"]
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(800, 600))
    real_read = storage.read_upload

    def replace_meanwhile(*args: Any, **kwargs: Any) -> bytes:
        data = real_read(*args, **kwargs)
        aws.put_object(Bucket=UPLOAD_BUCKET, Key=key, Body=jpeg(300, 500))
        return data

    monkeypatch.setattr(storage, "read_upload", replace_meanwhile)
    client.lambda_.invoke("resize", s3_event(key))  # works on the old bytes, finds them replaced
    monkeypatch.setattr(storage, "read_upload", real_read)
    client.lambda_.invoke("resize", s3_event(key))  # the replacement's own event
    image = only_image(client)
    assert image["status"] == "ready"
    assert (image["original"]["width"], image["original"]["height"]) == (300, 500)
    assert {(r["width"], r["height"]) for r in image["renditions"]} == {(240, 400), (300, 500)}


def test_a_retried_invocation_logs_its_line_too(
    client: Any, aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/busy.jpg", Body=jpeg())
    fail_first("GetObject", 100, 503, "SlowDown")
    with caplog.at_level("INFO", logger="imageshelf"), pytest.raises(ClientError):
        client.lambda_.invoke("resize", s3_event("uploads/busy.jpg"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "imageshelf"]
    assert [line["outcome"] for line in lines] == ["retry"]
    assert lines[0]["error_message"] == "S3 error SlowDown"
