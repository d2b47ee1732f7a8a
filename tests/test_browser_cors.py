"""CORS and the upload token in real Chromium (Debian's, through Playwright, as tests/test_browser.py).

A stack of its own, configured as a deployment that lets one other origin use the API and closes
uploads with a token (``ALLOWED_ORIGINS``, ``UPLOAD_TOKEN``):

- a page served from that origin (``tests/cors_page/``, by a tiny ``http.server``) lists images,
  gets a presigned upload (sending the token: a preflighted request), uploads to S3 directly and
  sees the image processed;
- the same page from an origin not in the list (``localhost`` instead of ``127.0.0.1``) is refused
  by the browser: its fetches reject;
- the gallery asks for the upload token, reports a refused one, and uploads with the right one.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support import Stack, jpeg
from tests.test_browser import card, wait_ready
from tools.stack import free_port

pytestmark = pytest.mark.browser

PAGE = Path(__file__).resolve().parent / "cors_page"
UPLOAD_TOKEN = "cors-test-upload-token"


@pytest.fixture(scope="module")
def page_server() -> Iterator[int]:
    """``tests/cors_page/`` over HTTP on a free port: reached as 127.0.0.1 (listed) or localhost (not)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGE))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def closed_stack(page_server: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(data_dir=tmp_path_factory.mktemp("cors-stack") / "data")
    gallery = f"http://127.0.0.1:{stack.port}"
    stack.env = {
        "ALLOWED_ORIGINS": f"{gallery},http://localhost:{stack.port},http://127.0.0.1:{page_server}",
        "UPLOAD_TOKEN": UPLOAD_TOKEN,
    }
    stack.start()
    yield stack
    stack.stop()


def open_at(browser: Any, url: str) -> Any:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(url)
    return page


def test_a_page_on_a_listed_origin_lists_presigns_and_uploads(
    browser: Any, closed_stack: Stack, page_server: int
) -> None:
    page = open_at(browser, f"http://127.0.0.1:{page_server}/index.html")
    try:
        api = closed_stack.url
        listed = page.evaluate("(api) => shelf.attempt(() => shelf.list(api))", api)
        assert listed == {"status": 200, "images": listed["images"]}, listed
        result = page.evaluate(
            "([api, token]) => shelf.attempt(() => shelf.upload(api, token))", [api, UPLOAD_TOKEN]
        )
        assert isinstance(result, dict), result
        assert result["grant"] == 201 and result["location"] == f"/images/{result['id']}", result
        assert result["sent"] in (200, 201, 204), result
        assert result["status"] == "ready" and result["size"] == [96, 64], result
        # Without the token the answer is a 401 the page can read (CORS on errors too).
        refused = page.evaluate("(api) => shelf.attempt(() => shelf.upload(api, ''))", api)
        assert refused["grant"] == 401 and refused["error"]["code"] == "unauthorized", refused
    finally:
        page.context.close()


def test_a_page_on_another_origin_is_refused_by_the_browser(
    browser: Any, closed_stack: Stack, page_server: int
) -> None:
    page = open_at(browser, f"http://localhost:{page_server}/index.html")  # not in ALLOWED_ORIGINS
    try:
        api = closed_stack.url
        assert page.evaluate("(api) => shelf.attempt(() => shelf.list(api))", api) == "refused: TypeError"
        uploaded = page.evaluate(
            "([api, token]) => shelf.attempt(() => shelf.upload(api, token))", [api, UPLOAD_TOKEN]
        )
        assert uploaded == "refused: TypeError"
    finally:
        page.context.close()


def test_the_gallery_asks_for_the_upload_token(browser: Any, closed_stack: Stack, tmp_path: Path) -> None:
    page = open_at(browser, closed_stack.url + "/")
    try:
        photo = tmp_path / "needs-a-token.jpg"
        photo.write_bytes(jpeg(320, 240))
        page.set_input_files("#file-input", [str(photo)])
        dialog = page.get_by_role("dialog", name="Upload token")
        expect(dialog).to_be_visible()
        dialog.get_by_role("textbox", name="Upload token").fill("wrong-token")
        dialog.get_by_role("button", name="Use token").click()
        refused = card(page, photo.name)
        expect(refused).to_have_attribute("data-status", "refused")
        expect(refused.locator(".tile-reason")).to_have_text(
            "That upload token was refused, so the photo was not uploaded."
        )
        assert page.evaluate("sessionStorage.getItem('imageshelf.uploadToken')") is None  # forgotten

        refused.get_by_role("button", name="Retry").click()  # asks again
        expect(dialog).to_be_visible()
        dialog.get_by_role("textbox", name="Upload token").fill(UPLOAD_TOKEN)
        dialog.get_by_role("button", name="Use token").click()
        wait_ready(page, photo.name, timeout=30_000)

        # Kept for the tab: the next photo goes without a question.
        page.reload()
        second = tmp_path / "second-with-the-token.jpg"
        second.write_bytes(jpeg(200, 150))
        page.set_input_files("#file-input", [str(second)])
        wait_ready(page, second.name, timeout=30_000)
        expect(dialog).to_be_hidden()
    finally:
        page.context.close()
