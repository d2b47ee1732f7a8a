"""All S3 access: ids, the key layout, presigning, listing, renditions and records. No pixels.

Layout
------
Upload bucket::

    uploads/{id}                      presigned uploads (the server picks id and key)
    uploads/<anything else>           objects put by any S3 client; the server assigns an id

Images bucket, everything about one image under ``{id}/``::

    {id}/r/{name}.{w}x{h}.{v}.{ext}   a rendition of version {v} of the original (a hash of its
                                      ETag); ListObjectsV2 gives its size in bytes
    {id}/s/{status}.{fields}          the status record: status and the original's facts in
                                      the key name (base64url JSON), the full record as the body

Listing a page therefore needs no GET or HEAD per image: one ``ListObjectsV2`` page holds
every key of about 250 images, and each key name carries what the API shows. Ids sort
newest-first as strings, so S3's lexicographic listing order is the gallery's order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .config import Settings
from .errors import too_large

UPLOAD_PREFIX = "uploads/"
_RANK = {"pending": 0, "failed": 1, "ready": 2}  # when records coexist, the higher one holds

# Crockford's base32 alphabet is in ASCII order, so encoded numbers sort like the numbers.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_TIME_CHARS = 9  # 45 bits of milliseconds: until the year 3084
_RANDOM_CHARS = 11  # 55 random bits: collisions need ~2^27 ids in one millisecond
_MAX_TIME = 32**_TIME_CHARS - 1
ID_LENGTH = _TIME_CHARS + _RANDOM_CHARS
ID_RE = re.compile(rf"[{_ALPHABET}]{{{ID_LENGTH}}}")

_RENDITION_KEY = re.compile(r"r/([a-z][a-z0-9_-]*)\.([0-9]+)x([0-9]+)\.([0-9a-f]{10})\.([a-z0-9]+)")
_RECORD_KEY = re.compile(r"s/(pending|ready|failed)\.([A-Za-z0-9_-]*)")
_MAX_KEY_BYTES = 1024
_LIST_PAGE = 1000

MAX_FILENAME = 255
_MAX_FILENAME_METADATA = 1024
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}


# --- ids -------------------------------------------------------------------------------


def _base32(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(at: float | None = None, entropy: bytes | None = None) -> str:
    """A new image id: inverted milliseconds (newest sorts first) then random bits.

    ``entropy`` makes the id deterministic, for objects whose id must be the same on
    every delivery of their upload event.
    """
    millis = time.time_ns() // 1_000_000 if at is None else round(at * 1000)
    bits = int.from_bytes(entropy or secrets.token_bytes(8), "big") & (2 ** (5 * _RANDOM_CHARS) - 1)
    return _base32(_MAX_TIME - millis, _TIME_CHARS) + _base32(bits, _RANDOM_CHARS)


def is_id(value: str) -> bool:
    return bool(ID_RE.fullmatch(value))


def id_created_at(image_id: str) -> datetime:
    """When the id was made (millisecond precision, UTC)."""
    inverted = 0
    for char in image_id[:_TIME_CHARS]:
        inverted = inverted * 32 + _ALPHABET.index(char)
    return datetime.fromtimestamp((_MAX_TIME - inverted) / 1000, tz=UTC)


# --- keys ------------------------------------------------------------------------------


def upload_key(image_id: str) -> str:
    return f"{UPLOAD_PREFIX}{image_id}"


def is_upload_key(key: str) -> bool:
    """True for keys the resize handler may process: under the watched prefix."""
    return key.startswith(UPLOAD_PREFIX) and len(key) > len(UPLOAD_PREFIX)


def id_for_upload(key: str, head: UploadObject) -> str:
    """The image id of an uploaded object.

    Presigned uploads carry their id in the key. Objects put by other S3 clients get one
    derived from the object itself (key, ETag, time), so every delivery of the same
    event, and every racing duplicate, maps to the same image.
    """
    tail = key[len(UPLOAD_PREFIX) :]
    if is_id(tail):
        return tail
    digest = hashlib.sha256(f"{key}\0{head.etag}".encode("utf-8", "surrogatepass")).digest()
    return new_id(at=head.last_modified.timestamp(), entropy=digest[:8])


def version_tag(etag: str) -> str:
    """A short tag for one version of an original (its ETag), carried by its renditions' keys,
    so renditions of an original that was since replaced are never shown with the new one."""
    return hashlib.sha256(etag.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def rendition_key(image_id: str, name: str, width: int, height: int, version: str, extension: str) -> str:
    return f"{image_id}/r/{name}.{width}x{height}.{version}.{extension}"


def _image_prefix(image_id: str) -> str:
    return f"{image_id}/"


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendition:
    name: str
    key: str
    width: int
    height: int
    content_type: str
    bytes: int
    version: str


@dataclass(frozen=True)
class Record:
    """What is known about one image. Deterministic for a given upload, so that racing
    deliveries of the same event write byte-identical keys."""

    id: str
    status: str
    filename: str
    bytes: int
    content_type: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    animated: bool | None = None
    error_code: str | None = None
    error_message: str | None = None
    version: str | None = None  # version_tag of the original these facts describe
    source_key: str | None = None  # kept in the body only (keys may be 1 KiB long)
    renditions: tuple[Rendition, ...] = field(default=(), compare=False)

    @property
    def created_at(self) -> datetime:
        return id_created_at(self.id)


_KEY_FIELDS = (
    "filename",
    "bytes",
    "content_type",
    "format",
    "width",
    "height",
    "frames",
    "animated",
    "error_code",
    "error_message",
    "version",
)


def record_key(record: Record) -> str:
    """The record's key: its status and listing fields, encoded to fit S3's 1 KiB limit."""
    fields = {name: getattr(record, name) for name in _KEY_FIELDS if getattr(record, name) is not None}
    for _ in range(64):
        blob = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        encoded = base64.urlsafe_b64encode(blob.encode("utf-8", "surrogatepass")).rstrip(b"=").decode()
        key = f"{record.id}/s/{record.status}.{encoded}"
        if len(key.encode()) <= _MAX_KEY_BYTES:
            return key
        # Too long: shorten the free-text fields; the body keeps them whole.
        for name in ("error_message", "filename"):
            if len(fields.get(name) or "") > 16:
                fields[name] = _shorten(fields[name])
                break
    raise AssertionError("record fields cannot be shortened enough")  # pragma: no cover


def _shorten(text: str) -> str:
    keep = max(8, len(text) * 2 // 3)
    return text[: keep // 2] + "…" + text[-(keep // 2) :]


def parse_record_key(image_id: str, rest: str) -> Record | None:
    match = _RECORD_KEY.fullmatch(rest)
    if not match:
        return None
    try:
        padded = match.group(2) + "=" * (-len(match.group(2)) % 4)
        fields = json.loads(base64.urlsafe_b64decode(padded).decode("utf-8", "surrogatepass"))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("filename"), str):
        return None
    return Record(id=image_id, status=match.group(1), **{k: fields.get(k) for k in _KEY_FIELDS})


def _parse_rendition_key(key: str, rest: str, size: int) -> Rendition | None:
    match = _RENDITION_KEY.fullmatch(rest)
    if not match or match.group(5) not in CONTENT_TYPES:
        return None
    name, width, height, version, ext = match.groups()
    return Rendition(name, key, int(width), int(height), CONTENT_TYPES[ext], size, version)


def image_state(image_id: str, objects: Iterable[dict[str, Any]]) -> Record | None:
    """The image's state from its keys: a final record wins over pending, and renditions
    are shown only once the image is ready (the ready record is written last)."""
    records: list[Record] = []
    renditions: list[Rendition] = []
    for obj in objects:
        rest = obj["Key"][ID_LENGTH + 1 :]
        if rest.startswith("s/"):
            record = parse_record_key(image_id, rest)
            if record:
                records.append(record)
        elif rest.startswith("r/"):
            rendition = _parse_rendition_key(obj["Key"], rest, obj["Size"])
            if rendition:
                renditions.append(rendition)
    if not records:
        return None
    best = max(records, key=lambda r: _RANK[r.status])
    if best.status != "ready":
        return best
    renditions = [r for r in renditions if best.version in (None, r.version)]
    renditions.sort(key=lambda r: (r.width * r.height, r.name))
    return replace(best, renditions=tuple(renditions))


# --- S3 clients ------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _client(endpoint_url: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=30,
        # Path style on custom endpoints (the embedded S3, MinIO); virtual hosts on AWS,
        # so browsers POST to the bucket's own regional host.
        s3={"addressing_style": "path" if endpoint_url else "virtual"},
    )
    return boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


def s3() -> Any:
    """The S3 client. Made on first use (never at import); boto3 reads ``AWS_ENDPOINT_URL``
    itself, so the same code talks to AWS, the embedded S3, MinIO or LocalStack."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return _client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"), region)


def reset_clients() -> None:
    """Forget cached clients and signed URLs (tests switch endpoints and credentials between cases)."""
    _client.cache_clear()
    with _signed_lock:
        _signed.clear()


_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)


def is_transient(error: BaseException) -> bool:
    """True for S3 failures worth retrying later (throttling, 5xx, network); False for the rest."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, ConnectionError | HTTPClientError):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return _error_code(error) in _TRANSIENT_CODES or status >= 500
    return False


def describe(error: BaseException) -> str:
    """A short, safe description of an exception for a failure record (no traceback, no secrets)."""
    code = _error_code(error)
    return f"S3 error {code}" if code else type(error).__name__


def _error_code(error: BaseException) -> str | None:
    return getattr(error, "response", {}).get("Error", {}).get("Code")


def _is_missing(error: Exception) -> bool:
    return _error_code(error) in ("404", "NoSuchKey", "NotFound")


# --- uploads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadObject:
    key: str
    size: int
    etag: str
    last_modified: datetime
    filename: str


def clean_filename(raw: str) -> str:
    """A filename safe to store and show: no folders, no control characters, <= 255 chars."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if name in ("", ".", ".."):
        name = "upload"
    name = name[:MAX_FILENAME]
    # S3 allows 2 KB of user metadata; percent-encoding makes a CJK character 9 bytes.
    stem, dot, extension = name.rpartition(".") if len(name.rpartition(".")[2]) <= 10 else (name, "", "")
    while len(encode_filename(name)) > _MAX_FILENAME_METADATA and len(stem) > 1:
        stem = stem[: -max(1, len(stem) // 10)]
        name = f"{stem}{dot}{extension}"
    return name


def encode_filename(filename: str) -> str:
    """Filenames travel in S3 metadata, which must be ASCII: percent-encode them."""
    return quote(filename, safe=" ()[]-_.,~!'")


def presign_post(image_id: str, content_type: str, filename: str, settings: Settings) -> dict[str, Any]:
    """A presigned POST for ``uploads/{id}``: exact key, size range, type and metadata signed."""
    encoded = encode_filename(filename)
    fields = {"Content-Type": content_type, "x-amz-meta-filename": encoded}
    conditions: list[Any] = [
        {"Content-Type": content_type},
        {"x-amz-meta-filename": encoded},
        ["content-length-range", 1, settings.max_upload_bytes],
    ]
    return s3().generate_presigned_post(
        Bucket=settings.upload_bucket,
        Key=upload_key(image_id),
        Fields=fields,
        Conditions=conditions,
        ExpiresIn=settings.upload_url_expires,
    )


def presign_put(
    image_id: str, content_type: str, size: int, filename: str, settings: Settings
) -> tuple[str, dict[str, str]]:
    """A presigned PUT for ``uploads/{id}`` and the headers the client must send with it."""
    encoded = encode_filename(filename)
    url = s3().generate_presigned_url(
        "put_object",
        Params={
            "Bucket": settings.upload_bucket,
            "Key": upload_key(image_id),
            "ContentType": content_type,
            "ContentLength": size,
            "Metadata": {"filename": encoded},
        },
        ExpiresIn=settings.upload_url_expires,
    )
    headers = {"Content-Type": content_type, "Content-Length": str(size), "x-amz-meta-filename": encoded}
    return url, headers


def head_upload(key: str, settings: Settings) -> UploadObject | None:
    """Size, ETag, time and filename of an uploaded object; None if it is gone."""
    from botocore.exceptions import ClientError

    try:
        head = s3().head_object(Bucket=settings.upload_bucket, Key=key)
    except ClientError as error:
        if _is_missing(error):
            return None
        raise
    meta = head.get("Metadata", {})
    filename = clean_filename(unquote(meta["filename"]) if meta.get("filename") else key)
    return UploadObject(
        key=key,
        size=head["ContentLength"],
        etag=head.get("ETag", "").strip('"'),
        last_modified=head["LastModified"],
        filename=filename,
    )


def read_upload(upload: UploadObject, settings: Settings) -> bytes:
    """The uploaded bytes, read no further than the size limit (a client may lie)."""
    body = s3().get_object(Bucket=settings.upload_bucket, Key=upload.key, IfMatch=f'"{upload.etag}"')["Body"]
    try:
        data = body.read(settings.max_upload_bytes + 1)
    finally:
        body.close()
    if len(data) > settings.max_upload_bytes:
        raise too_large(len(data), settings.max_upload_bytes)
    return data


def delete_upload(key: str, settings: Settings) -> None:
    s3().delete_object(Bucket=settings.upload_bucket, Key=key)


# --- renditions and records ------------------------------------------------------------


def put_rendition(
    image_id: str,
    name: str,
    data: bytes,
    size: tuple[int, int],
    version: str,
    extension: str,
    settings: Settings,
) -> str:
    key = rendition_key(image_id, name, size[0], size[1], version, extension)
    s3().put_object(
        Bucket=settings.images_bucket,
        Key=key,
        Body=data,
        ContentType=CONTENT_TYPES[extension],
        # Keys change whenever the pixels do, so a rendition can be cached for good.
        CacheControl="public, max-age=31536000, immutable",
    )
    return key


def put_record(record: Record, settings: Settings) -> str:
    key = record_key(record)
    body = json.dumps(asdict(record) | {"renditions": None}, ensure_ascii=False, sort_keys=True)
    s3().put_object(
        Bucket=settings.images_bucket,
        Key=key,
        Body=body.encode("utf-8", "surrogatepass"),
        ContentType="application/json",
    )
    return key


def _list(settings: Settings, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """ListObjectsV2 pages of the images bucket."""
    token = None
    while True:
        args = dict(kwargs, Bucket=settings.images_bucket, **({"ContinuationToken": token} if token else {}))
        page = s3().list_objects_v2(**args)
        yield page
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def image_objects(image_id: str, settings: Settings) -> list[dict[str, Any]]:
    return [
        obj for page in _list(settings, Prefix=_image_prefix(image_id)) for obj in page.get("Contents", [])
    ]


def get_record(image_id: str, settings: Settings) -> Record | None:
    """The image's current state, from one listing of its keys."""
    return image_state(image_id, image_objects(image_id, settings))


def settle(image_id: str, version: str, settings: Settings) -> None:
    """Leave one status record, the best one for this version of the original (ready, then
    failed, then pending), and only this version's renditions.

    Every delivery calls this after writing its final record (and checking that its version
    is still the original's), so whichever of several racing deliveries finishes last removes
    what the others, or an earlier version of the original, left behind.
    """
    records, stale = [], []
    for obj in image_objects(image_id, settings):
        rest = obj["Key"][ID_LENGTH + 1 :]
        record = parse_record_key(image_id, rest)
        rendition = None if record else _parse_rendition_key(obj["Key"], rest, 0)
        if record is not None and record.version in (None, version):
            records.append((_RANK[record.status], obj["Key"]))
        elif record is not None or (rendition is not None and rendition.version != version):
            stale.append(obj["Key"])  # another version of the original
    _delete_keys(settings.images_bucket, stale + [key for _, key in sorted(records)[:-1]])


def purge_image(image_id: str, settings: Settings, objects: list[dict[str, Any]] | None = None) -> None:
    """Delete every rendition and record of an image (records last, so a retry still finds them)."""
    keys = [o["Key"] for o in (image_objects(image_id, settings) if objects is None else objects)]
    _delete_keys(
        settings.images_bucket, [k for k in keys if "/s/" not in k] + [k for k in keys if "/s/" in k]
    )


def _delete_keys(bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        if not chunk:
            continue
        response = s3().delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )
        # DeleteObjects answers 200 even when keys fail: surface those failures.
        if response.get("Errors"):
            first = response["Errors"][0]
            raise RuntimeError(
                f"could not delete {len(response['Errors'])} keys from s3://{bucket}, "
                f"e.g. {first['Key']}: {first['Code']}"
            )


def list_images(limit: int, cursor: str | None, settings: Settings) -> tuple[list[Record], str | None]:
    """A page of images, newest first, and the cursor of the next page (or None).

    Costs one ListObjectsV2 call per 1,000 keys of the page (one call for a page of up
    to 100 images with the default renditions), whatever the number of images stored.
    """
    # '0' sorts right after '/', so this starts past every key under the cursor's id.
    start = {"StartAfter": f"{cursor}0"} if cursor else {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for page in _list(settings, MaxKeys=_LIST_PAGE, **start):
        for obj in page.get("Contents", []):
            image_id = obj["Key"][:ID_LENGTH]
            if is_id(image_id) and obj["Key"][ID_LENGTH : ID_LENGTH + 1] == "/":
                groups.setdefault(image_id, []).append(obj)
        # A group after the limit-th proves the limit-th is complete.
        if len(groups) > limit:
            break
    records = []
    ids = list(groups)
    for image_id in ids[:limit]:
        record = image_state(image_id, groups[image_id])
        if record:
            records.append(record)
    next_cursor = ids[limit - 1] if len(ids) > limit else None
    return records, next_cursor


def read_record_body(record: Record, settings: Settings) -> dict[str, Any]:
    """The full record (with the original's key), from the record object's body."""
    obj = s3().get_object(Bucket=settings.images_bucket, Key=record_key(record))
    return json.loads(obj["Body"].read())


def delete_image(image_id: str, settings: Settings) -> bool:
    """Delete the original, every rendition and every record; False if there was nothing."""
    objects = image_objects(image_id, settings)
    record = image_state(image_id, objects)
    source = upload_key(image_id)
    if record is not None:
        source = read_record_body(record, settings).get("source_key") or source
    elif head_upload(upload_key(image_id), settings) is None:
        return False
    s3().delete_object(Bucket=settings.upload_bucket, Key=source)
    purge_image(image_id, settings, objects)
    return True


# --- URLs ------------------------------------------------------------------------------


def rendition_url(key: str, settings: Settings) -> str:
    """Where a browser fetches a rendition: the public/CDN base, or a presigned GET.

    A presigned URL is reused while at least half its life is left. Renditions are immutable
    (``Cache-Control: immutable``, a new key for new pixels), but browsers cache by the whole
    URL, signature included: the same URL on every listing is what lets them use the copy they
    have instead of downloading every thumbnail again.
    """
    if settings.public_base_url:
        return f"{settings.public_base_url}/{quote(key)}"
    # Other credentials in the environment (Lambda's are fixed for an instance's life; tests
    # switch users) or another endpoint sign new URLs.
    signer = (
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
    )
    cache_key = (settings.images_bucket, key, settings.download_url_expires, signer)
    now = _now()
    with _signed_lock:
        cached = _signed.get(cache_key)
        if cached and now - cached[1] < settings.download_url_expires / 2:
            _signed.move_to_end(cache_key)
            return cached[0]
    url = s3().generate_presigned_url(
        "get_object",
        Params={"Bucket": settings.images_bucket, "Key": key},
        ExpiresIn=settings.download_url_expires,
    )
    with _signed_lock:
        _signed[cache_key] = (url, now)
        while len(_signed) > _SIGNED_MAX:
            _signed.popitem(last=False)
    return url


# Presigned rendition URLs by (bucket, key, lifetime, signer), least recently used first:
# 0.5-1.5 KB each (a session token makes them longer).
_SIGNED_MAX = 4096
_now = time.time  # the clock of the cache (tests move it)
_signed: OrderedDict[tuple[Any, ...], tuple[str, float]] = OrderedDict()
_signed_lock = threading.Lock()


def origins(settings: Settings) -> dict[str, str]:
    """The origins the gallery talks to: where uploads go and where images come from
    (for the page's Content-Security-Policy)."""
    upload = urlsplit(s3().generate_presigned_post(Bucket=settings.upload_bucket, Key=upload_key("x"))["url"])
    image = urlsplit(rendition_url(f"{'0' * ID_LENGTH}/r/x.1x1.jpg", settings))
    return {"upload": f"{upload.scheme}://{upload.netloc}", "image": f"{image.scheme}://{image.netloc}"}
