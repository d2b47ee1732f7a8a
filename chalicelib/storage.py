"""All S3 access: ids, the key layout, presigning, listing, renditions and records. No pixels.

Layout
------
Upload bucket::

    uploads/{id}                      presigned uploads (the server picks id and key): the
                                      image's original, when the id is plausible for a grant
    uploads/<anything else>           objects put by any S3 client: an inbox. Each object is
                                      copied to its own ``originals/{id}`` and then removed
    originals/{id}                    the original of an image uploaded by any S3 client (outside
                                      the watched prefix: copying it there triggers nothing)

Images bucket, everything about one image under ``{id}/``::

    {id}/r/{name}.{w}x{h}.{v}.{ext}   a rendition of version {v} of the original (a hash of its
                                      ETag); ListObjectsV2 gives its size in bytes
    {id}/s/{status}.{fields}          the status record: status and the original's facts in
                                      the key name (base64url JSON), the full record as the body
    {id}/x/{digest}                   an on-demand render (renders.py): {digest} hashes the
                                      normalised parameters; the original's version is in its
                                      metadata. Removed with the image, and when the original is
                                      replaced; {id}/x/{digest}.lock while one is being made
    {id}/deleted                      the tombstone: the image was deleted; nothing under {id}/ is
                                      shown, and nothing is processed for it again
    ~todo/{id}                        the index of unsettled work (the reconciler's work list; a
                                      JSON body): an upload of this id has no final record yet, or
                                      its image was deleted and the tombstone is still to retire
    ~sweep                            the reconciler's orphan-sweep cursor
    ~sample/x/{digest}                renders of the bundled sample photo (``GET /sample/render``)

Listing a page therefore needs no GET or HEAD per image: one ``ListObjectsV2`` page holds
every key of about 250 images, and each key name carries what the API shows. Ids sort
newest-first as strings, so S3's lexicographic listing order is the gallery's order; ``~``
sorts after every id, so the bookkeeping keys never sit between two images.
docs/convergence.md says which invariants these keys keep and how each path keeps them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

from . import formats
from .config import Settings, aws_target, get_settings
from .errors import too_large
from .filenames import clean_filename, decode_filename, encode_filename
from .ttlcache import ExpiringCache

UPLOAD_PREFIX = "uploads/"
ORIGINALS_PREFIX = "originals/"
MARKER_PREFIX = "~todo/"
SWEEP_KEY = "~sweep"
TOMBSTONE = "deleted"
_RANK = {"pending": 0, "failed": 1, "ready": 2}  # when records coexist, the higher one holds
# How long after its id was made a presigned grant's object may still arrive: the URL's life
# (UPLOAD_URL_EXPIRES) plus this, for a slow upload's transfer and for clock skew. Until then a
# deleted image's tombstone stays, so a reused grant cannot bring it back.
GRANT_SLACK = 900
CLOCK_SKEW = 60  # seconds an id's time may be ahead of S3's clock

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


def original_key(image_id: str) -> str:
    """Where the original of an image uploaded by any S3 client is kept, owned by that image alone."""
    return f"{ORIGINALS_PREFIX}{image_id}"


def tombstone_key(image_id: str) -> str:
    return f"{image_id}/{TOMBSTONE}"


def marker_key(image_id: str) -> str:
    return f"{MARKER_PREFIX}{image_id}"


def granted_id(key: str, last_modified: datetime, settings: Settings) -> str | None:
    """The id in ``uploads/{id}`` when a presigned grant could have written the object, else None.

    A grant is made with its id and lives UPLOAD_URL_EXPIRES seconds, so its object's time is
    at most that (plus GRANT_SLACK) after the id's time, and never before it (beyond clock skew).
    Any other object whose name happens to be an id (one with a date centuries ahead would pin
    itself to the top of the gallery) is an ordinary upload and gets an id of its own.
    """
    tail = key[len(UPLOAD_PREFIX) :]
    if not key.startswith(UPLOAD_PREFIX) or not is_id(tail):
        return None
    age = (last_modified - id_created_at(tail)).total_seconds()
    return tail if -CLOCK_SKEW <= age <= settings.upload_url_expires + GRANT_SLACK else None


def derived_id(key: str, etag: str, last_modified: datetime) -> str:
    """The id of an object put under ``uploads/`` by any S3 client: made from the object itself
    (key, ETag, time), so every delivery of its event, and every racing duplicate, maps to the same
    image, while a second upload to the same key (a new time, maybe new bytes) is a new image."""
    digest = hashlib.sha256(f"{key}\0{etag}".encode("utf-8", "surrogatepass")).digest()
    return new_id(at=last_modified.timestamp(), entropy=digest[:8])


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
    # When that original was written (S3's LastModified, whole seconds): of two versions' records,
    # the newer original's is shown, whichever finished last.
    at: int | None = None
    source_key: str | None = None  # kept in the body only (keys may be 1 KiB long)
    placeholder: str | None = None  # placeholder.make(): mean colour and preview (<= 264 chars)
    # The RENDITION_FORMATS it was processed with ("webp,avif"): tools/reprocess.py redoes others.
    formats: str | None = None
    # True once the original's details (transform.identify) are in the body: GET /images/{id}/info.
    identified: bool | None = None
    details: dict[str, Any] | None = field(default=None, compare=False)  # the body only
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
    "at",
    "placeholder",
    "formats",
    "identified",
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
    if not isinstance(fields.get("at"), int | None):
        return None
    values: dict[str, Any] = {k: fields.get(k) for k in _KEY_FIELDS}
    return Record(id=image_id, status=match.group(1), **values)


def _parse_rendition_key(key: str, rest: str, size: int) -> Rendition | None:
    match = _RENDITION_KEY.fullmatch(rest)
    fmt = formats.BY_EXTENSION.get(match.group(5)) if match else None
    if not match or fmt is None or not fmt.output:
        return None
    name, width, height, version, _ = match.groups()
    return Rendition(name, key, int(width), int(height), fmt.mime, size, version)


def _parse_objects(
    image_id: str, objects: Iterable[dict[str, Any]]
) -> Iterator[tuple[str, Record | Rendition]]:
    """Each of an image's keys that is a record or a rendition, parsed (others are skipped)."""
    for obj in objects:
        rest = obj["Key"][ID_LENGTH + 1 :]
        parsed: Record | Rendition | None = None
        if rest.startswith("s/"):
            parsed = parse_record_key(image_id, rest)
        elif rest.startswith("r/"):
            parsed = _parse_rendition_key(obj["Key"], rest, obj.get("Size", 0))
        if parsed is not None:
            yield obj["Key"], parsed


def is_tombstone(key: str) -> bool:
    return key[ID_LENGTH:] == f"/{TOMBSTONE}"


def _parse_objects_any(image_id: str, objects: Iterable[dict[str, Any]]) -> bool:
    return next(_parse_objects(image_id, objects), None) is not None


def parse_image_keys(
    image_id: str, objects: Iterable[dict[str, Any]]
) -> list[tuple[str, Record | Rendition]]:
    """An image's records and renditions with their keys (other keys skipped)."""
    return list(_parse_objects(image_id, objects))


def image_records(image_id: str, objects: Iterable[dict[str, Any]]) -> list[Record]:
    """Every status record among an image's keys, whatever its version."""
    return [parsed for _, parsed in _parse_objects(image_id, objects) if isinstance(parsed, Record)]


def image_state(image_id: str, objects: Iterable[dict[str, Any]]) -> Record | None:
    """The image's state from its keys: None once it is deleted (a tombstone); else the record of
    the newest original (by its time; a final record wins over pending), with that version's
    renditions only once it is ready (the ready record is written after them)."""
    objects = list(objects)
    if any(is_tombstone(obj["Key"]) for obj in objects):
        return None
    records: list[Record] = []
    renditions: list[Rendition] = []
    for _, parsed in _parse_objects(image_id, objects):
        if isinstance(parsed, Record):
            records.append(parsed)
        else:
            renditions.append(parsed)
    if not records:
        return None
    best = max(records, key=lambda r: (r.at or 0, _RANK[r.status], r.version or ""))
    if best.status != "ready":
        return best
    renditions = [r for r in renditions if best.version in (None, r.version)]
    renditions.sort(key=lambda r: (r.width * r.height, r.name))
    return replace(best, renditions=tuple(renditions))


# --- S3 clients ------------------------------------------------------------------------


# What signs requests to a local endpoint when no credentials are configured (stage local only):
# the embedded S3 (moto) accepts any; MinIO and LocalStack want their own, set as usual.
LOCAL_CREDENTIALS = {"aws_access_key_id": "imageshelf-local", "aws_secret_access_key": "imageshelf-local"}


@lru_cache(maxsize=4)
def _client(endpoint_url: str | None, region: str | None, local: bool = False) -> Any:
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
    session = boto3.session.Session()
    if local and endpoint_url and session.get_credentials() is None:
        # `chalice local --stage local` on a laptop with no AWS set up: never on an AWS stage.
        session = boto3.session.Session(**LOCAL_CREDENTIALS)
    return session.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


def s3() -> Any:
    """The S3 client. Made on first use (never at import), for the endpoint boto3 itself would use
    (``AWS_ENDPOINT_URL``), so the same code talks to AWS, the embedded S3, MinIO or LocalStack.

    On the local stage with such an endpoint and no credentials anywhere boto3 looks (no
    ``AWS_ACCESS_KEY_ID``, no ``~/.aws``), it signs with ``LOCAL_CREDENTIALS``."""
    target = aws_target()
    local = target.s3_endpoint is not None and get_settings().stage == "local"
    return _client(target.s3_endpoint, target.region, local)


def reset_clients() -> None:
    """Forget cached clients and signed URLs (tests switch endpoints and credentials between cases)."""
    _client.cache_clear()
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


def _is_precondition(error: Exception) -> bool:
    """A conditional request whose condition did not hold (S3 answers 412), or that raced another
    conditional request on the same key (409 ConditionalRequestConflict)."""
    return _error_code(error) in ("412", "PreconditionFailed", "ConditionalRequestConflict")


# --- uploads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadObject:
    key: str
    size: int
    etag: str
    last_modified: datetime
    filename: str


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
    filename = decode_filename(meta["filename"]) if meta.get("filename") else clean_filename(key)
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


def delete_upload(key: str, settings: Settings, etag: str | None = None) -> bool:
    """Delete an object of the upload bucket; with ``etag``, only that version of it (S3's
    conditional delete), so a newer upload to the same key is never removed by mistake.
    False if it was not there, or held another version."""
    return _delete_object(settings.upload_bucket, key, etag)


def _delete_object(bucket: str, key: str, etag: str | None) -> bool:
    from botocore.exceptions import ClientError

    condition = {"IfMatch": f'"{etag}"'} if etag else {}
    try:
        s3().delete_object(Bucket=bucket, Key=key, **condition)
    except ClientError as error:
        if _is_missing(error) or _is_precondition(error):
            return False
        raise
    return True


# The tag the upload bucket's lifecycle expires originals by (tools/provision.py): set on an
# original whose processing ended ``failed``, never on a ready image's.
FAILED_TAG = ("imageshelf-state", "failed")


def tag_failed(key: str, settings: Settings, failed: bool = True) -> bool:
    """Tag the original ``key`` as one that never became an image (``failed``), or, with
    ``failed=False``, take that back (the tag's value becomes ``ready``, which no rule expires:
    one action, ``s3:PutObjectTagging``, for both).

    S3 tags whatever object is at the key now (no condition is possible): the caller checks the
    original is still the version it means afterwards. False if the object is gone."""
    from botocore.exceptions import ClientError

    tags = [{"Key": FAILED_TAG[0], "Value": FAILED_TAG[1] if failed else "ready"}]
    try:
        s3().put_object_tagging(Bucket=settings.upload_bucket, Key=key, Tagging={"TagSet": tags})
    except ClientError as error:
        if _is_missing(error):
            return False
        raise
    return True


def claim_upload(upload: UploadObject, image_id: str, settings: Settings) -> UploadObject | None:
    """Give an object put under ``uploads/`` by any S3 client an original of its own.

    Copies exactly this version of it (CopySourceIfMatch) to ``originals/{id}``, outside the
    watched prefix, so the copy triggers nothing; a copy already there (a retry, a racing
    duplicate) is the same bytes, as the id is derived from them. The object stays in ``uploads/``
    until its image has settled (``release_upload``), so a retry still finds it. Returns the owned
    original (with the upload's own time), or None if the object was replaced or removed before
    it could be copied: the replacement's own event claims it.
    """
    from botocore.exceptions import ClientError

    target = original_key(image_id)
    owned = head_upload(target, settings)
    if owned is None:
        try:
            copied = s3().copy_object(
                Bucket=settings.upload_bucket,
                Key=target,
                CopySource={"Bucket": settings.upload_bucket, "Key": upload.key},
                CopySourceIfMatch=f'"{upload.etag}"',
                IfNoneMatch="*",
                MetadataDirective="REPLACE",
                Metadata={"filename": encode_filename(upload.filename)},
            )["CopyObjectResult"]
        except ClientError as error:
            if not (_is_missing(error) or _is_precondition(error)):
                raise
            owned = head_upload(target, settings)  # copied meanwhile by a racing duplicate?
            return None if owned is None else replace(upload, key=target, etag=owned.etag)
        etag = copied["ETag"].strip('"')
        if etag != upload.etag:
            # A multipart upload's copy has a new ETag, and some S3s ignore CopySourceIfMatch:
            # make sure the inbox still holds the version that was looked at, or give the copy up.
            now = head_upload(upload.key, settings)
            if now is None or now.etag != upload.etag:
                delete_upload(target, settings, etag=etag)
                return None
        return replace(upload, key=target, etag=etag)
    # The upload's own time stays the image's: every delivery's records then have the same keys.
    return replace(upload, key=target, etag=owned.etag)


def release_upload(upload: UploadObject, settings: Settings) -> None:
    """Remove a claimed object from ``uploads/``, if it still is the version that was claimed."""
    delete_upload(upload.key, settings, etag=upload.etag)


# --- the index of unsettled work ---------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """``~todo/{id}``: an upload of this image has no final record yet."""

    image_id: str
    last_modified: datetime


def mark_unsettled(image_id: str, source_key: str, settings: Settings, attempts: int | None = None) -> None:
    """Put the image in the index of unsettled work, naming the upload to process.

    Without ``attempts`` the marker is only created (a conditional write: If-None-Match), so a
    delivery never resets the reconciler's count of its attempts; with it, it is overwritten.
    """
    from botocore.exceptions import ClientError

    body = json.dumps({"source": source_key, "attempts": attempts or 0}, ensure_ascii=False)
    condition = {} if attempts is not None else {"IfNoneMatch": "*"}
    try:
        s3().put_object(
            Bucket=settings.images_bucket,
            Key=marker_key(image_id),
            Body=body.encode("utf-8", "surrogatepass"),
            ContentType="application/json",
            **condition,
        )
    except ClientError as error:
        if not _is_precondition(error):
            raise


def read_marker(image_id: str, settings: Settings) -> dict[str, Any] | None:
    """The marker's body (``source``, ``attempts``), or None if there is none."""
    from botocore.exceptions import ClientError

    try:
        body = s3().get_object(Bucket=settings.images_bucket, Key=marker_key(image_id))["Body"].read()
    except ClientError as error:
        if _is_missing(error):
            return None
        raise
    try:
        marker = json.loads(body)
    except ValueError:
        marker = None
    return marker if isinstance(marker, dict) else {}


def clear_marker(image_id: str, settings: Settings) -> None:
    s3().delete_object(Bucket=settings.images_bucket, Key=marker_key(image_id))


def list_markers(settings: Settings) -> list[Marker]:
    """Every marker of the index: one ListObjectsV2 call per 1,000 unsettled uploads."""
    return [
        Marker(obj["Key"][len(MARKER_PREFIX) :], obj["LastModified"])
        for page in _list(settings, Prefix=MARKER_PREFIX)
        for obj in page.get("Contents", [])
        if is_id(obj["Key"][len(MARKER_PREFIX) :])
    ]


# --- renditions and records ------------------------------------------------------------


def put_rendition(
    image_id: str,
    name: str,
    data: bytes,
    size: tuple[int, int],
    version: str,
    fmt: formats.Format,
    settings: Settings,
) -> str:
    key = rendition_key(image_id, name, size[0], size[1], version, fmt.extension)
    s3().put_object(
        Bucket=settings.images_bucket,
        Key=key,
        Body=data,
        ContentType=fmt.mime,
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


def settle(
    image_id: str, version: str, settings: Settings, objects: list[dict[str, Any]] | None = None
) -> None:
    """Leave one status record, the best one for this version of the original (ready, then
    failed, then pending), and only this version's renditions.

    Every delivery calls this after writing its final record, with the image's keys as listed
    *before* it checked that its version is still the original's: any other version's keys in
    that listing were written for an original older than its own (a newer original would have
    failed the check), so whichever of several racing deliveries finishes last removes what the
    others, or an earlier version of the original, left behind, and never a newer version's keys.
    """
    records, stale = [], []
    listed = image_objects(image_id, settings) if objects is None else objects
    for key, parsed in _parse_objects(image_id, listed):
        if isinstance(parsed, Record) and parsed.version in (None, version):
            records.append((_RANK[parsed.status], key))
        elif parsed.version != version:
            stale.append(key)  # another version of the original
    if stale:  # the original was replaced: renders made from an older one go too
        stale += [obj["Key"] for obj in listed if is_render_key(obj["Key"])]
    _delete_keys(settings.images_bucket, stale + [key for _, key in sorted(records)[:-1]])


def purge_image(image_id: str, settings: Settings, objects: list[dict[str, Any]] | None = None) -> None:
    """Delete every rendition and record of an image (records last, so a retry still finds them).
    A tombstone stays, and so does the marker that has the reconciler retire it; without a
    tombstone the marker goes too."""
    keys = [o["Key"] for o in (image_objects(image_id, settings) if objects is None else objects)]
    deleted = any(is_tombstone(k) for k in keys)
    keys = [k for k in keys if not is_tombstone(k)]
    _delete_keys(
        settings.images_bucket,
        [k for k in keys if "/s/" not in k]
        + [k for k in keys if "/s/" in k]
        + ([] if deleted else [marker_key(image_id)]),
    )


def purge_version(
    image_id: str, version: str, settings: Settings, objects: list[dict[str, Any]] | None = None
) -> None:
    """Delete the renditions and records of one version of the original (a superseded delivery's)."""
    listed = image_objects(image_id, settings) if objects is None else objects
    stale = [key for key, parsed in _parse_objects(image_id, listed) if parsed.version == version]
    _delete_keys(settings.images_bucket, sorted(stale, key=lambda k: "/s/" in k))


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
    records: list[Record] = []
    judged = 0  # groups judged so far: all but the last are complete (an image's keys are contiguous)

    def judge(upto: int) -> None:
        nonlocal judged
        for image_id in list(groups)[judged:upto]:
            record = image_state(image_id, groups[image_id])  # None: deleted, or nothing to show yet
            if record:
                records.append(record)
        judged = max(judged, upto)

    for page in _list(settings, MaxKeys=_LIST_PAGE, **start):
        ended = not page.get("IsTruncated")
        for obj in page.get("Contents", []):
            image_id = obj["Key"][:ID_LENGTH]
            if is_id(image_id) and obj["Key"][ID_LENGTH : ID_LENGTH + 1] == "/":
                groups.setdefault(image_id, []).append(obj)
            elif obj["Key"] >= "~":  # the bookkeeping keys, after every image
                ended = True
                break
        judge(len(groups) if ended else len(groups) - 1)
        # A shown image after the limit-th proves there is a next page.
        if ended or len(records) > limit:
            break
    next_cursor = records[limit - 1].id if len(records) > limit else None
    return records[:limit], next_cursor


def read_record_body(record: Record, settings: Settings) -> dict[str, Any]:
    """The full record (with the original's key), from the record object's body."""
    obj = s3().get_object(Bucket=settings.images_bucket, Key=record_key(record))
    return json.loads(obj["Body"].read())


def delete_image(image_id: str, settings: Settings) -> bool:
    """Delete the image for good; False if there was nothing (or it was deleted already).

    1. The tombstone first: from then on nothing of the image is listed or shown, and no delivery,
       retry or reconciliation processes it again (a grant reused after this is refused too).
    2. The original: a delivery still at work finds it gone after its next write, and removes
       what it wrote.
    3. Everything else under ``{id}/`` but the tombstone, listed after 2, so it holds whatever a
       delivery wrote before its next check could notice 2. The reconciler removes the tombstone
       once no grant can bring the original back (docs/convergence.md).
    """
    objects = image_objects(image_id, settings)
    if any(is_tombstone(obj["Key"]) for obj in objects):
        if len(objects) > 1:  # a deletion that stopped half-way: finish it, and still say 404
            _delete_keys(settings.upload_bucket, [upload_key(image_id), original_key(image_id)])
            purge_image(image_id, settings)
            mark_unsettled(image_id, upload_key(image_id), settings)
        return False
    # Nothing listed yet: a presigned upload not processed so far (an object from any S3 client
    # gets its originals/{id} and then its records before its id is shown anywhere).
    if not _parse_objects_any(image_id, objects):
        upload = head_upload(upload_key(image_id), settings)
        if upload is None or granted_id(upload.key, upload.last_modified, settings) != image_id:
            return False
    deleted_at = datetime.now(UTC).isoformat(timespec="seconds")
    s3().put_object(
        Bucket=settings.images_bucket,
        Key=tombstone_key(image_id),
        Body=json.dumps({"deleted_at": deleted_at}).encode(),
        ContentType="application/json",
    )
    _delete_keys(settings.upload_bucket, [upload_key(image_id), original_key(image_id)])
    purge_image(image_id, settings)  # the tombstone (and a marker) stay
    # The marker has the reconciler retire the tombstone once no grant can bring the original back.
    mark_unsettled(image_id, upload_key(image_id), settings, attempts=0)
    return True


@dataclass
class Listing:
    """One ListObjectsV2 page of a key range, for the reconciler's sweep."""

    objects: list[dict[str, Any]]
    truncated: bool


def list_range(bucket: str, prefix: str, start_after: str, max_keys: int) -> Listing:
    """Up to ``max_keys`` keys under ``prefix`` after ``start_after``: one ListObjectsV2 call."""
    start = {"StartAfter": start_after} if start_after else {}
    page = s3().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max_keys, **start)
    return Listing(page.get("Contents", []), bool(page.get("IsTruncated")))


def read_sweep_cursor(settings: Settings) -> str:
    """Where the orphan sweep goes on from: the last image id it judged ('' for the start)."""
    from botocore.exceptions import ClientError

    try:
        body = s3().get_object(Bucket=settings.images_bucket, Key=SWEEP_KEY)["Body"].read()
    except ClientError as error:
        if _is_missing(error):
            return ""
        raise
    cursor = body.decode("ascii", "replace").strip()
    return cursor if is_id(cursor) else ""


def write_sweep_cursor(cursor: str, settings: Settings) -> None:
    s3().put_object(
        Bucket=settings.images_bucket, Key=SWEEP_KEY, Body=cursor.encode(), ContentType="text/plain"
    )


def delete_keys(bucket: str, keys: list[str]) -> None:
    """Delete keys, 1,000 per DeleteObjects call."""
    _delete_keys(bucket, keys)


# --- renders -----------------------------------------------------------------------------

RENDERS = "x/"
SAMPLE_OWNER = "~sample"  # the bundled sample photo's renders: bookkeeping, after every image
RENDER_LEASE_STALE = 60  # seconds after which a render's lease is taken over (its maker died)


def render_key(owner: str, digest: str) -> str:
    """Where the render ``digest`` of ``owner`` (an image id, or SAMPLE_OWNER) is cached."""
    return f"{owner}/{RENDERS}{digest}"


def is_render_key(key: str) -> bool:
    """An image's render or render lease (``{id}/x/...``)."""
    return key[ID_LENGTH : ID_LENGTH + 1 + len(RENDERS)] == f"/{RENDERS}"


def head_render(key: str, settings: Settings) -> dict[str, Any] | None:
    """The cached render's HeadObject answer (type, size, metadata), None if not cached."""
    from botocore.exceptions import ClientError

    try:
        head: dict[str, Any] = s3().head_object(Bucket=settings.images_bucket, Key=key)
    except ClientError as error:
        if _is_missing(error):
            return None
        raise
    return head


def put_render(
    key: str, data: bytes, fmt: formats.Format, meta: dict[str, str], disposition: str, settings: Settings
) -> None:
    """Store a render (``meta``: the original's version and the size, as object metadata). Same
    key, same parameters: racing writers store equivalent bytes, and S3 replaces an object
    whole, so a reader never sees a mix."""
    s3().put_object(
        Bucket=settings.images_bucket,
        Key=key,
        Body=data,
        ContentType=fmt.mime,
        ContentDisposition=disposition,
        Metadata=meta,
        # Not immutable, unlike renditions: a replaced original is rendered again under the same key.
        CacheControl="public, max-age=86400",
    )


def take_render_lease(key: str, settings: Settings, now: datetime | None = None) -> bool:
    """Try to become the one maker of a render: create ``{key}.lock`` if absent (a conditional
    PutObject), or take over a lease older than RENDER_LEASE_STALE. False: someone else has it."""
    from botocore.exceptions import ClientError

    lock = f"{key}.lock"
    for _ in range(2):
        try:
            s3().put_object(Bucket=settings.images_bucket, Key=lock, Body=b"", IfNoneMatch="*")
            return True
        except ClientError as error:
            if not _is_precondition(error):
                raise
        try:
            head = s3().head_object(Bucket=settings.images_bucket, Key=lock)
        except ClientError as error:
            if _is_missing(error):
                continue  # released meanwhile: try again
            raise
        age = ((now or datetime.now(UTC)) - head["LastModified"]).total_seconds()
        if age < RENDER_LEASE_STALE:
            return False
        # Its maker died: remove exactly that lease (another taker may have replaced it).
        if not delete_image_object(lock, settings, etag=head.get("ETag", "").strip('"')):
            return False
    return False


def release_render_lease(key: str, settings: Settings) -> None:
    delete_image_object(f"{key}.lock", settings)


def delete_image_object(key: str, settings: Settings, etag: str | None = None) -> bool:
    """Delete one key of the images bucket (only that version of it with ``etag``); False if
    it was not there, or held another version."""
    return _delete_object(settings.images_bucket, key, etag)


def read_image_object(key: str, settings: Settings, limit: int) -> bytes:
    """An object of the images bucket (a rendition), read no further than ``limit`` bytes."""
    body = s3().get_object(Bucket=settings.images_bucket, Key=key)["Body"]
    try:
        data = body.read(limit + 1)
    finally:
        body.close()
    if len(data) > limit:
        raise too_large(len(data), limit)
    return data


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
    # Other credentials (Lambda's are fixed for an instance's life; tests switch users) or another
    # endpoint sign other URLs.
    target = aws_target()
    cache_key = (settings.images_bucket, key, settings.download_url_expires, target.access_key_id,
                 target.s3_endpoint)  # fmt: skip
    url = _signed.get(cache_key, settings.download_url_expires / 2)
    if url is None:
        url = _signed.put(
            cache_key,
            s3().generate_presigned_url(
                "get_object",
                Params={"Bucket": settings.images_bucket, "Key": key},
                ExpiresIn=settings.download_url_expires,
            ),
        )
    return url


# Presigned rendition URLs by (bucket, key, lifetime, signer): 0.5-1.5 KB each (a session token
# makes them longer).
_signed: ExpiringCache[str] = ExpiringCache(max_entries=4096)


def endpoint_urls(settings: Settings) -> dict[str, str]:
    """Where browsers reach S3: ``upload``, the URL presigned POSTs go to, and ``image``, the base
    URL renditions are served from (the public/CDN base, or the images bucket's own URL)."""
    upload = s3().generate_presigned_post(Bucket=settings.upload_bucket, Key=upload_key("x"))["url"]
    probe = f"{'0' * ID_LENGTH}/r/x.1x1.jpg"  # quote() leaves it as is
    image = urlsplit(rendition_url(probe, settings))
    return {"upload": upload, "image": f"{image.scheme}://{image.netloc}{image.path.removesuffix(probe)}"}
