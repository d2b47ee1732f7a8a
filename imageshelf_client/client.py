"""A small client for imageshelf's JSON API, on ``requests``.

    >>> from imageshelf_client import Client
    >>> shelf = Client("http://127.0.0.1:8000")
    >>> image = shelf.upload("cat.jpg", wait=True)
    >>> image.status, image.rendition("thumb").url
    >>> shelf.render_url(image.id, width=800, format="webp")   # a URL to put in a page
    >>> shelf.render("sample", width=800, format="webp")[:4]   # the bytes themselves

Every failure is an :class:`ImageshelfError` carrying the API's error ``code``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urljoin

import requests
from requests.adapters import HTTPAdapter

from .models import EXTENSIONS, Image, ImageInfo, Page, Rendered

DEFAULT_URL = "http://127.0.0.1:8000"
SAMPLE = "sample"  # the id of the bundled sample photo, for render and info
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
Progress = Callable[[int], None]
Source = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO

# Magic numbers of the types the API accepts; it sniffs the bytes again itself.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"BM", "image/bmp"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftypavis", "image/avif"),
    (4, b"ftypheic", "image/heic"),  # iPhone photos
    (4, b"ftypheix", "image/heic"),
    (4, b"ftypmif1", "image/heic"),
)
_EXTENSIONS = EXTENSIONS


class ImageshelfError(Exception):
    """Anything that went wrong, with a stable ``code``.

    ``code`` is the API's error code (``not_found``, ``file_too_large``, ...) when the API
    answered, or one of the client's own: ``connection_error`` (the server could not be
    reached), ``upload_rejected`` (storage refused the bytes), ``download_failed`` (storage
    refused a render's bytes), ``wait_timeout``, ``invalid_response`` and ``http_error`` (an
    answer without the API's error shape).
    ``status`` is the HTTP status, if there was an answer.
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"

    def __repr__(self) -> str:
        return f"ImageshelfError({self.code!r}, {self.message!r}, status={self.status!r})"


def sniff_content_type(data: bytes, filename: str | None = None) -> str:
    """The image type of ``data`` from its first bytes, else from the name, else octet-stream."""
    for offset, magic, content_type in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return content_type
    guessed = mimetypes.guess_type(filename or "")[0]
    return guessed or "application/octet-stream"


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class Client:
    """imageshelf's JSON API.

    ``url`` defaults to ``$IMAGESHELF_URL``, then ``http://127.0.0.1:8000`` (``make run``);
    ``token`` (the admin token, needed only to delete) to ``$IMAGESHELF_TOKEN``; ``upload_token``
    (needed to upload where the server asks for one) to ``$IMAGESHELF_UPLOAD_TOKEN``, and uploads
    send the admin token when there is no upload token (the server accepts both). ``signing_key``
    (the deployment's render signing key, ``RENDER_SIGNING_KEY``) to ``$IMAGESHELF_RENDER_KEY``:
    with it, render URLs carry their signature. Idempotent calls are retried ``retries`` times,
    with exponential backoff from ``backoff`` seconds, on connection errors, 429 and 5xx answers.
    ``POST /uploads`` counts as idempotent: it only signs a URL.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        upload_token: str | None = None,
        signing_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        session: requests.Session | None = None,
    ) -> None:
        self.url = (url or os.environ.get("IMAGESHELF_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("IMAGESHELF_TOKEN") or None
        self.upload_token = (
            upload_token if upload_token is not None else os.environ.get("IMAGESHELF_UPLOAD_TOKEN") or None
        )
        self.signing_key = (
            signing_key if signing_key is not None else os.environ.get("IMAGESHELF_RENDER_KEY") or None
        )
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()
        if session is None:
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- the API ---------------------------------------------------------------------------

    def upload(
        self,
        source: Source,
        filename: str | None = None,
        *,
        content_type: str | None = None,
        wait: bool = False,
        timeout: float = 60.0,
        method: str = "put",
        progress: Progress | None = None,
    ) -> Image:
        """Upload one photo: ask for a presigned URL, send the bytes there, return the Image.

        ``source`` is a path, bytes or a binary file. ``filename`` defaults to the path's name;
        ``content_type`` is sniffed from the bytes. ``method`` is ``put`` (default) or ``post``
        (a multipart form, as browsers send). With ``wait=True``, waits up to ``timeout``
        seconds until the image is ``ready`` or ``failed``; otherwise it is usually ``pending``.
        ``progress`` is called with the number of bytes sent as they go. A file that cannot be
        read raises ``OSError``; everything else, ``ImageshelfError``.
        """
        image_id = self._upload(source, filename, content_type, method, progress)
        if wait:
            return self.wait(image_id, timeout=timeout)
        return self.get(image_id)

    def _upload(
        self,
        source: Source,
        filename: str | None,
        content_type: str | None,
        method: str,
        progress: Progress | None,
    ) -> str:
        """Presign and send; returns the new image's id (the command follows the images itself)."""
        data, filename = _read(source, filename)
        if not data:
            raise ImageshelfError(
                "empty_file", f"{filename or 'The file'} is empty: there is nothing to upload."
            )
        content_type = content_type or sniff_content_type(data, filename)
        if filename is None:
            filename = "upload" + _EXTENSIONS.get(content_type, "")
        grant = self._json(
            "POST",
            "/uploads",
            expect=201,
            headers=_bearer(self.upload_token or self.token),
            json={
                "filename": filename,
                "content_type": content_type,
                "size": len(data),
                "method": method,
            },
        )
        self._send(grant, data, filename, content_type, progress)
        return str(grant["id"])

    def get(self, image_id: str) -> Image:
        """One image by id; ``not_found`` if there is none."""
        return Image.from_json(self._json("GET", f"/images/{quote(image_id, safe='')}"))

    def list(self, limit: int = 24, cursor: str | None = None) -> Page:
        """One page of images, newest first. Pass ``page.next_cursor`` as ``cursor`` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return Page.from_json(self._json("GET", "/images", params=params))

    def pages(self, limit: int = 100) -> Iterator[Page]:
        """Every page of images, newest first, fetched as you iterate."""
        cursor: str | None = None
        while True:
            page = self.list(limit=limit, cursor=cursor)
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def iter_images(self, limit: int = 100) -> Iterator[Image]:
        """Every image, newest first, ``limit`` per request."""
        for page in self.pages(limit):
            yield from page

    def wait(self, image_id: str, timeout: float = 60.0, interval: float = 0.25) -> Image:
        """Poll the image until it is no longer ``pending``; ``wait_timeout`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            image = self.get(image_id)
            if not image.pending:
                return image
            if time.monotonic() + interval > deadline:
                raise ImageshelfError(
                    "wait_timeout",
                    f"Image {image_id} is still pending after {timeout:g}s; "
                    "wait longer, or check that the server processes uploads.",
                )
            time.sleep(interval)

    def delete(self, image_id: str) -> None:
        """Delete an image, its original and renditions (needs the admin token)."""
        headers = _bearer(self.token)
        response, attempts = self._request(
            "DELETE", self._url(f"/images/{quote(image_id, safe='')}"), headers=headers
        )
        if response.status_code == 204 or (response.status_code == 404 and attempts > 1):
            return  # a 404 after a retry: the first attempt deleted it
        raise _api_error(response)

    # --- renders and details ------------------------------------------------------------------

    def render_url(
        self,
        image_id: str,
        *,
        width: int | None = None,
        height: int | None = None,
        fit: str | None = None,
        gravity: str | None = None,
        format: str | None = None,
        quality: int | None = None,
        filters: str | Iterable[str] = (),
        download: bool = False,
        preset: str | None = None,
    ) -> str:
        """The URL of a render of ``image_id`` (``"sample"``: the bundled sample photo); asking
        for it (a browser's ``<img src>``, ``render``) answers a redirect to the image.

        ``width``/``height`` (1-4096, either may be left out) bound the size, never enlarging;
        ``fit`` is ``contain`` (default), ``cover`` (crop to fill; ``gravity`` ``center``,
        ``north``, ``south``, ``east``, ``west`` or ``smart`` picks what stays) or ``fill``
        (stretch); ``format`` is ``jpeg``, ``png``, ``webp``, ``avif`` or ``auto`` (by the
        request's ``Accept``); ``quality`` 1-100; ``filters`` are applied in order:
        ``grayscale``, ``sepia``, ``negate``, ``sharpen``, ``blur:<sigma up to 50>``,
        ``rotate:90|180|270``, ``flip:h|v`` (a list, or one comma-separated string);
        ``download`` asks browsers to save it. ``preset`` names one of the deployment's presets
        instead (``thumb``, ``large``, ``square``, ...) and stands alone.

        The parameters are written in the server's normal form, so equal requests make equal
        URLs (one cached object). With a ``signing_key``, the URL carries ``sig``. Values are
        not checked here (only that a preset stands alone): a bad one is the server's
        ``invalid_request``, naming it.
        """
        path = f"/{SAMPLE}/render" if image_id == SAMPLE else f"/images/{quote(image_id, safe='')}/render"
        if preset is not None:
            given = (width, height, fit, gravity, format, quality)
            if any(v is not None for v in given) or download or _filter_items(filters):
                raise ImageshelfError(
                    "invalid_request",
                    "'preset' stands alone: give either a preset or render parameters, not both.",
                )
            return f"{self._url(path)}?preset={quote(preset, safe='')}"
        sent, signed = _render_query(width, height, fit, gravity, format, quality, filters, download)
        query = "&".join(f"{name}={quote(value, safe=':,.')}" for name, value in sent)
        if self.signing_key:
            signature = render_signature(self.signing_key, image_id, signed)
            query = f"{query}&sig={signature}" if query else f"sig={signature}"
        return self._url(path) + (f"?{query}" if query else "")

    def render(
        self,
        image_id: str,
        *,
        width: int | None = None,
        height: int | None = None,
        fit: str | None = None,
        gravity: str | None = None,
        format: str | None = None,
        quality: int | None = None,
        filters: str | Iterable[str] = (),
        download: bool = False,
        preset: str | None = None,
        accept: str | None = None,
    ) -> Rendered:
        """The render's bytes: asks ``render_url(...)`` (same parameters), follows its redirect
        and downloads the image. The result is ``bytes`` with ``content_type`` and ``url`` (where
        it was fetched from). ``accept`` is the ``Accept`` header ``format="auto"`` chooses by
        (e.g. ``"image/avif,image/webp"``). Errors: the API's (``not_found``,
        ``invalid_request``, ``forbidden``, ``image_pending``, ``image_failed``,
        ``render_busy``), or ``download_failed``.
        """
        url = self.render_url(
            image_id,
            width=width,
            height=height,
            fit=fit,
            gravity=gravity,
            format=format,
            quality=quality,
            filters=filters,
            download=download,
            preset=preset,
        )
        headers = {"Accept": accept} if accept else {}
        answer, _ = self._request("GET", url, headers=headers, allow_redirects=False)
        location = answer.headers.get("Location")
        if answer.status_code >= 400:
            raise _api_error(answer)
        if answer.status_code not in (301, 302, 303, 307, 308) or not location:
            raise ImageshelfError(
                "invalid_response",
                f"GET {url} answered {answer.status_code}, not a redirect to the render; "
                "is the URL an imageshelf API?",
                answer.status_code,
            )
        location = urljoin(url, location)
        response, _ = self._request("GET", location)
        if response.status_code != 200:
            code = _xml_field(response.text, "Code") or str(response.status_code)
            message = _xml_field(response.text, "Message") or response.reason
            raise ImageshelfError(
                "download_failed",
                f"Storage refused the render of {image_id}: {code}: {message}",
                response.status_code,
            )
        content_type = response.headers.get("Content-Type") or "application/octet-stream"
        return Rendered(response.content, content_type, location)

    def info(self, image_id: str) -> ImageInfo:
        """The details of ``image_id``'s original (``"sample"``: the sample photo's): format,
        size, colour, EXIF essentials. ``not_found``, ``image_pending`` or ``image_failed``
        when there are none to give."""
        path = f"/{SAMPLE}/info" if image_id == SAMPLE else f"/images/{quote(image_id, safe='')}/info"
        return ImageInfo.from_json(self._json("GET", path))

    # --- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.url + path

    def _json(self, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> dict[str, Any]:
        response, _ = self._request(method, self._url(path), **kwargs)
        if response.status_code != expect:
            raise _api_error(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ImageshelfError(
                "invalid_response",
                f"{method} {path} answered {response.status_code} "
                "with a body that is not a JSON object; is the URL an imageshelf API?",
                response.status_code,
            )
        return body

    def _request(
        self,
        method: str,
        url: str,
        *,
        data: Callable[[], Any] | None = None,
        on_retry: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> tuple[requests.Response, int]:
        """Send with retries; ``data`` makes a fresh body for each attempt. Returns the answer
        and the number of attempts it took."""
        attempt = 0
        while True:
            attempt += 1
            last = attempt > self.retries
            try:
                body = data() if data else None
                response = self.session.request(method, url, data=body, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as error:
                if last:
                    raise ImageshelfError(
                        "connection_error",
                        f"Could not reach {url} ({error.__class__.__name__}"
                        f" after {attempt} attempts). Is the server running, and is the URL "
                        "right (--url or IMAGESHELF_URL)?",
                    ) from error
                delay = None
            else:
                if last or response.status_code not in RETRY_STATUSES:
                    return response, attempt
                delay = _retry_after(response)
                response.close()
            if on_retry:
                on_retry()
            time.sleep(delay if delay is not None else self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        return min(30.0, self.backoff * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _send(
        self, grant: dict[str, Any], data: bytes, filename: str, content_type: str, progress: Progress | None
    ) -> None:
        """Send the bytes where the grant says: PUT with its headers exactly, or a multipart POST
        with its fields first and the file last."""
        if grant["method"] == "PUT":
            body, headers = data, dict(grant["headers"])
        else:
            from urllib3 import encode_multipart_formdata

            parts: list[tuple[str, Any]] = [
                *grant["fields"].items(),
                ("file", (filename, data, content_type)),
            ]
            body, form_type = encode_multipart_formdata(parts)
            headers = {"Content-Type": form_type}
        readers: list[_Reader] = []

        def fresh_body() -> _Reader:
            readers.append(_Reader(body, progress, len(data)))
            return readers[-1]

        def undo_progress() -> None:
            if progress and readers and readers[-1].reported:
                progress(-readers[-1].reported)

        response, _ = self._request(
            grant["method"], grant["url"], data=fresh_body, headers=headers, on_retry=undo_progress
        )
        if response.status_code not in (200, 201, 204):
            code = _xml_field(response.text, "Code") or str(response.status_code)
            message = _xml_field(response.text, "Message") or response.reason
            raise ImageshelfError(
                "upload_rejected",
                f"Storage refused the upload of {filename}: {code}: {message}",
                response.status_code,
            )
        if readers:
            readers[-1].finish()


class _Reader:
    """A request body that reports progress as it is read, scaled to the file's size."""

    def __init__(self, body: bytes, progress: Progress | None, file_size: int) -> None:
        self.body, self.progress, self.file_size = body, progress, file_size
        self.position = 0
        self.reported = 0

    def __len__(self) -> int:
        return len(self.body)

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.body) if size is None or size < 0 else self.position + size
        chunk = self.body[self.position : end]
        self.position += len(chunk)
        self._report(self.file_size * self.position // max(1, len(self.body)))
        return chunk

    def finish(self) -> None:
        self._report(self.file_size)

    def _report(self, total: int) -> None:
        if self.progress and total > self.reported:
            self.progress(total - self.reported)
            self.reported = total


def _read(source: Source, filename: str | None) -> tuple[bytes, str | None]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), filename
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.read_bytes(), filename or path.name
    data = source.read()
    name = getattr(source, "name", None)
    return data, filename or (Path(name).name if isinstance(name, str) else None)


_SIGNATURE_CHARS = 32  # base64url characters of the HMAC the server keeps in URLs
_SIGMA = re.compile(r"[0-9]{1,2}(\.[0-9]{1,2})?")


def render_signature(key: str, image_id: str, parameters: str) -> str:
    """The ``sig`` of a render: HMAC-SHA256 under ``key`` of ``"<image id>/<parameters>"``
    (``parameters`` in normal form, ``""`` for none), base64url, its first 32 characters."""
    mac = hmac.new(key.encode(), f"{image_id}/{parameters}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:_SIGNATURE_CHARS]


def _filter_items(filters: str | Iterable[str]) -> list[str]:
    """Each filter, trimmed, a blur's sigma written as the server writes it (``blur:02.50`` is
    ``blur:2.5``); a value may hold several, comma-separated."""
    values = [filters] if isinstance(filters, str) else list(filters)
    items = [item.strip() for value in values if value.strip() for item in value.split(",")]
    normal = []
    for item in items:
        name, sep, arg = item.partition(":")
        if name == "blur" and _SIGMA.fullmatch(arg):
            arg = f"{float(arg):g}"
        normal.append(name + sep + arg)
    return normal


def _render_query(
    width: int | None,
    height: int | None,
    fit: str | None,
    gravity: str | None,
    format: str | None,
    quality: int | None,
    filters: str | Iterable[str],
    download: bool,
) -> tuple[list[tuple[str, str]], str]:
    """The query to send (what was asked for, in the server's order, defaults left out) and its
    normal form, which is what is signed: the server's ``Spec.canonical``, where ``gravity``
    counts only with ``fit=cover``."""
    fit = None if fit == "contain" else fit
    gravity = None if gravity == "center" else gravity
    items = _filter_items(filters)
    sent = [
        ("w", None if width is None else str(width)),
        ("h", None if height is None else str(height)),
        ("fit", fit),
        ("gravity", gravity),
        ("format", format),
        ("q", None if quality is None else str(quality)),
        ("filter", ",".join(items) or None),
        ("dl", "1" if download else None),
    ]
    pairs = [(name, value) for name, value in sent if value is not None]
    signed = "&".join(f"{name}={value}" for name, value in pairs if name != "gravity" or fit == "cover")
    return pairs, signed


def _api_error(response: requests.Response) -> ImageshelfError:
    try:
        error = response.json()["error"]
        return ImageshelfError(str(error["code"]), str(error["message"]), response.status_code)
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200]
        return ImageshelfError(
            "http_error",
            f"{response.request.method} {response.url} answered "
            f"{response.status_code} {response.reason}: {text}",
            response.status_code,
        )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), 60.0) if value.isdigit() else None


def _xml_field(text: str, name: str) -> str | None:
    match = re.search(rf"<{name}>([^<]*)</{name}>", text)
    return match.group(1) if match else None
