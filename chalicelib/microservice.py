"""The ``operations`` Lambda function: imageshelf as an image-operations microservice.

Other AWS services and SDK clients invoke it directly (``lambda:InvokeFunction`` is their
authorisation, so no render signature is asked for) with a JSON event::

    {"operation": "resize", "id": "<image id>", "w": 800, "format": "webp"}

and get JSON back. Image outputs come back as URLs (the render's cached object), never as bytes
in the payload. ``"id": "sample"`` (or no id for ``getSample``) is the bundled sample photo.
Errors come back as ``{"error": {"code": ..., "message": ...}, "status": <HTTP status>}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import operations, renders
from .config import Settings
from .errors import ImageshelfError

OPERATIONS = ("ping", "getDimensions", "identify", "resize", "thumbnail", "convert", "getSample")
# Event fields that are render parameters, as in the URL (filter may be a list).
_RENDER_FIELDS = ("w", "h", "fit", "gravity", "format", "q", "filter", "dl")
_THUMBNAIL_SIDE = 400


def invoke(event: Any, settings: Settings) -> dict[str, Any]:
    """Run one operation; never raises for bad input (the answer says what was wrong)."""
    try:
        if not isinstance(event, dict):
            raise _invalid("The event must be a JSON object with an 'operation'.")
        operation = event.get("operation")
        handler = _HANDLERS.get(operation) if isinstance(operation, str) else None
        if handler is None:
            raise _invalid(f"Unknown operation {operation!r}: use one of {', '.join(OPERATIONS)}.")
        return handler(event, settings)
    except ImageshelfError as error:
        return {**error.to_dict(), "status": error.status}


def _ping(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return {"message": "pong"}


def _dimensions(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    details = renders.info(_subject(event), settings)
    return {key: details[key] for key in ("id", "width", "height", "format", "frames")}


def _identify(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return renders.info(_subject(event), settings)


def _render(
    defaults: dict[str, str], required: tuple[str, ...] = ()
) -> Callable[[dict[str, Any], Settings], dict[str, Any]]:
    def handler(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
        params = _params(event)
        for name in required:
            if name not in params:
                raise _invalid(f"Operation {event['operation']!r} needs '{name}'.")
        spec = operations.parse({**{k: [v] for k, v in defaults.items()}, **params})
        accept = event.get("accept") if isinstance(event.get("accept"), str) else None
        subject = _subject(event)
        rendered = renders.render_spec(subject, spec, accept, settings)
        return {"id": subject, "parameters": spec.canonical, **rendered.to_json()}

    return handler


def _sample(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    rendered = renders.render_spec(renders.SAMPLE, operations.Spec(), None, settings)
    return {**renders.info(renders.SAMPLE, settings), "url": rendered.url}


def _subject(event: dict[str, Any]) -> str:
    subject = event.get("id", renders.SAMPLE if event.get("operation") == "getSample" else None)
    if not isinstance(subject, str) or not subject:
        raise _invalid("Give the image's 'id' (or \"sample\" for the bundled sample photo).")
    return subject


def _params(event: dict[str, Any]) -> dict[str, list[str]]:
    """The event's render parameters as query values: numbers as text, a filter list kept."""
    params: dict[str, list[str]] = {}
    for name in _RENDER_FIELDS:
        value = event.get(name)
        if value is None:
            continue
        values = value if isinstance(value, list) and name == "filter" else [value]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
            raise _invalid(f"Field {name!r} must be a string or a number.")
        params[name] = [str(v) for v in values]
    return params


def _invalid(message: str) -> ImageshelfError:
    return ImageshelfError("invalid_request", message)


_HANDLERS: dict[str, Callable[[dict[str, Any], Settings], dict[str, Any]]] = {
    "ping": _ping,
    "getDimensions": _dimensions,
    "identify": _identify,
    # resize: fit inside w x h (either may be left out), as the HTTP route's default
    "resize": _render({}),
    # thumbnail: a square-ish crop filling the box, the most detailed part kept
    "thumbnail": _render(
        {"w": str(_THUMBNAIL_SIDE), "h": str(_THUMBNAIL_SIDE), "fit": "cover", "gravity": "smart"}
    ),
    # convert: the whole image in another format (up to 4096 px a side)
    "convert": _render({}, required=("format",)),
    "getSample": _sample,
}
