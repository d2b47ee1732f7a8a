"""HTTP glue: errors as ``{"error": {"code", "message"}}``, and the headers every answer carries."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from chalice import Response

from .errors import ImageshelfError

# Chalice answers some requests itself (unknown method, bad content type, a crash in a
# view); their codes are mapped onto ours so every error has one shape.
_CHALICE_CODES = {
    "BadRequestError": "invalid_request",
    "BadRequest": "invalid_request",
    "UnauthorizedError": "unauthorized",
    "ForbiddenError": "forbidden",
    "NotFoundError": "not_found",
    "MethodNotAllowedError": "method_not_allowed",
    "UnsupportedMediaType": "unsupported_media_type",
    "InternalServerError": "internal_error",
}
_INTERNAL = (
    "Something went wrong on our side; try again. If it keeps happening, the API function's logs say why."
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def json_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Answer an ImageshelfError raised by ``view`` with its status and JSON body."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ImageshelfError as error:
            return error_response(error)

    return wrapper


def error_response(error: ImageshelfError) -> Response:
    return Response(body=error.to_dict(), status_code=error.status)


def middleware(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Chalice ``http`` middleware: one error shape, and security headers on every answer."""
    response = get_response(event)
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = _CHALICE_CODES.get(body["Code"], "internal_error")
        message = _INTERNAL if code == "internal_error" else str(body["Message"])
        response.body = {"error": {"code": code, "message": message}}
        response.headers["Content-Type"] = "application/json"
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def created(body: dict[str, Any], location: str, request: Any) -> Response:
    """A 201 whose ``Location`` (an app path) is put under the request's base path, so that it
    resolves to the resource behind API Gateway's stage prefix or a custom domain's base path."""
    return Response(body=body, status_code=201, headers={"Location": base_path(request) + location})


def base_path(request: Any) -> str:
    """What API Gateway put before the app's route: ``/api`` for a stage, ``""`` locally.

    The request context's ``path`` is the whole path as the client sent it and ``resourcePath``
    the route it matched; the difference is the prefix. Only literal routes (``/uploads``) can be
    compared this way, which is all that needs it.
    """
    context = getattr(request, "context", None) or {}
    path, route = context.get("path") or "", context.get("resourcePath") or ""
    if not route or "{" in route or not path.endswith(route):
        return ""
    prefix = path[: len(path) - len(route)].rstrip("/")
    # The path is the client's: only plain segments, never "//evil.example" (another host).
    return prefix if _BASE_PATH.fullmatch(prefix) else ""


_BASE_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*")


def no_content() -> Response:
    return Response(body="", status_code=204)


def slash_redirect(request: Any) -> Response | None:
    """A redirect from ``/api`` to ``/api/``: API Gateway serves the root resource at both, and the
    page's relative URLs resolve under the stage prefix only with the slash."""
    path = (getattr(request, "context", None) or {}).get("path") or "/"
    if path.endswith("/"):
        return None
    return Response(body="", status_code=301, headers={"Location": f"{path}/"})
