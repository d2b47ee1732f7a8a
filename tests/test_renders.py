"""On-demand renders, details and the operations Lambda function, through Chalice's test client
against moto: the cache (hits cost one S3 call and no decode), normalisation, the lease under a
burst of identical misses, signatures and presets, every error path, and cleanup with the image."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import pytest
from PIL import Image

from chalicelib import formats, operations, renders, storage, transform
from chalicelib.config import get_settings
from tests.support import (
    IMAGES_BUCKET,
    UPLOAD_BUCKET,
    jpeg,
    png_rgba,
    post_upload,
    process,
    thread_safe_moto_overwrites,
)


def error_of(response: Any) -> dict[str, str]:
    body = json.loads(response.body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return body["error"]


def key_of(location: str) -> str:
    """The images-bucket key a render redirect points at (a presigned URL in the local stage)."""
    path = unquote(urlsplit(location).path).lstrip("/")
    return path.removeprefix(f"{IMAGES_BUCKET}/")


def fetch(aws: Any, response: Any) -> tuple[Image.Image, dict[str, Any]]:
    assert response.status_code == 302, response.body
    obj = aws.get_object(Bucket=IMAGES_BUCKET, Key=key_of(response.headers["Location"]))
    data = obj["Body"].read()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, obj


def render(client: Any, image_id: str, query: str | dict[str, Any] = "", **headers: str) -> Any:
    if isinstance(query, dict):
        query = urlencode(query)
    return client.http.get(f"/images/{image_id}/render?{query}", headers=headers)


class Counter:
    """Counts S3 API calls made through the app's client, and decodes (Pillow opens)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.s3: list[str] = []
        self.decodes = 0
        self.renders = 0
        storage.s3().meta.events.register("before-call.s3", self._call)
        real_open, real_render = Image.open, transform.render

        def counting_open(*args: Any, **kwargs: Any) -> Any:
            self.decodes += 1
            return real_open(*args, **kwargs)

        def counting_render(*args: Any, **kwargs: Any) -> Any:
            self.renders += 1
            return real_render(*args, **kwargs)

        monkeypatch.setattr(Image, "open", counting_open)
        monkeypatch.setattr(transform, "render", counting_render)

    def _call(self, model: Any, **_: Any) -> None:
        self.s3.append(model.name)

    def reset(self) -> None:
        self.s3.clear()
        self.decodes = self.renders = 0


@pytest.fixture
def photo(client: Any, aws: Any) -> str:
    return process(client, aws, jpeg(1200, 800), filename="beach day.jpg")


# --- the cache ------------------------------------------------------------------------------


def test_render_redirects_to_a_stored_render_of_the_asked_size_and_format(
    client: Any, aws: Any, photo: str
) -> None:
    response = render(client, photo, "w=300&format=webp")
    image, obj = fetch(aws, response)
    assert image.format == "WEBP" and image.size == (300, 200)
    assert obj["ContentType"] == "image/webp"
    assert key_of(response.headers["Location"]).startswith(f"{photo}/x/")
    assert (
        obj["ContentDisposition"] == "inline; filename=\"beach day.webp\"; filename*=UTF-8''beach%20day.webp"
    )
    assert "Accept" not in response.headers.get("Vary", "")


def test_a_hit_costs_one_s3_call_and_no_decode(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter(monkeypatch)
    first = render(client, photo, "w=640&h=480&fit=cover&format=webp&q=70&filter=sepia")
    assert first.status_code == 302 and counter.renders == 1 and counter.decodes >= 1
    counter.reset()
    again = render(client, photo, "w=640&h=480&fit=cover&format=webp&q=70&filter=sepia")
    assert again.headers["Location"] == first.headers["Location"]
    assert counter.s3 == ["HeadObject"] and counter.decodes == 0 and counter.renders == 0


def test_equivalent_parameter_orders_share_one_object(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter(monkeypatch)
    first = render(client, photo, "w=800&h=600&format=png")
    for query in ("h=600&w=800&format=png", "format=png&fit=contain&h=600&w=800&gravity=north"):
        assert render(client, photo, query).headers["Location"] == first.headers["Location"]
    assert counter.renders == 1
    assert operations.parse_query("h=600&w=800").canonical == operations.parse_query("w=800&h=600").canonical


def test_a_burst_of_identical_misses_renders_once_and_leaves_one_good_object(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_safe_moto_overwrites(monkeypatch)
    counter = Counter(monkeypatch)
    settings = get_settings()
    results: list[Any] = []
    start = threading.Barrier(50)

    def miss() -> None:
        start.wait()
        try:
            results.append(renders.render(photo, {"w": ["500"], "format": ["webp"]}, None, settings))
        except Exception as error:  # collected: the assertion below shows it
            results.append(error)

    threads = [threading.Thread(target=miss) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(r, renders.Rendered) for r in results), [
        r for r in results if isinstance(r, Exception)
    ]
    assert len({r.key for r in results}) == 1 and len(results) == 50
    assert counter.renders == 1
    keys = [
        o["Key"] for o in aws.list_objects_v2(Bucket=IMAGES_BUCKET, Prefix=f"{photo}/x/").get("Contents", [])
    ]
    assert keys == [results[0].key]  # the object, and no lease left behind
    image = Image.open(io.BytesIO(aws.get_object(Bucket=IMAGES_BUCKET, Key=keys[0])["Body"].read()))
    assert image.format == "WEBP" and image.size == (500, 333)


def test_a_stale_lease_is_taken_over(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = storage.render_key(photo, "f" * 32)
    settings = get_settings()
    assert storage.take_render_lease(key, settings)
    assert not storage.take_render_lease(key, settings)  # held: someone is rendering
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(seconds=storage.RENDER_LEASE_STALE + 1)
    assert storage.take_render_lease(key, settings, now=later)  # its maker died: taken over


def test_a_busy_render_answers_503_after_waiting(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(renders, "WAIT_SECONDS", 0.3)
    spec = operations.parse_query("w=200")
    key = storage.render_key(photo, renders._digest(spec, ""))
    assert storage.take_render_lease(key, get_settings())  # another request holds it and never finishes
    response = render(client, photo, "w=200")
    assert response.status_code == 503 and error_of(response)["code"] == "render_busy"


def test_renders_go_away_with_their_image(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "secret")
    assert render(client, photo, "w=100").status_code == 302
    assert render(client, photo, "preset=square").status_code == 302
    assert len(aws.list_objects_v2(Bucket=IMAGES_BUCKET, Prefix=f"{photo}/x/").get("Contents", [])) == 2
    assert (
        client.http.delete(f"/images/{photo}", headers={"Authorization": "Bearer secret"}).status_code == 204
    )
    assert aws.list_objects_v2(Bucket=IMAGES_BUCKET, Prefix=f"{photo}/x/").get("KeyCount") == 0
    response = render(client, photo, "w=100")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_replacing_the_original_drops_its_renders(client: Any, aws: Any, photo: str) -> None:
    old = render(client, photo, "w=100")
    old_key = key_of(old.headers["Location"])
    # The original is overwritten (an S3 client writing the same key): its new version settles.
    record = storage.get_record(photo, get_settings())
    assert record is not None
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=storage.upload_key(photo), Body=jpeg(600, 600, (0, 0, 255)),
                   Metadata={"filename": "beach%20day.jpg"})  # fmt: skip
    from tests.support import s3_event

    client.lambda_.invoke("resize", s3_event(storage.upload_key(photo)))
    new_record = storage.get_record(photo, get_settings())
    assert new_record is not None and new_record.version != record.version
    assert aws.list_objects_v2(Bucket=IMAGES_BUCKET, Prefix=old_key).get("KeyCount") == 0
    image, obj = fetch(aws, render(client, photo, "w=100"))
    assert image.size == (100, 100) and obj["Metadata"]["version"] == new_record.version


def test_a_render_finished_after_a_replacement_is_not_kept(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    real = transform.render

    def render_then_replace(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        record = storage.get_record(photo, settings)
        assert record is not None
        storage.put_record(replace(record, version="0123456789", at=(record.at or 0) + 10), settings)
        return out

    monkeypatch.setattr(transform, "render", render_then_replace)
    response = render(client, photo, "w=120")
    assert response.status_code == 409 and error_of(response)["code"] == "image_pending"
    assert aws.list_objects_v2(Bucket=IMAGES_BUCKET, Prefix=f"{photo}/x/").get("KeyCount") == 0


def test_a_render_finished_after_a_deletion_is_not_kept(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import assert_invariants

    real = transform.render

    def render_then_delete(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        assert storage.delete_image(photo, get_settings())
        return out

    monkeypatch.setattr(transform, "render", render_then_delete)
    response = render(client, photo, "w=120")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert_invariants(aws, deleted=[photo])


# --- what a render does -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("image/avif,image/webp,*/*", "AVIF"),
        ("image/webp,*/*", "WEBP"),
        ("*/*", "JPEG"),
        ("image/avif;q=0,image/webp", "WEBP"),
    ],
)
def test_format_auto_follows_accept_and_says_vary(
    client: Any, aws: Any, photo: str, accept: str, expected: str
) -> None:
    response = render(client, photo, "w=200&format=auto", Accept=accept)
    image, _ = fetch(aws, response)
    assert image.format == expected
    assert "Accept" in [v.strip() for v in response.headers["Vary"].split(",")]


def test_auto_keeps_a_transparent_image_transparent(client: Any, aws: Any) -> None:
    image_id = process(client, aws, png_rgba(), filename="logo.png")
    image, _ = fetch(aws, render(client, image_id, "w=150&format=auto", Accept="*/*"))
    assert image.format in ("PNG", "WEBP") and image.mode in ("RGBA", "LA", "P")


def test_filters_and_fit_reach_the_pixels(client: Any, aws: Any, photo: str) -> None:
    # support.jpeg: red, with a white top-left quarter
    image, _ = fetch(aws, render(client, photo, "w=120&h=120&fit=cover&filter=negate,rotate:90&format=png"))
    assert image.size == (120, 120)
    rgb = image.convert("RGB")
    assert rgb.getpixel((110, 10))[0] < 60  # the white corner, turned to the top right, negated: black
    assert rgb.getpixel((10, 110))[1] > 150  # red negated: cyan


def test_contain_never_enlarges(client: Any, aws: Any) -> None:
    image_id = process(client, aws, jpeg(300, 200))
    image, _ = fetch(aws, render(client, image_id, "w=2000&h=2000"))
    assert image.size == (300, 200)


# --- presets and signatures -------------------------------------------------------------------


KEY = "render-signing-key-for-tests"


def signed(image_id: str, query: str, key: str = KEY) -> str:
    spec = operations.parse_query(query)
    return f"{query}&sig={operations.sign(spec, key, image_id)}"


def test_with_a_signing_key_a_signed_request_renders(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENDER_SIGNING_KEY", KEY)
    image, _ = fetch(aws, render(client, photo, signed(photo, "w=256&format=webp&filter=grayscale")))
    assert image.size == (256, 171)


@pytest.mark.parametrize(
    "query",
    [
        "w=256&format=webp",  # missing
        "w=257&format=webp&sig=" + "A" * 32,  # made up
    ],
)
def test_with_a_signing_key_unsigned_or_forged_requests_are_refused(
    client: Any, photo: str, monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    monkeypatch.setenv("RENDER_SIGNING_KEY", KEY)
    response = render(client, photo, query)
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"


def test_a_tampered_or_replayed_signature_is_refused(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENDER_SIGNING_KEY", KEY)
    good = signed(photo, "w=256&format=webp")
    assert render(client, photo, good).status_code == 302
    tampered = good.replace("w=256", "w=4000")
    assert error_of(render(client, photo, tampered))["code"] == "forbidden"
    other = process(client, aws, jpeg(400, 300))
    assert error_of(render(client, other, good))["code"] == "forbidden"  # signed for another image
    assert (
        error_of(render(client, photo, signed(photo, "w=256&format=webp", key="other")))["code"]
        == "forbidden"
    )


def test_presets_need_no_signature(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENDER_SIGNING_KEY", KEY)
    monkeypatch.setenv("RENDER_PRESETS", "banner:w=600&h=100&fit=cover&format=jpeg")
    image, _ = fetch(aws, render(client, photo, "preset=square"))
    assert image.size == (400, 400)
    image, _ = fetch(aws, render(client, photo, "preset=banner"))
    assert image.size == (600, 100) and image.format == "JPEG"
    image, obj = fetch(aws, render(client, photo, "preset=webp"))
    assert image.format == "WEBP" and obj["ContentDisposition"].startswith("attachment")
    response = render(client, photo, "preset=nope")
    assert response.status_code == 400 and "nope" in error_of(response)["message"]
    assert error_of(render(client, photo, "preset=square&w=10"))["code"] == "invalid_request"


def test_a_stage_whose_key_is_missing_from_ssm_allows_presets_only(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENDER_SIGNING_KEY_PARAMETER", "/imageshelf/local/render-key")
    assert error_of(render(client, photo, "w=300"))["code"] == "forbidden"
    assert error_of(render(client, photo, "w=300&sig=" + "A" * 32))["code"] == "forbidden"
    assert render(client, photo, "preset=thumb").status_code == 302


def test_the_signing_key_comes_from_ssm(
    client: Any, aws: Any, photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/imageshelf/local/render-key", Value=KEY, Type="SecureString"
    )
    monkeypatch.setenv("RENDER_SIGNING_KEY_PARAMETER", "/imageshelf/local/render-key")
    assert render(client, photo, signed(photo, "w=90")).status_code == 302
    assert error_of(render(client, photo, "w=90"))["code"] == "forbidden"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("width=100", "width"),
        ("w=0", "'w'"),
        ("w=4097", "'w'"),
        ("h=abc", "'h'"),
        ("w=1&w=2", "'w'"),
        ("fit=stretch", "'fit'"),
        ("fit=cover&w=100", "'h'"),
        ("gravity=up", "'gravity'"),
        ("format=gif", "'format'"),
        ("q=0", "'q'"),
        ("q=101", "'q'"),
        ("format=png&q=80", "'q'"),
        ("filter=vintage", "vintage"),
        ("filter=blur:51", "blur"),
        ("filter=blur", "blur"),
        ("filter=rotate:45", "rotate"),
        ("filter=flip:x", "flip"),
        ("filter=sepia:2", "sepia"),
        ("dl=yes", "'dl'"),
    ],
)
def test_bad_parameters_are_named(client: Any, photo: str, query: str, named: str) -> None:
    response = render(client, photo, query)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and named in error["message"]


def test_unknown_and_malformed_ids_are_404(client: Any, aws: Any) -> None:
    for image_id in (storage.new_id(), "not-an-id", "x" * 300):
        for path in (f"/images/{image_id}/render?w=10", f"/images/{image_id}/info"):
            response = client.http.get(path)
            assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_pending_and_failed_images_have_stable_codes(client: Any, aws: Any) -> None:
    grant = json.loads(post_upload(client, filename="a.jpg", content_type="image/jpeg").body)
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=grant["fields"]["key"], Body=jpeg())
    for path in (f"/images/{grant['id']}/render?w=10", f"/images/{grant['id']}/info"):
        response = client.http.get(path)
        assert response.status_code == 409 and error_of(response)["code"] == "image_pending"
    broken = process(client, aws, b"GIF89a but not really", filename="broken.gif")
    for path in (f"/images/{broken}/render?w=10", f"/images/{broken}/info"):
        response = client.http.get(path)
        assert response.status_code == 409
        error = error_of(response)
        assert error["code"] == "image_failed" and "corrupt_image" in error["message"]


def test_a_file_over_the_limits_is_refused_on_render_too(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_id = process(client, aws, jpeg(1000, 1000))
    monkeypatch.setenv("MAX_PIXELS", "500000")  # lowered after the upload: a render checks again
    response = render(client, image_id, "w=100")
    assert response.status_code == 422 and error_of(response)["code"] == "too_many_pixels"


def test_with_originals_deleted_renders_come_from_the_largest_rendition(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELETE_ORIGINALS", "true")
    image_id = process(client, aws, jpeg(2400, 1600))
    assert aws.list_objects_v2(Bucket=UPLOAD_BUCKET, Prefix=f"uploads/{image_id}").get("KeyCount") == 0
    image, _ = fetch(aws, render(client, image_id, "w=4000&format=webp"))
    assert image.size == (1600, 1067)  # the large rendition's size: nothing larger is left


# --- details -----------------------------------------------------------------------------------


def test_info_answers_from_processing_without_reading_the_original(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Imageshelf", "Test Camera", 6
    image_id = process(client, aws, jpeg(1200, 800, exif=exif.tobytes()))
    counter = Counter(monkeypatch)
    response = client.http.get(f"/images/{image_id}/info")
    assert response.status_code == 200
    info = json.loads(response.body)
    assert counter.decodes == 0 and counter.s3 == ["ListObjectsV2", "GetObject"]
    assert info["id"] == image_id and info["filename"] == "photo.jpg"
    assert (info["format"], info["width"], info["height"], info["orientation"]) == ("JPEG", 800, 1200, 6)
    assert info["camera"]["make"] == "Imageshelf" and info["camera"]["model"] == "Test Camera"
    assert info["dominant_color"].startswith("#") and info["has_location"] is False
    assert set(renders.DETAIL_FIELDS) <= set(info)


def test_info_of_an_image_processed_before_details_has_the_basics_and_reprocess_fills_it(
    client: Any, aws: Any, photo: str
) -> None:
    from chalicelib import processing

    settings = get_settings()
    record = storage.get_record(photo, settings)
    assert record is not None and record.identified
    objects = storage.image_objects(photo, settings)
    source_key = storage.read_record_body(record, settings)["source_key"]
    old = replace(record, identified=None, details=None, renditions=(), source_key=source_key)
    storage.put_record(old, settings)
    storage.delete_keys(IMAGES_BUCKET, [k for k, p in storage.parse_image_keys(photo, objects)
                                        if isinstance(p, storage.Record)])  # fmt: skip
    info = json.loads(client.http.get(f"/images/{photo}/info").body)
    assert (info["width"], info["height"], info["format"], info["camera"]) == (1200, 800, "JPEG", None)
    assert processing.needs_reprocessing(storage.get_record(photo, settings), settings)  # type: ignore[arg-type]
    assert processing.reprocess_image(photo, settings).outcome == "ready"
    assert json.loads(client.http.get(f"/images/{photo}/info").body)["dominant_color"]


# --- the sample ----------------------------------------------------------------------------------


def test_the_sample_renders_and_identifies_without_an_upload(client: Any, aws: Any) -> None:
    response = client.http.get("/sample/render?w=320&format=webp&filter=sepia")
    image, _ = fetch(aws, response)
    assert image.format == "WEBP" and image.width == 320
    assert key_of(response.headers["Location"]).startswith("~sample/x/")
    info = json.loads(client.http.get("/sample/info").body)
    assert info["id"] == "sample" and info["width"] > 320 and info["format"] == "JPEG"
    assert formats.BY_NAME[info["format"]].upload


def test_sample_renders_are_not_listed_as_images(client: Any, aws: Any) -> None:
    assert client.http.get("/sample/render?w=64").status_code == 302
    assert json.loads(client.http.get("/images").body)["images"] == []


# --- the operations Lambda function -----------------------------------------------------------------


def invoke(client: Any, event: Any) -> dict[str, Any]:
    result = client.lambda_.invoke("operations", event)
    return json.loads(json.dumps(result.payload))  # what crosses the wire is JSON


def test_every_operation_through_lambda_invoke(client: Any, aws: Any, photo: str) -> None:
    assert invoke(client, {"operation": "ping"}) == {"message": "pong"}
    assert invoke(client, {"operation": "getDimensions", "id": photo}) == {
        "id": photo, "width": 1200, "height": 800, "format": "JPEG", "frames": 1,
    }  # fmt: skip
    identified = invoke(client, {"operation": "identify", "id": photo})
    assert identified["dominant_color"] and identified["mode"] == "RGB"
    for event, size, fmt in (
        ({"operation": "resize", "id": photo, "w": 600}, (600, 400), "JPEG"),
        (
            {"operation": "resize", "id": photo, "w": 300, "h": 300, "fit": "fill", "format": "png"},
            (300, 300),
            "PNG",
        ),
        ({"operation": "thumbnail", "id": photo}, (400, 400), "JPEG"),
        ({"operation": "thumbnail", "id": photo, "w": 128, "h": 64, "format": "webp"}, (128, 64), "WEBP"),
        ({"operation": "convert", "id": photo, "format": "avif"}, (1200, 800), "AVIF"),
        ({"operation": "resize", "id": "sample", "w": 100, "filter": ["grayscale", "flip:h"]}, None, "JPEG"),
    ):
        answer = invoke(client, event)
        assert set(answer) >= {"url", "content_type", "width", "height", "bytes"}, answer
        image = Image.open(
            io.BytesIO(aws.get_object(Bucket=IMAGES_BUCKET, Key=key_of(answer["url"]))["Body"].read())
        )
        assert image.format == fmt and (size is None or image.size == size)
        assert (answer["width"], answer["height"]) == image.size
        assert answer["content_type"] == Image.MIME[fmt]
    sample = invoke(client, {"operation": "getSample"})
    assert sample["id"] == "sample" and sample["url"] and sample["width"]


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"operation": "explode"}, "invalid_request"),
        ([1, 2], "invalid_request"),
        ({"operation": "resize"}, "invalid_request"),
        ({"operation": "resize", "id": "sample", "w": "huge"}, "invalid_request"),
        ({"operation": "resize", "id": "sample", "w": True}, "invalid_request"),
        ({"operation": "convert", "id": "sample"}, "invalid_request"),
        ({"operation": "identify", "id": "0" * 20}, "not_found"),
    ],
)
def test_operation_errors_follow_the_contract(client: Any, aws: Any, event: Any, code: str) -> None:
    answer = invoke(client, event)
    assert answer["error"]["code"] == code and answer["error"]["message"]
    assert answer["status"] in (400, 404)


def test_listing_and_presigning_never_load_pillow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from chalice.test import Client\n"
        "from moto import mock_aws\n"
        "import boto3\n"
        "with mock_aws():\n"
        "    from tools.provision import provision\n"
        "    provision(boto3.client('s3', region_name='us-east-1'), 'imageshelf-local-uploads', "
        "'imageshelf-local-images', [])\n"
        "    from app import app\n"
        "    with Client(app, stage_name='local') as c:\n"
        "        assert c.http.get('/images').status_code == 200\n"
        "        assert c.http.get('/images/0000000000000000000z').status_code == 404\n"
        "        assert c.http.get('/images/0000000000000000000z/info').status_code == 404\n"
        "        assert c.http.get('/images/0000000000000000000z/render?w=5').status_code == 404\n"
        "        r = c.http.post('/uploads', headers={'Content-Type': 'application/json'}, "
        "body=json.dumps({'filename': 'a.jpg', 'content_type': 'image/jpeg'}))\n"
        "        assert r.status_code == 201, r.body\n"
        "print(sorted(m for m in sys.modules if m == 'PIL' or m.startswith('PIL.')))\n"
    )
    env = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": "",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
