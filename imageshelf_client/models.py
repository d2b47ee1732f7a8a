"""What the API answers, as typed objects: Image, its Original and Renditions, a Page of images,
an image's details (ImageInfo, Camera) and a render's bytes (Rendered)."""

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


@dataclass(frozen=True)
class Camera:
    """The photo's EXIF essentials; each is None when the file does not say. GPS is never here:
    ``ImageInfo.has_location`` only says whether the file had a position."""

    make: str | None = None
    model: str | None = None
    lens: str | None = None
    taken_at: str | None = None  # ISO 8601, the camera's clock (a zone only if it wrote one)
    exposure_time: str | None = None  # seconds as photographers write it: "1/250", "2.5"
    f_number: float | None = None  # 4.0 is f/4
    iso: int | None = None
    focal_length: float | None = None  # millimetres

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Camera | None:
        return _known(cls, data) if isinstance(data, dict) else None


@dataclass(frozen=True)
class ImageInfo:
    """``GET /images/{id}/info`` (or ``/sample/info``): the original's details, read when it was
    processed. An image processed before details were kept has only the first few (the rest None)."""

    id: str
    filename: str
    format: str | None = None  # the decoder's name: JPEG, PNG, WEBP, ...
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    animated: bool | None = None
    mode: str | None = None  # Pillow's colour mode: RGB, RGBA, L, CMYK, P, ...
    bit_depth: int | None = None  # bits per channel
    has_alpha: bool | None = None
    color_profile: str | None = None  # the ICC profile's description
    orientation: int | None = None  # EXIF orientation, 1-8 (renders are shown upright)
    camera: Camera | None = None
    has_location: bool | None = None  # the file carried GPS coordinates (never shown)
    dominant_color: str | None = None  # "#rrggbb"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageInfo:
        info = _known(cls, {k: v for k, v in data.items() if k not in ("camera", "raw")})
        return replace(info, camera=Camera.from_json(data.get("camera")), raw=data)

    def to_json(self) -> dict[str, Any]:
        """The details as the API sent them."""
        return self.raw


class Rendered(bytes):
    """What ``Client.render`` returns: the image's bytes (use it as ``bytes``), with the
    ``content_type`` storage served it as and the ``url`` it was fetched from."""

    content_type: str
    url: str

    def __new__(cls, data: bytes, content_type: str, url: str) -> Rendered:
        rendered = super().__new__(cls, data)
        rendered.content_type = content_type
        rendered.url = url
        return rendered

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle keep the type and its fields
        return (Rendered, (bytes(self), self.content_type, self.url))

    @property
    def extension(self) -> str:
        """The usual file extension of its type, with the dot: ``.webp``, ``.jpg``, ... (``""``
        for a type it does not know)."""
        return EXTENSIONS.get(self.content_type.split(";")[0].strip().lower(), "")


# The extension for each image type the API serves or accepts.
EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/tiff": ".tif",
    "image/bmp": ".bmp",
    "image/avif": ".avif",
    "image/heic": ".heic",
}


def _known[T: DataclassInstance](cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from the fields it knows: a newer server may send more."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
