"""imageshelf_client: retries, errors and the upload protocol against a mocked HTTP layer,
then every method end to end against the local stack."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from imageshelf_client import Client, Image, ImageshelfError, Page, sniff_content_type
from tests.support import Stack, jpeg, png_rgba

API = "http://api.test"
ID = "0123456789abcdefghjk"
ID2 = "0123456789abcdefghjm"


def image_json(image_id: str = ID, status: str = "ready", **extra: Any) -> dict[str, Any]:
    return {
        "id": image_id,
        "status": status,
        "created_at": "2026-11-23T12:00:00.000Z",
        "original": {
            "filename": "cat.jpg",
            "content_type": "image/jpeg",
            "bytes": 10,
            "width": 4,
            "height": 3,
            "format": "JPEG",
        },
        "renditions": [
            {
                "name": "thumb",
                "url": "http://s3.test/t.jpg",
                "width": 4,
                "height": 3,
                "content_type": "image/jpeg",
                "bytes": 5,
            }
        ]
        if status == "ready"
        else [],
        **extra,
    }


def error_json(code: str, message: str = "Something is wrong; do this.") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@pytest.fixture
def api() -> Any:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def shelf() -> Client:
    return Client(API, token="tok", backoff=0, retries=2)


# --- unit: errors and retries ------------------------------------------------------------------


def test_api_errors_carry_the_code_status_and_message(api: Any, shelf: Client) -> None:
    api.get(f"{API}/images/{ID}", status=404, json=error_json("not_found", f"No image has the id '{ID}'."))
    with pytest.raises(ImageshelfError) as raised:
        shelf.get(ID)
    assert (raised.value.code, raised.value.status) == ("not_found", 404)
    assert str(raised.value) == f"No image has the id '{ID}'. (not_found)"
    assert len(api.calls) == 1  # a 4xx is never retried


def test_idempotent_calls_are_retried_on_5xx_and_connection_errors(api: Any, shelf: Client) -> None:
    url = f"{API}/images/{ID}"
    api.get(url, body=requests.ConnectionError("refused"))
    api.get(url, status=503, json=error_json("internal_error"))
    api.get(url, json=image_json())
    image = shelf.get(ID)
    assert image.ready and image.rendition("thumb").width == 4
    assert len(api.calls) == 3


def test_retries_give_up_with_a_connection_error_that_says_what_to_check(api: Any, shelf: Client) -> None:
    api.get(f"{API}/images", body=requests.ConnectionError("refused"))
    with pytest.raises(ImageshelfError) as raised:
        shelf.list()
    assert raised.value.code == "connection_error" and raised.value.status is None
    assert "IMAGESHELF_URL" in raised.value.message
    assert len(api.calls) == 3  # the first try and two retries


def test_a_persistent_5xx_is_raised_with_its_code(api: Any, shelf: Client) -> None:
    api.get(f"{API}/images/{ID}", status=500, json=error_json("internal_error"))
    with pytest.raises(ImageshelfError) as raised:
        shelf.get(ID)
    assert (raised.value.code, raised.value.status) == ("internal_error", 500)
    assert len(api.calls) == 3


def test_an_answer_without_the_error_shape_is_http_error(api: Any, shelf: Client) -> None:
    api.get(f"{API}/images/{ID}", status=403, json={"message": "Missing Authentication Token"})
    with pytest.raises(ImageshelfError) as raised:
        shelf.get(ID)
    assert raised.value.code == "http_error" and "Missing Authentication Token" in raised.value.message


def test_delete_sends_the_token_and_a_404_after_a_retry_means_done(api: Any, shelf: Client) -> None:
    url = f"{API}/images/{ID}"
    api.delete(url, body=requests.ConnectionError("reset"))  # the delete may have happened
    api.delete(url, status=404, json=error_json("not_found"))
    shelf.delete(ID)
    assert api.calls[0].request.headers["Authorization"] == "Bearer tok"


def test_delete_of_an_unknown_id_is_not_found(api: Any, shelf: Client) -> None:
    api.delete(f"{API}/images/{ID}", status=404, json=error_json("not_found"))
    with pytest.raises(ImageshelfError, match="not_found"):
        shelf.delete(ID)


def test_ids_are_quoted_into_the_path(api: Any, shelf: Client) -> None:
    api.get(f"{API}/images/a%2Fb", status=404, json=error_json("not_found"))
    with pytest.raises(ImageshelfError):
        shelf.get("a/b")


def test_pages_follow_next_cursor(api: Any, shelf: Client) -> None:
    api.get(
        f"{API}/images",
        json={"images": [image_json(ID2)], "next_cursor": ID2},
        match=[responses.matchers.query_param_matcher({"limit": "1"})],
    )
    api.get(
        f"{API}/images",
        json={"images": [image_json(ID)], "next_cursor": None},
        match=[responses.matchers.query_param_matcher({"limit": "1", "cursor": ID2})],
    )
    pages = list(shelf.pages(limit=1))
    assert [len(p) for p in pages] == [1, 1] and isinstance(pages[0], Page)
    assert [i.id for i in shelf.iter_images(limit=1)] == [ID2, ID]


def test_wait_polls_until_processed_and_times_out_with_a_code(api: Any, shelf: Client) -> None:
    url = f"{API}/images/{ID}"
    api.get(url, json=image_json(status="pending"))
    api.get(url, json=image_json(status="failed", error={"code": "not_an_image", "message": "Not an image."}))
    image = shelf.wait(ID, interval=0)
    assert image.failed and image.error.code == "not_an_image"
    api.replace(responses.GET, url, json=image_json(status="pending"))
    with pytest.raises(ImageshelfError) as raised:
        shelf.wait(ID, timeout=0.05, interval=0.01)
    assert raised.value.code == "wait_timeout"


# --- unit: the upload protocol -----------------------------------------------------------------


def grant(method: str) -> dict[str, Any]:
    common = {
        "id": ID,
        "expires_at": "2026-11-23T12:05:00Z",
        "max_bytes": 20 * 1024 * 1024,
        "status_url": f"/images/{ID}",
    }
    if method == "PUT":
        return {
            **common,
            "method": "PUT",
            "url": "http://s3.test/up/uploads/x?sig=1",
            "headers": {
                "Content-Type": "image/png",
                "Content-Length": "4",
                "x-amz-meta-filename": "a%20b.png",
            },
        }
    return {
        **common,
        "method": "POST",
        "url": "http://s3.test/up",
        "fields": {
            "key": f"uploads/{ID}",
            "Content-Type": "image/png",
            "policy": "p",
            "x-amz-signature": "s",
        },
    }


def body_of(request: Any) -> bytes:
    body = request.body
    return body.read() if hasattr(body, "read") else body


def test_put_upload_sends_the_grants_headers_exactly(api: Any, shelf: Client) -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"x" * 20
    put = grant("PUT")
    put["headers"]["Content-Length"] = str(len(data))
    sent: dict[str, Any] = {}

    def s3(request: Any) -> tuple[int, dict[str, str], str]:
        sent.update(headers=dict(request.headers), body=body_of(request))
        return 200, {}, ""

    api.post(f"{API}/uploads", status=201, json=put)
    api.add_callback(responses.PUT, put["url"], callback=s3)
    api.get(f"{API}/images/{ID}", json=image_json(status="pending"))
    image = shelf.upload(data, "a b.png")
    assert image.pending
    asked = json.loads(api.calls[0].request.body)
    assert asked == {"filename": "a b.png", "content_type": "image/png", "size": len(data), "method": "put"}
    for name, value in put["headers"].items():
        assert sent["headers"][name] == value
    assert sent["body"] == data


def test_post_upload_sends_every_field_first_and_the_file_last(api: Any, shelf: Client) -> None:
    post = grant("POST")
    sent: dict[str, Any] = {}

    def s3(request: Any) -> tuple[int, dict[str, str], str]:
        sent.update(type=request.headers["Content-Type"], body=body_of(request))
        return 204, {}, ""

    api.post(f"{API}/uploads", status=201, json=post)
    api.add_callback(responses.POST, post["url"], callback=s3)
    api.get(f"{API}/images/{ID}", json=image_json(status="pending"))
    shelf.upload(io.BytesIO(b"\x89PNG\r\n\x1a\nrest"), "cat.png", method="post")
    assert sent["type"].startswith("multipart/form-data; boundary=")
    names = re.findall(rb'; name="([^"]+)"', sent["body"])
    assert names == [*(n.encode() for n in post["fields"]), b"file"]
    assert b'filename="cat.png"' in sent["body"] and b"\x89PNG\r\n\x1a\nrest" in sent["body"]


def test_storage_refusing_the_bytes_is_upload_rejected(api: Any, shelf: Client) -> None:
    put = grant("PUT")
    api.post(f"{API}/uploads", status=201, json=put)
    api.put(
        put["url"], status=403, body="<Error><Code>SignatureDoesNotMatch</Code><Message>No.</Message></Error>"
    )
    with pytest.raises(ImageshelfError) as raised:
        shelf.upload(b"\x89PNG\r\n\x1a\n", "a.png")
    assert (raised.value.code, raised.value.status) == ("upload_rejected", 403)
    assert "SignatureDoesNotMatch" in raised.value.message
    assert len(api.calls) == 2  # a 4xx from storage is not retried


def test_an_empty_file_is_refused_before_asking(shelf: Client, tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageshelfError) as raised:
        shelf.upload(tmp_path / "empty.jpg")
    assert raised.value.code == "empty_file" and "empty.jpg" in raised.value.message


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (jpeg(8, 8), None, "image/jpeg"),
        (png_rgba(8, 8), "x.jpg", "image/png"),
        (b"GIF89a...", None, "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", None, "image/webp"),
        (b"II*\0", None, "image/tiff"),
        (b"BM..", None, "image/bmp"),
        (b"\0\0\0\x1cftypavif", None, "image/avif"),
        (b"hello", "a.webp", "image/webp"),
        (b"hello", "notes.txt", "text/plain"),
        (b"hello", None, "application/octet-stream"),
    ],
)
def test_content_type_is_sniffed_from_the_bytes_first(data: bytes, name: str | None, expected: str) -> None:
    assert sniff_content_type(data, name) == expected


def test_the_client_is_a_separate_package() -> None:
    """A user may copy imageshelf_client/ alone: it must not import the server's code."""
    for path in (Path(__file__).parent.parent / "imageshelf_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("chalicelib", "app", "tools", "tests") for n in names), (
                    path
                )


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESHELF_URL", "https://shelf.example/api/")
    monkeypatch.setenv("IMAGESHELF_TOKEN", "t0k")
    shelf = Client()
    assert (shelf.url, shelf.token) == ("https://shelf.example/api", "t0k")
    monkeypatch.delenv("IMAGESHELF_URL")
    assert Client().url == "http://127.0.0.1:8000"


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def live(stack: Stack) -> Client:
    with Client(stack.url, token=stack.admin_token) as client:
        yield client


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["put", "post"])
def test_upload_and_wait_until_ready(live: Client, tmp_path: Path, method: str) -> None:
    path = tmp_path / "beach photo.jpg"
    path.write_bytes(jpeg(800, 600))
    sent: list[int] = []
    image = live.upload(path, wait=True, method=method, progress=sent.append)
    assert isinstance(image, Image) and image.ready, image
    assert sum(sent) == path.stat().st_size
    assert image.original.filename == "beach photo.jpg"
    assert (image.original.width, image.original.height) == (800, 600)
    thumb = image.rendition("thumb")
    assert (thumb.width, thumb.height) == (400, 300)
    assert requests.get(thumb.url, timeout=10).content[:3] == b"\xff\xd8\xff"
    # The same presigned URLs again (reused while half their life is left), so a browser or an
    # app that cached the thumbnail uses its copy.
    assert live.get(image.id) == image


@pytest.mark.e2e
def test_upload_bytes_without_waiting_is_pending_or_done(live: Client) -> None:
    image = live.upload(png_rgba(120, 80))
    assert image.status in ("pending", "ready")
    assert image.original.filename in ("", "upload.png")
    done = live.wait(image.id, timeout=20)
    assert done.ready and done.original.filename == "upload.png" and done.original.format == "PNG"


@pytest.mark.e2e
def test_a_file_that_is_not_an_image_fails_with_a_reason(live: Client) -> None:
    image = live.upload(b"<html>not a photo</html>", "page.jpg", content_type="image/jpeg", wait=True)
    assert image.failed and image.error.code == "not_an_image" and image.error.message


@pytest.mark.e2e
def test_the_apis_refusals_arrive_as_errors_with_codes(live: Client) -> None:
    with pytest.raises(ImageshelfError) as raised:
        live.upload(b"just text", "notes.txt")
    assert (raised.value.code, raised.value.status) == ("unsupported_media_type", 415)
    with pytest.raises(ImageshelfError) as raised:
        live.upload(b"\xff\xd8\xff" + bytes(20 * 1024 * 1024), "huge.jpg")
    assert (raised.value.code, raised.value.status) == ("file_too_large", 413)
    with pytest.raises(ImageshelfError) as raised:
        live.get(ID)
    assert (raised.value.code, raised.value.status) == ("not_found", 404)
    with pytest.raises(ImageshelfError) as raised:
        live.list(limit=1000)
    assert raised.value.code == "invalid_request"


@pytest.mark.e2e
def test_list_pages_and_delete(live: Client, stack: Stack) -> None:
    ids = [live.upload(jpeg(64, 48), f"p{i}.jpg", wait=True).id for i in range(3)]
    first = live.list(limit=2)
    assert [i.id for i in first] == ids[::-1][:2] and first.next_cursor == ids[1]
    everything = [i.id for i in live.iter_images(limit=2)]
    assert everything[:3] == ids[::-1] and len(everything) == len(set(everything))
    with pytest.raises(ImageshelfError) as raised:
        Client(stack.url, token="").delete(ids[0])
    assert raised.value.code == "unauthorized"
    with pytest.raises(ImageshelfError) as raised:
        Client(stack.url, token="wrong").delete(ids[0])
    assert raised.value.code == "forbidden"
    live.delete(ids[0])
    with pytest.raises(ImageshelfError, match="not_found"):
        live.get(ids[0])


def test_fields_a_newer_server_adds_are_ignored() -> None:
    from imageshelf_client.models import Image

    data = {
        "id": "ybqvqv0176g13t2gkef2",
        "status": "ready",
        "created_at": "2026-11-23T13:04:59.864Z",
        "original": {"filename": "a.gif", "content_type": "image/gif", "bytes": 9, "width": 2, "height": 2,
                     "format": "GIF", "frames": 3, "camera": "new field"},
        "renditions": [{"name": "thumb", "url": "http://x/t.webp", "width": 2, "height": 2,
                        "content_type": "image/webp", "bytes": 5, "frames": 3, "dpr": 2}],
        "future": True,
    }  # fmt: skip
    image = Image.from_json(data)
    assert image.original.frames == 3 and image.renditions[0].frames == 3


# --- unit: renders ---------------------------------------------------------------------------------


def test_render_follows_the_redirect_to_storage(api: Any, shelf: Client) -> None:
    render = f"{API}/images/{ID}/render?w=800&format=auto"
    stored = "http://s3.test/images/x/abc?X-Amz-Signature=1"
    api.get(render, status=302, headers={"Location": stored, "Vary": "Accept"})
    api.get(stored, body=b"\0\0\0\x1cftypavif rest", content_type="image/avif")
    rendered = shelf.render(ID, width=800, format="auto", accept="image/avif,image/webp")
    assert rendered == b"\0\0\0\x1cftypavif rest" and isinstance(rendered, bytes)
    assert (rendered.content_type, rendered.extension, rendered.url) == ("image/avif", ".avif", stored)
    assert api.calls[0].request.headers["Accept"] == "image/avif,image/webp"
    assert "Authorization" not in api.calls[0].request.headers  # renders take no token


def test_a_busy_render_is_retried(api: Any, shelf: Client) -> None:
    render = f"{API}/sample/render?w=10"
    api.get(render, status=503, json=error_json("render_busy"))
    api.get(render, status=302, headers={"Location": "http://s3.test/s"})
    api.get("http://s3.test/s", body=b"\xff\xd8\xff", content_type="image/jpeg")
    assert shelf.render("sample", width=10).content_type == "image/jpeg"
    api.replace(responses.GET, render, status=503, json=error_json("render_busy"))
    with pytest.raises(ImageshelfError) as raised:
        shelf.render("sample", width=10)
    assert (raised.value.code, raised.value.status) == ("render_busy", 503)


def test_storage_refusing_a_render_is_download_failed(api: Any, shelf: Client) -> None:
    api.get(f"{API}/sample/render", status=302, headers={"Location": "http://s3.test/s"})
    api.get(
        "http://s3.test/s",
        status=403,
        body="<Error><Code>AccessDenied</Code><Message>Expired</Message></Error>",
    )
    with pytest.raises(ImageshelfError) as raised:
        shelf.render("sample")
    assert (raised.value.code, raised.value.status) == ("download_failed", 403)
    assert "AccessDenied: Expired" in raised.value.message


def test_a_render_route_that_does_not_redirect_is_invalid_response(api: Any, shelf: Client) -> None:
    api.get(f"{API}/sample/render", status=200, body="<html>a proxy page</html>")
    with pytest.raises(ImageshelfError) as raised:
        shelf.render("sample")
    assert raised.value.code == "invalid_response" and "not a redirect" in raised.value.message
