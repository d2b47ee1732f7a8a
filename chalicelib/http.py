"""HTTP glue: errors as ``{"error": {"code", "message"}}``, the headers every answer carries, and CORS.

CORS (docs/api.md, "CORS"): the JSON API's routes take ``cors=CORS`` (``cors_config``), so Chalice
declares an ``OPTIONS`` preflight for each of them, which API Gateway answers itself (a MOCK
integration, no Lambda) and ``chalice local`` too: a fixed answer, made when ``app.py`` is
imported from the stage's ``ALLOWED_ORIGINS``. It names the origin when there is one, and is
``*`` when there are several, because one fixed header cannot name two. The actual answers are
the gate: the middleware gives ``Access-Control-Allow-Origin: <the request's Origin>`` (and
``Vary: Origin``) only when that origin is in ``ALLOWED_ORIGINS`` as read for the request, and
removes it otherwise, so a browser lets no other origin read any answer. The API takes no cookies
(tokens are bearer headers a page must be given), so being allowed to *send* a request is no
privilege: any client outside a browser can send it anyway.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from chalice import Chalice, CORSConfig, Response
from chalice.app import Request

from .config import Settings, get_settings
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


# What a page on another origin may send and read. Chalice adds its own to the allowed headers
# (X-Amz-Date, X-Api-Key, X-Amz-Security-Token).
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type")
CORS_EXPOSE_HEADERS = ("Location",)
PREFLIGHT_MAX_AGE = 600
_ALLOW_ORIGIN = "Access-Control-Allow-Origin"


def cors_config(settings: Settings) -> CORSConfig | None:
    """The JSON API routes' ``cors=``: None (no preflight routes at all) when no other origin is
    allowed; else a preflight naming the one origin, or ``*`` for several (see the module)."""
    origins = settings.allowed_origins
    if not origins:
        return None
    return CORSConfig(
        allow_origin=origins[0] if len(origins) == 1 else "*",
        allow_headers=list(CORS_ALLOW_HEADERS),
        expose_headers=list(CORS_EXPOSE_HEADERS),
        max_age=PREFLIGHT_MAX_AGE,
    )


def json_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Answer an ImageshelfError raised by ``view`` with its status and JSON body."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ImageshelfError as error:
            return error_response(error)

    return wrapper


def current(app: Chalice) -> Request:
    """The request a view is answering (Chalice sets it before calling the view)."""
    request = app.current_request
    if request is None:  # pragma: no cover - only outside a request
        raise RuntimeError("no request is being handled")
    return request


def body(request: Request) -> bytes:
    """The request's body as bytes (Chalice types it as text or bytes)."""
    raw = request.raw_body
    return raw.encode() if isinstance(raw, str) else raw


def query(request: Request) -> dict[str, str]:
    """The query string's parameters (the last value of a repeated one)."""
    return dict(request.query_params or {})


def query_lists(request: Request) -> dict[str, list[str]]:
    """The query string's parameters, each with all its values (``filter`` may repeat)."""
    params = request.query_params
    return {name: params.getlist(name) for name in params} if params else {}


def header(request: Any, name: str) -> str | None:
    return (getattr(request, "headers", None) or {}).get(name)


def redirect(url: str, vary_accept: bool = False) -> Response:
    """A 302 to a render. Cacheable for a few minutes: the URL it names (presigned for at least
    half its life, or the CDN's) stays good far longer."""
    headers: dict[str, str | list[str]] = {"Location": url, "Cache-Control": "public, max-age=300"}
    if vary_accept:
        headers["Vary"] = "Accept"
    return Response(body="", status_code=302, headers=headers)


def authorization(request: Any) -> str | None:
    """The request's ``Authorization`` header, if any (bearer tokens: chalicelib/auth.py)."""
    return (getattr(request, "headers", None) or {}).get("authorization")


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
    if _ALLOW_ORIGIN in response.headers:  # a route with cors=: Chalice put the preflight's value
        _allow_origin(getattr(event, "headers", None) or {}, response, get_settings().allowed_origins)
    return response


def _allow_origin(request_headers: Any, response: Response, allowed: tuple[str, ...]) -> None:
    """Name the request's origin in the answer if it is allowed; otherwise no CORS headers."""
    origin = request_headers.get("origin")
    if "*" in allowed:
        response.headers[_ALLOW_ORIGIN] = "*"
        return
    if allowed:
        vary = response.headers.get("Vary")
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    if origin and origin in allowed:
        response.headers[_ALLOW_ORIGIN] = origin
        return
    for name in [n for n in response.headers if n.lower().startswith("access-control-")]:
        del response.headers[name]


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
