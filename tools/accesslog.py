"""The local server's access log, kept to what a developer wants to read.

Chalice's local server (``chalice.local.ChaliceRequestHandler``, an ``http.server`` handler) writes
one line to stderr for every request. The gallery polls ``GET /images/{id}`` every 250 ms while a
photo is processed and fetches ``GET /images`` every 5 s, so those lines bury everything else.
:func:`install` sends the lines through :mod:`logging` instead (logger ``imageshelf.access``),
each at the level its kind of request deserves:

- a 5xx answer: ERROR; a 4xx answer: WARNING; whatever the request, always shown;
- uploads, deletions and every other request that changes something (``POST``, ``PUT``,
  ``PATCH``, ``DELETE``): INFO;
- the page itself (``GET /``) and any ``GET`` not listed below: INFO;
- polling and plumbing: ``GET``/``HEAD`` of ``/images`` and ``/images/{id}``, ``/static/…``,
  ``/ping``, ``/favicon.ico``, and CORS preflights (``OPTIONS``): DEBUG.

``ACCESS_LOG=debug`` in the environment (or ``install(level=logging.DEBUG)``) shows them all.
"""

from __future__ import annotations

import logging
import os
import re
from http.server import BaseHTTPRequestHandler
from typing import Any

log = logging.getLogger("imageshelf.access")

# GETs a page makes by itself, again and again: the list, one image's status, assets, health.
_QUIET_PATHS = re.compile(r"/(images(/[^/]+)?|static/.*|ping|favicon\.ico)/?")
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def level_for(method: str, path: str, status: int | None) -> int:
    """The level of one request's line: see the module's docstring."""
    if status is not None and status >= 500:
        return logging.ERROR
    if status is not None and status >= 400:
        return logging.WARNING
    method = method.upper()
    if method in _CHANGES:
        return logging.INFO
    if method == "OPTIONS":
        return logging.DEBUG
    if method in ("GET", "HEAD") and _QUIET_PATHS.fullmatch(path.split("?", 1)[0].split("#", 1)[0]):
        return logging.DEBUG
    return logging.INFO


def install(
    handler_cls: type[BaseHTTPRequestHandler] | None = None,
    logger: logging.Logger = log,
    level: int | None = None,
) -> type[BaseHTTPRequestHandler]:
    """Make ``handler_cls`` (default: Chalice's local handler) log through ``logger`` at
    :func:`level_for`'s levels. ``level`` (default: ``$ACCESS_LOG``, else unset so the root
    logger's level applies) is set on ``logger``. Calling it again changes nothing more.
    Returns the class."""
    if handler_cls is None:
        from chalice.local import ChaliceRequestHandler

        handler_cls = ChaliceRequestHandler
    chosen = level if level is not None else _LEVELS.get(os.environ.get("ACCESS_LOG", "").lower())
    if chosen is not None:
        logger.setLevel(chosen)

    def log_request(self: BaseHTTPRequestHandler, code: Any = "-", size: Any = "-") -> None:
        status = code.value if hasattr(code, "value") else code
        try:
            number: int | None = int(status)
        except (TypeError, ValueError):
            number = None
        method = getattr(self, "command", None) or "-"
        path = getattr(self, "path", None) or ""
        at = level_for(method, path, number)
        if logger.isEnabledFor(at):
            logger.log(at, _line(self, f'"{self.requestline}" {status} {size}'))

    def log_error(self: BaseHTTPRequestHandler, format: str, *args: Any) -> None:
        logger.warning(_line(self, format % args))

    def log_message(self: BaseHTTPRequestHandler, format: str, *args: Any) -> None:
        logger.info(_line(self, format % args))

    handler_cls.log_request = log_request  # type: ignore[method-assign]
    handler_cls.log_error = log_error  # type: ignore[method-assign]
    handler_cls.log_message = log_message  # type: ignore[method-assign]
    return handler_cls


def _line(handler: BaseHTTPRequestHandler, text: str) -> str:
    # http.server's own format, so the lines read as before.
    return f"{handler.address_string()} - - [{handler.log_date_time_string()}] {text}"
