"""Every route's success and error paths, through Chalice's test client against moto."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from chalicelib import auth, storage
from tests.support import IMAGES_BUCKET, UPLOAD_BUCKET, jpeg, post_upload, process, s3_event

JSON = {"Content-Type": "application/json"}


def error_of(response: Any) -> dict[str, str]:
    body = json.loads(response.body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], "every error says what happened"
    return body["error"]


def policy_of(grant: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(grant["fields"]["policy"]))


class Clock:
    """A hand-moved clock for the caches of signed URLs and admin tokens (``_now``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ping(client: Any) -> None:
    response = client.http.get("/ping")
    assert response.status_code == 200
    assert json.loads(response.body) == {"message": "pong"}


def test_presigned_post_signs_exact_key_size_type_metadata_and_short_expiry(client: Any) -> None:
    before = datetime.now(UTC)
    response = post_upload(client, filename="holiday/../cat.jpg", content_type="image/jpeg", size=12345)
    assert response.status_code == 201
    grant = json.loads(response.body)
    assert grant["method"] == "POST"
    assert storage.is_id(grant["id"])
    assert grant["status_url"] == f"/images/{grant['id']}"
    assert response.headers["Location"] == grant["status_url"]
    assert grant["max_bytes"] == 20 * 1024 * 1024
    assert grant["url"].endswith(f"/{UPLOAD_BUCKET}") or UPLOAD_BUCKET in urlsplit(grant["url"]).netloc
    fields = grant["fields"]
    assert fields["key"] == f"uploads/{grant['id']}"
    assert fields["Content-Type"] == "image/jpeg"
    assert fields["x-amz-meta-filename"] == "cat.jpg"  # folders stripped from the name
    assert "acl" not in fields  # never public

    policy = policy_of(grant)
    conditions = policy["conditions"]
    assert {"key": f"uploads/{grant['id']}"} in conditions  # exact key, no starts-with
    assert {"bucket": UPLOAD_BUCKET} in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert {"x-amz-meta-filename": "cat.jpg"} in conditions
    assert ["content-length-range", 1, 20 * 1024 * 1024] in conditions
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert 0 < (expiration - before).total_seconds() <= 300 + 5
    expires_at = datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00"))
    assert abs((expires_at - expiration).total_seconds()) <= 2


def test_presigned_put_signs_type_length_and_filename(client: Any) -> None:
    response = post_upload(client, filename="dög näme.png", content_type="image/png", size=999, method="put")
    assert response.status_code == 201
    grant = json.loads(response.body)
    assert grant["method"] == "PUT"
    assert "fields" not in grant
    url = urlsplit(grant["url"])
    assert url.path.endswith(f"/uploads/{grant['id']}")
    query = parse_qs(url.query)
    signed = query["X-Amz-SignedHeaders"][0].split(";")
    assert {"content-type", "content-length", "x-amz-meta-filename", "host"} <= set(signed)
    assert int(query["X-Amz-Expires"][0]) <= 300
    assert grant["headers"] == {
        "Content-Type": "image/png",
        "Content-Length": "999",
        "x-amz-meta-filename": "d%C3%B6g n%C3%A4me.png",
    }


def test_upload_method_defaults_to_post_and_size_is_optional(client: Any) -> None:
    response = post_upload(client, filename="a.webp", content_type="IMAGE/WEBP")
    assert response.status_code == 201
    assert json.loads(response.body)["fields"]["Content-Type"] == "image/webp"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"filename": "a.svg", "content_type": "image/svg+xml"}, 415, "unsupported_media_type"),
        ({"filename": "a.pdf", "content_type": "application/pdf"}, 415, "unsupported_media_type"),
        (
            {"filename": "a.jpg", "content_type": "image/jpeg", "size": 20 * 1024 * 1024 + 1},
            413,
            "file_too_large",
        ),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": 0}, 422, "empty_file"),
        ({"filename": "a.jpg", "content_type": "", "size": 0, "method": "put"}, 422, "empty_file"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": -1}, 400, "invalid_request"),
        ({"filename": "a.jxl", "content_type": "image/jxl"}, 415, "unsupported_media_type"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": "12"}, 400, "invalid_request"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "method": "put"}, 400, "invalid_request"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "method": "get"}, 400, "invalid_request"),
        ({"content_type": "image/jpeg"}, 400, "invalid_request"),
        ({"filename": "a.jpg"}, 400, "invalid_request"),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "bucket": "other"}, 400, "invalid_request"),
    ],
)
def test_bad_upload_requests_get_clear_errors(client: Any, body: dict, status: int, code: str) -> None:
    response = post_upload(client, **body)
    assert response.status_code == status
    assert error_of(response)["code"] == code


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", '"text"', "{"])
def test_upload_body_must_be_a_json_object(client: Any, raw: str) -> None:
    response = client.http.post("/uploads", headers=JSON, body=raw)
    assert response.status_code == 400
    assert "JSON object" in error_of(response)["message"]


def test_a_deeply_nested_body_is_a_400_not_a_crash(client: Any) -> None:
    deep = '{"filename": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = client.http.post("/uploads", headers=JSON, body=deep)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"


@pytest.mark.parametrize("declared", ["", "application/octet-stream", "Application/Octet-Stream; x=1"])
@pytest.mark.parametrize("method", ["post", "put"])
def test_a_type_the_client_cannot_name_is_accepted_and_signed_as_octet_stream(
    client: Any, aws: Any, declared: str, method: str
) -> None:
    """A browser reports a JPEG without an extension as ""; scripts say application/octet-stream.
    The grant signs the Content-Type it tells the client to send; the bytes are judged later."""
    response = post_upload(client, filename="IMG_0001", content_type=declared, size=1234, method=method)
    assert response.status_code == 201, response.body
    grant = json.loads(response.body)
    if method == "post":
        assert grant["fields"]["Content-Type"] == "application/octet-stream"
        policy = json.loads(base64.b64decode(grant["fields"]["policy"]))
        assert {"Content-Type": "application/octet-stream"} in policy["conditions"]
    else:
        assert grant["headers"]["Content-Type"] == "application/octet-stream"
        signed = parse_qs(urlsplit(grant["url"]).query)["X-Amz-SignedHeaders"][0].split(";")
        assert "content-type" in signed


def test_an_extensionless_jpeg_sent_as_octet_stream_becomes_ready(client: Any, aws: Any) -> None:
    grant = json.loads(post_upload(client, filename="IMG_0001", content_type="").body)
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=grant["fields"]["key"],
        Body=jpeg(64, 48),
        ContentType=grant["fields"]["Content-Type"],
        Metadata={"filename": grant["fields"]["x-amz-meta-filename"]},
    )
    client.lambda_.invoke("resize", s3_event(grant["fields"]["key"]))
    image = json.loads(client.http.get(f"/images/{grant['id']}").body)
    assert image["status"] == "ready" and image["original"]["content_type"] == "image/jpeg"
    assert image["original"]["filename"] == "IMG_0001"


def test_curl_style_form_content_type_is_parsed_as_json(client: Any) -> None:
    body = json.dumps({"filename": "a.jpg", "content_type": "image/jpeg"})
    response = client.http.post(
        "/uploads", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=body
    )
    assert response.status_code == 201


def test_wrong_method_uses_the_error_contract(client: Any) -> None:
    response = client.http.put("/uploads", headers=JSON, body="{}")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_get_image_ready_with_renditions(client: Any, aws: Any) -> None:
    image_id = process(client, aws, jpeg(1200, 800), "cat.jpg")
    response = client.http.get(f"/images/{image_id}")
    assert response.status_code == 200
    image = json.loads(response.body)
    assert image["status"] == "ready"
    assert image["original"] == {
        "filename": "cat.jpg",
        "content_type": "image/jpeg",
        "bytes": len(jpeg(1200, 800)),
        "width": 1200,
        "height": 800,
        "format": "JPEG",
        "frames": 1,
    }
    names = {r["name"]: r for r in image["renditions"]}
    assert (names["thumb"]["width"], names["thumb"]["height"]) == (400, 267)
    assert (names["large"]["width"], names["large"]["height"]) == (1200, 800)  # never enlarged
    assert names["thumb"]["bytes"] > 0 and names["thumb"]["content_type"] == "image/jpeg"
    assert "X-Amz-Signature=" in names["thumb"]["url"]
    assert "error" not in image
    assert image["created_at"].endswith("Z")


def test_rendition_urls_stay_the_same_while_half_their_life_is_left(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Browsers cache by the whole URL: a new signature on every listing would defeat the
    rendition's year-long Cache-Control. Past half its life, a URL is signed afresh."""
    import requests

    image_id = process(client, aws, jpeg(900, 600))
    signed: list[str] = []
    storage.s3().meta.events.register(
        "before-sign.s3.GetObject", lambda request, **_: signed.append(urlsplit(request.url).path)
    )

    def urls() -> list[str]:
        listed = json.loads(client.http.get("/images").body)["images"][0]
        single = json.loads(client.http.get(f"/images/{image_id}").body)
        assert [r["url"] for r in single["renditions"]] == [r["url"] for r in listed["renditions"]]
        return [r["url"] for r in listed["renditions"]]

    clock = Clock()
    monkeypatch.setattr(storage._signed, "clock", clock)
    first = urls()
    stored = len([k for k in aws.list_objects_v2(Bucket=IMAGES_BUCKET)["Contents"] if "/r/" in k["Key"]])
    # one signature per stored rendition (each format of each size), shared by both routes
    assert len(first) == 2 and len(signed) == stored
    clock.now += 1799  # DOWNLOAD_URL_EXPIRES is 3600
    assert urls() == first and len(signed) == stored
    clock.now += 2
    fresh = urls()
    assert len(signed) == 2 * stored and urls() == fresh and len(signed) == 2 * stored
    for old, new in zip(first, fresh, strict=True):
        assert old.split("?")[0] == new.split("?")[0]  # the same immutable object
        assert parse_qs(urlsplit(new).query)["X-Amz-Expires"] == ["3600"]
        assert requests.get(new, timeout=10).content[:3] == b"\xff\xd8\xff"


def test_get_image_pending_when_only_the_upload_exists(client: Any, aws: Any) -> None:
    grant = json.loads(post_upload(client, filename="a.jpg", content_type="image/jpeg").body)
    assert client.http.get(f"/images/{grant['id']}").status_code == 404  # presigned, not uploaded
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=grant["fields"]["key"],
        Body=jpeg(),
        Metadata={"filename": grant["fields"]["x-amz-meta-filename"]},
    )
    response = client.http.get(f"/images/{grant['id']}")
    assert response.status_code == 200
    image = json.loads(response.body)
    assert image["status"] == "pending"
    assert (image["original"]["filename"], image["original"]["bytes"]) == ("a.jpg", len(jpeg()))


@pytest.mark.parametrize("image_id", ["nope", "0" * 19, "0" * 21, "ZZZZZZZZZZZZZZZZZZZZ", "..%2F..%2Fetc"])
def test_get_image_with_a_malformed_id_is_404_without_touching_s3(client: Any, image_id: str) -> None:
    response = client.http.get(f"/images/{image_id}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_get_unknown_image_is_404(client: Any) -> None:
    response = client.http.get(f"/images/{storage.new_id()}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_list_images_newest_first_with_cursor(client: Any, aws: Any) -> None:
    ids = [process(client, aws, jpeg(64, 48), f"p{i}.jpg") for i in range(5)]
    first = json.loads(client.http.get("/images?limit=2").body)
    assert [i["id"] for i in first["images"]] == ids[::-1][:2]
    assert first["next_cursor"] == ids[-2]
    second = json.loads(client.http.get(f"/images?limit=2&cursor={first['next_cursor']}").body)
    third = json.loads(client.http.get(f"/images?limit=2&cursor={second['next_cursor']}").body)
    assert [i["id"] for i in second["images"] + third["images"]] == ids[::-1][2:]
    assert third["next_cursor"] is None
    everything = json.loads(client.http.get("/images").body)
    assert [i["original"]["filename"] for i in everything["images"]] == [
        f"p{i}.jpg" for i in range(4, -1, -1)
    ]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=abc", "limit=-1", "cursor=bad", "cursor=..%2F"]
)
def test_list_images_rejects_bad_paging(client: Any, query: str) -> None:
    response = client.http.get(f"/images?{query}")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_request"


def test_empty_listing(client: Any) -> None:
    assert json.loads(client.http.get("/images").body) == {"images": [], "next_cursor": None}


def test_failed_image_shows_code_and_reason_and_keeps_the_original(client: Any, aws: Any) -> None:
    image_id = process(client, aws, b"<html>definitely not a photo</html>", "page.jpg")
    image = json.loads(client.http.get(f"/images/{image_id}").body)
    assert image["status"] == "failed"
    assert image["error"]["code"] == "not_an_image"
    assert image["renditions"] == []
    assert aws.head_object(Bucket=UPLOAD_BUCKET, Key=f"uploads/{image_id}")["ContentLength"] > 0


def test_delete_is_disabled_without_a_configured_token(client: Any, aws: Any) -> None:
    image_id = process(client, aws, jpeg(64, 48))
    response = client.http.delete(f"/images/{image_id}", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "ADMIN_TOKEN" in error_of(response)["message"]
    assert client.http.get(f"/images/{image_id}").status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 403, "forbidden"),
        ({"Authorization": "Bearer s3cret-"}, 403, "forbidden"),
    ],
)
def test_delete_needs_the_right_bearer_token(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch, headers: dict, status: int, code: str
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    image_id = process(client, aws, jpeg(64, 48))
    response = client.http.delete(f"/images/{image_id}", headers=headers)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert client.http.get(f"/images/{image_id}").status_code == 200


def test_delete_removes_original_renditions_and_records(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    keep = process(client, aws, jpeg(64, 48))
    image_id = process(client, aws, jpeg(64, 48))
    bearer = {"Authorization": "Bearer s3cret"}
    response = client.http.delete(f"/images/{image_id}", headers=bearer)
    assert response.status_code == 204
    assert client.http.get(f"/images/{image_id}").status_code == 404
    left = aws.list_objects_v2(Bucket="imageshelf-local-images").get("Contents", [])
    # what is left of the deleted image is its tombstone, which keeps it from coming back, and its
    # place in the reconciler's index, which retires the tombstone once no upload URL can write it
    gone = {f"{image_id}/deleted", f"~todo/{image_id}"}
    assert left and all(o["Key"].startswith(keep) or o["Key"] in gone for o in left)
    assert [o["Key"] for o in aws.list_objects_v2(Bucket=UPLOAD_BUCKET)["Contents"]] == [f"uploads/{keep}"]
    assert image_id not in [i["id"] for i in json.loads(client.http.get("/images").body)["images"]]
    again = client.http.delete(f"/images/{image_id}", headers=bearer)
    assert again.status_code == 404


PARAMETER = "/imageshelf/test/admin-token"


def delete_with(client: Any, image_id: str, token: str) -> Any:
    return client.http.delete(f"/images/{image_id}", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def ssm_token(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app reading its admin token from SSM, as the AWS stages do; yields the SSM client, and
    counts the app's reads of the parameter in ``ssm.reads`` and moves ``ssm.clock``."""
    import boto3

    monkeypatch.setenv("ADMIN_TOKEN_PARAMETER", PARAMETER)
    clock = Clock()
    monkeypatch.setattr(auth._cache, "clock", clock)
    ssm = boto3.client("ssm", region_name="us-east-1")
    reads: list[str] = []
    real_read = auth._read_parameter

    def counted(name: str) -> str:
        reads.append(name)
        return real_read(name)

    monkeypatch.setattr(auth, "_read_parameter", counted)
    ssm.reads, ssm.clock = reads, clock
    return ssm


def test_delete_reads_the_admin_token_from_ssm(
    client: Any, ssm_token: Any, aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """ADMIN_TOKEN_PARAMETER names a SecureString in Parameter Store."""
    image_id = process(client, aws, jpeg(64, 48))
    assert 'id="admin-button"' in client.http.get("/").body.decode()  # the gallery offers deletion

    missing = delete_with(client, image_id, "anything")
    assert missing.status_code == 403
    message = error_of(missing)["message"]
    assert "make admin-token" in message and PARAMETER not in message  # the path is for the logs
    assert PARAMETER in caplog.text

    ssm_token.put_parameter(Name=PARAMETER, Value="tok-1\n", Type="SecureString")  # as `file://` leaves it
    ssm_token.clock.now += auth.MISSING_TTL + 1
    assert error_of(delete_with(client, image_id, "tok-2"))["code"] == "forbidden"
    assert client.http.delete(f"/images/{image_id}").status_code == 401
    assert delete_with(client, image_id, "tok-1").status_code == 204
    assert client.http.get(f"/images/{image_id}").status_code == 404


def test_ssm_is_read_once_per_ttl_however_many_deletes_try(client: Any, ssm_token: Any, aws: Any) -> None:
    """Unauthenticated callers cannot turn deletes into SSM traffic, token stored or not."""
    image_id = process(client, aws, jpeg(64, 48))
    for _ in range(20):
        assert delete_with(client, image_id, "guess").status_code == 403
    assert len(ssm_token.reads) == 1  # the miss is cached too
    ssm_token.put_parameter(Name=PARAMETER, Value="real-token", Type="SecureString")
    ssm_token.clock.now += auth.MISSING_TTL + 1
    for _ in range(20):
        assert delete_with(client, image_id, "guess").status_code == 403
    assert len(ssm_token.reads) == 2
    assert delete_with(client, image_id, "real-token").status_code == 204


def test_a_rotated_ssm_token_takes_over_within_minutes(client: Any, ssm_token: Any, aws: Any) -> None:
    ssm_token.put_parameter(Name=PARAMETER, Value="old-token", Type="SecureString")
    first, second, third = (process(client, aws, jpeg(64, 48)) for _ in range(3))
    assert delete_with(client, first, "old-token").status_code == 204

    ssm_token.put_parameter(Name=PARAMETER, Value="new-token", Type="SecureString", Overwrite=True)
    ssm_token.clock.now += auth.TOKEN_TTL - 1
    assert delete_with(client, second, "old-token").status_code == 204  # cached a little longer
    ssm_token.clock.now += 2
    assert delete_with(client, third, "old-token").status_code == 403
    assert delete_with(client, third, "new-token").status_code == 204


def test_when_ssm_fails_the_last_token_read_still_works(
    client: Any, ssm_token: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    ssm_token.put_parameter(Name=PARAMETER, Value="the-token", Type="SecureString")
    first, second = (process(client, aws, jpeg(64, 48)) for _ in range(2))
    assert delete_with(client, first, "the-token").status_code == 204

    def throttled(name: str) -> str:
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "GetParameter"
        )

    monkeypatch.setattr(auth, "_read_parameter", throttled)
    ssm_token.clock.now += auth.TOKEN_TTL + 1
    assert delete_with(client, second, "wrong").status_code == 403
    assert delete_with(client, second, "the-token").status_code == 204
    auth.reset_cache()  # nothing read before: SSM's failure is the answer (a 500, logged)
    response = delete_with(client, second, "the-token")
    assert response.status_code == 500 and error_of(response)["code"] == "internal_error"


def test_gallery_page_is_html_with_security_headers(client: Any, aws: Any) -> None:
    process(client, aws, jpeg(64, 48), "<img src=x onerror=alert(1)>.jpg")
    response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Referrer-Policy" in response.headers
    body = response.body.decode()
    assert "<img src=x onerror=alert(1)>" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_json_answers_carry_nosniff(client: Any) -> None:
    assert client.http.get("/ping").headers["X-Content-Type-Options"] == "nosniff"


def test_an_unexpected_crash_is_a_json_500_without_a_traceback(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib import images

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals /var/task/app.py line 12")

    monkeypatch.setattr(images, "page", boom)
    response = client.http.get("/images")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()


@pytest.mark.parametrize(
    ("path", "location"), [("/api", "/api/"), ("/api/", None), ("/", None), (None, None)]
)
def test_the_gallery_root_gets_its_trailing_slash_under_a_stage_prefix(
    path: str | None, location: str | None
) -> None:
    from types import SimpleNamespace

    from chalicelib import http

    redirect = http.slash_redirect(SimpleNamespace(context={"path": path} if path else {}))
    if location is None:
        assert redirect is None
    else:
        assert redirect.status_code == 301 and redirect.headers["Location"] == location


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/uploads", "/images/{id}"),  # chalice local, or API Gateway without a stage in the URL
        ("/api/uploads", "/api/images/{id}"),  # https://{api}.execute-api.{region}.amazonaws.com/api
        ("/shelf/v1/uploads", "/shelf/v1/images/{id}"),  # a custom domain's base path
        ("//evil.example/uploads", "/images/{id}"),  # never a Location on another host
        ("/a b/uploads", "/images/{id}"),
    ],
)
def test_location_resolves_under_api_gateways_base_path(
    aws: Any, monkeypatch: pytest.MonkeyPatch, path: str, location: str
) -> None:
    """Through the Lambda entry point with an API Gateway proxy event, as AWS calls it."""
    from chalice.local import LambdaContext

    from app import app

    config = json.loads((Path(__file__).parents[1] / ".chalice" / "config.json").read_text())
    for name, value in {
        **config.get("environment_variables", {}),
        **config["stages"]["local"].get("environment_variables", {}),
    }.items():
        monkeypatch.setenv(name, value)
    body = {"filename": "cat.jpg", "content_type": "image/jpeg", "size": 1234}
    event = {
        "resource": "/uploads",
        "path": "/uploads",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": "/uploads", "httpMethod": "POST", "path": path, "stage": "api"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }
    response = app(event, LambdaContext("api_handler", memory_size=512))
    assert response["statusCode"] == 201, response
    grant = json.loads(response["body"])
    assert response["headers"]["Location"] == location.format(id=grant["id"])
    spec = json.loads((Path(__file__).parents[1] / "chalicelib" / "openapi.json").read_text())
    header = spec["paths"]["/uploads"]["post"]["responses"]["201"]["headers"]["Location"]
    assert re.fullmatch(header["schema"]["pattern"], response["headers"]["Location"])
    assert grant["status_url"] == f"/images/{grant['id']}"  # relative to the API's base URL


def test_an_absurd_size_is_413_not_a_crash(client: Any) -> None:
    response = post_upload(client, filename="a.jpg", content_type="image/jpeg", size=10**400)
    assert response.status_code == 413
    assert error_of(response)["code"] == "file_too_large"


@pytest.mark.parametrize("filename", ["写真" * 121 + ".jpeg", "😀" * 250 + ".png", "a" * 300])
def test_long_unicode_filenames_fit_s3_metadata_and_keep_their_extension(client: Any, filename: str) -> None:
    grant = json.loads(post_upload(client, filename=filename, content_type="image/jpeg").body)
    encoded = grant["fields"]["x-amz-meta-filename"]
    assert len(encoded) <= 1024  # S3 allows 2 KB of user metadata per object
    decoded = unquote(encoded)
    assert decoded.endswith(filename.rsplit(".", 1)[-1][-10:]) and filename.startswith(decoded[:2])
