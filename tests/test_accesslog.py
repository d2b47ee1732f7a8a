"""tools/accesslog.py: Chalice's local server, its access log kept to what a developer wants to see."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chalice import Chalice, Response
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer

from tests.support import free_port
from tools import accesslog

ID = "0" * 20


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def shown(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


def tiny_app() -> Chalice:
    app = Chalice(app_name="accesslog-test")

    @app.route("/")
    def page() -> Response:
        return Response(body="<!doctype html>", headers={"Content-Type": "text/html"})

    @app.route("/images")
    def listing() -> dict[str, Any]:
        return {"images": [], "next_cursor": None}

    @app.route("/images/{image_id}")
    def one(image_id: str) -> Any:
        if image_id != ID:
            return Response(body={"error": {"code": "not_found", "message": "no"}}, status_code=404)
        return {"id": image_id, "status": "pending"}

    @app.route("/images/{image_id}", methods=["DELETE"])
    def delete(image_id: str) -> Response:
        return Response(body="", status_code=204)

    @app.route("/uploads", methods=["POST"])
    def grant() -> Response:
        return Response(body={"id": ID}, status_code=201)

    @app.route("/static/{name}")
    def asset(name: str) -> Response:
        return Response(body="body{}", headers={"Content-Type": "text/css"})

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("broken on purpose")

    return app


@pytest.fixture
def server() -> Iterator[tuple[str, logging.Logger, Lines]]:
    """Chalice's local server with its own handler class, so the real one stays as it is."""

    class Handler(ChaliceRequestHandler):
        pass

    logger = logging.getLogger(f"imageshelf.access.test{free_port()}")
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    accesslog.install(Handler, logger=logger, level=logging.DEBUG)
    port = free_port()
    local = LocalDevServer(tiny_app(), Config(), "127.0.0.1", port, handler_cls=Handler)
    thread = threading.Thread(target=local.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", logger, lines
    local.server.shutdown()
    local.server.server_close()
    thread.join(timeout=5)


def test_polls_and_assets_are_debug_while_changes_and_errors_are_shown(
    server: tuple[str, logging.Logger, Lines], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, lines = server
    with requests.Session() as http:
        for _ in range(20):  # what a processing photo and the 5 s refresh cost, in a few seconds
            assert http.get(f"{url}/images/{ID}", timeout=5).ok
            assert http.get(f"{url}/images?limit=24", timeout=5).ok
        assert http.get(f"{url}/static/gallery.css?v=1", timeout=5).ok
        assert http.options(f"{url}/images", timeout=5).status_code < 500
        assert http.get(f"{url}/", timeout=5).ok
        assert http.post(f"{url}/uploads", json={}, timeout=5).status_code == 201
        assert http.delete(f"{url}/images/{ID}", timeout=5).status_code == 204
        assert http.get(f"{url}/images/{'1' * 20}", timeout=5).status_code == 404
        assert http.get(f"{url}/boom", timeout=5).status_code == 500

    shown = lines.shown(logging.INFO)  # what `make run` prints
    assert [line.split('] "', 1)[1] for line in shown] == [
        'GET / HTTP/1.1" 200 -',
        'POST /uploads HTTP/1.1" 201 -',
        'DELETE /images/00000000000000000000 HTTP/1.1" 204 -',
        'GET /images/11111111111111111111 HTTP/1.1" 404 -',
        'GET /boom HTTP/1.1" 500 -',
    ]
    assert shown[0].startswith("127.0.0.1 - - [")  # http.server's format, as before
    levels = {r.getMessage().split('"')[1]: r.levelno for r in lines.records}
    assert levels["GET /images/11111111111111111111 HTTP/1.1"] == logging.WARNING
    assert levels["GET /boom HTTP/1.1"] == logging.ERROR
    # Everything is still there for whoever asks for debug: 40 polls, the asset, the preflight.
    debug = [r.getMessage() for r in lines.records if r.levelno == logging.DEBUG]
    assert len(debug) == 42 and sum(f"/images/{ID} " in line for line in debug) == 20
    assert "/images/" not in capsys.readouterr().err  # nothing goes around logging to stderr


@pytest.mark.parametrize(
    ("method", "path", "status", "level"),
    [
        ("GET", f"/images/{ID}", 200, logging.DEBUG),
        ("GET", "/images?limit=24&cursor=abc", 200, logging.DEBUG),
        ("GET", "/images", 200, logging.DEBUG),
        ("HEAD", "/static/gallery.js?v=0123456789", 200, logging.DEBUG),
        ("GET", "/ping", 200, logging.DEBUG),
        ("OPTIONS", "/uploads", 200, logging.DEBUG),
        ("GET", "/", 200, logging.INFO),
        ("GET", "/openapi.json", 200, logging.INFO),
        ("GET", f"/images/{ID}/render?w=100", 302, logging.INFO),
        ("POST", "/uploads", 201, logging.INFO),
        ("DELETE", f"/images/{ID}", 204, logging.INFO),
        ("GET", f"/images/{ID}", 404, logging.WARNING),
        ("DELETE", f"/images/{ID}", 401, logging.WARNING),
        ("GET", "/images", 500, logging.ERROR),
        ("GET", "/images", None, logging.DEBUG),  # no status (a line http.server writes without one)
    ],
)
def test_level_for(method: str, path: str, status: int | None, level: int) -> None:
    assert accesslog.level_for(method, path, status) == level


def test_install_defaults_to_chalices_handler_and_reads_access_log_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("log_request", "log_error", "log_message"):  # put back after the test
        monkeypatch.setattr(ChaliceRequestHandler, name, getattr(ChaliceRequestHandler, name))
    logger = logging.getLogger("imageshelf.access.env-test")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setenv("ACCESS_LOG", "debug")
    assert accesslog.install(logger=logger) is ChaliceRequestHandler
    assert ChaliceRequestHandler.log_request.__module__ == "tools.accesslog"
    assert logger.level == logging.DEBUG
    monkeypatch.delenv("ACCESS_LOG")
    logger.setLevel(logging.NOTSET)
    accesslog.install(logger=logger)
    assert logger.level == logging.NOTSET  # the root logger's level applies (INFO in `make run`)
