"""What the API answers, as typed objects: Image, its Original and Renditions, a Page of images."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class ErrorInfo:
    """Why an image failed: a stable ``code`` (e.g. ``not_an_image``) and a ``message`` for people."""

    code: str
    message: str


@dataclass(frozen=True)
class Original:
    """The uploaded file. While pending, only ``filename`` and ``bytes`` may be known."""

    filename: str
    content_type: str | None
    bytes: int
    width: int | None
    height: int | None
    format: str | None
    frames: int | None = None  # more than 1 for animations and multi-page files


@dataclass(frozen=True)
class Rendition:
    """A web rendition (e.g. ``thumb``, ``large``); ``url`` is where to fetch it."""

    name: str
    url: str
    width: int
    height: int
    content_type: str
    bytes: int
    frames: int = 1  # 1 for a still; an animated rendition has the original's frames
    # Every format it is stored in, smallest first: {"content_type", "url", "bytes"} each (this
    # one among them; a server before AVIF/WebP renditions sends none).
    formats: tuple[dict[str, Any], ...] = ()

    def url_for(self, content_type: str) -> str | None:
        """The URL of this rendition in ``content_type`` (``"image/avif"``), or None."""
        return next((f["url"] for f in self.formats if f.get("content_type") == content_type), None)


@dataclass(frozen=True)
class Image:
    """One image: ``status`` is ``pending``, ``ready`` (with ``renditions``) or ``failed`` (``error``)."""

    id: str
    status: str
    created_at: datetime
    original: Original
    renditions: tuple[Rendition, ...] = ()
    error: ErrorInfo | None = None
    # What to paint before a rendition loads: {"color": "#rrggbb", "preview": "data:image/png;..."}.
    placeholder: dict[str, str] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        error = data.get("error")
        return cls(
            id=data["id"],
            status=data["status"],
            created_at=datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")),
            original=_known(Original, data["original"]),
            renditions=tuple(
                replace(_known(Rendition, r), formats=tuple(r.get("formats") or ()))
                for r in data.get("renditions", [])
            ),
            error=ErrorInfo(error["code"], error["message"]) if error else None,
            placeholder=data.get("placeholder"),
            raw=data,
        )

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def rendition(self, name: str) -> Rendition | None:
        """The rendition called ``name`` (``thumb``, ``large``), or None."""
        return next((r for r in self.renditions if r.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The image as the API sent it."""
        return self.raw


@dataclass(frozen=True)
class Page:
    """One page of images, newest first; ``next_cursor`` is None on the last page."""

    images: tuple[Image, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Page:
        return cls(tuple(Image.from_json(i) for i in data["images"]), data["next_cursor"])

    def __iter__(self) -> Iterator[Image]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)


def _known[T: DataclassInstance](cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from the fields it knows: a newer server may send more."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
