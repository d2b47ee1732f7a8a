"""Settings: every environment variable imageshelf reads, its default and validation.

Nothing else in the app reads ``os.environ``: the app's own settings are in ``Settings``, and
the AWS SDK's few variables the app needs to know about (region, endpoint, signing key id) in
``aws_target()``. Both are read per call rather than at import, because Chalice (and its test
client) applies a stage's environment variables only while a request or event is being handled.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from .operations import Spec, default_presets, parse_presets

MIB = 1024 * 1024

_ENV_NAMES = (
    "STAGE",
    "UPLOAD_BUCKET",
    "IMAGES_BUCKET",
    "MAX_UPLOAD_BYTES",
    "MAX_PIXELS",
    "MAX_FRAMES",
    "RENDITIONS",
    "RENDITION_FORMATS",
    "UPLOAD_URL_EXPIRES",
    "DOWNLOAD_URL_EXPIRES",
    "PUBLIC_BASE_URL",
    "ADMIN_TOKEN",
    "ADMIN_TOKEN_PARAMETER",
    "UPLOAD_TOKEN",
    "UPLOAD_TOKEN_PARAMETER",
    "PENDING_TIMEOUT",
    "DELETE_ORIGINALS",
    "ALLOWED_ORIGINS",
    "RESIZE_DLQ_URL",
    "RECONCILE_GRACE",
    "RECONCILE_ATTEMPTS",
    "RECONCILE_BATCH",
    "RECONCILE_SWEEP_KEYS",
    "RENDER_PRESETS",
    "RENDER_SIGNING_KEY",
    "RENDER_SIGNING_KEY_PARAMETER",
)

_RENDITION = re.compile(r"^([a-z][a-z0-9_-]{0,31}):([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")


class ConfigError(ValueError):
    """A setting has a value imageshelf cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    stage: str = "local"
    upload_bucket: str = "imageshelf-local-uploads"
    images_bucket: str = "imageshelf-local-images"
    max_upload_bytes: int = 20 * MIB
    max_pixels: int = 50_000_000
    max_frames: int = 500
    renditions: tuple[tuple[str, tuple[int, int]], ...] = (
        ("thumb", (400, 400)),
        ("large", (1600, 1600)),
    )
    # Formats each still rendition is also written in, beside its JPEG (opaque) or PNG/WebP
    # (transparent), when smaller: Pillow format names, from RENDITION_FORMATS=jpeg,webp,avif.
    rendition_formats: tuple[str, ...] = ("WEBP", "AVIF")
    upload_url_expires: int = 300
    download_url_expires: int = 3600
    public_base_url: str = ""
    admin_token: str = ""
    admin_token_parameter: str = ""
    # Uploads need ``Authorization: Bearer <upload token>`` (or the admin token) when either is set.
    upload_token: str = ""
    upload_token_parameter: str = ""
    pending_timeout: int = 900
    delete_originals: bool = False
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8000", "http://localhost:8000")
    # The reconciler (docs/convergence.md): the resize function's dead-letter queue to drain (none:
    # nothing to drain); how long an unsettled upload is left to its own delivery before it is
    # processed again; how many times, before it is recorded as failed (processing_timeout); how
    # many uploads one run processes; how many images-bucket keys one run's orphan sweep reads.
    resize_dlq_url: str = ""
    reconcile_grace: int = 120
    reconcile_attempts: int = 3
    reconcile_batch: int = 10
    reconcile_sweep_keys: int = 1000
    # On-demand renders (operations.py): the named presets anyone may ask for (the defaults plus
    # RENDER_PRESETS), and the key other parameter sets must be signed with ("": none needed).
    render_presets: tuple[tuple[str, Spec], ...] = tuple(default_presets().items())
    render_signing_key: str = ""
    render_signing_key_parameter: str = ""

    @property
    def deletion_enabled(self) -> bool:
        return bool(self.admin_token or self.admin_token_parameter)

    @property
    def upload_token_required(self) -> bool:
        return bool(self.upload_token or self.upload_token_parameter)

    @property
    def render_signing_required(self) -> bool:
        return bool(self.render_signing_key or self.render_signing_key_parameter)


def get_settings() -> Settings:
    """The settings in force now, read from the environment (cached per environment)."""
    return _settings_from(tuple(os.environ.get(name) for name in _ENV_NAMES))


@dataclass(frozen=True)
class AwsTarget:
    """Where the AWS SDK sends requests, as boto3 itself reads it from the environment."""

    region: str
    s3_endpoint: str | None  # AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL: the embedded S3, MinIO, ...
    access_key_id: str | None  # who signs: presigned URLs signed by other credentials differ


def aws_target() -> AwsTarget:
    """The region, S3 endpoint and access key id in force now."""
    env = os.environ
    return AwsTarget(
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        s3_endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
    )


def upload_bucket_name() -> str:
    """The upload bucket, for the S3 event decorator, which Chalice reads at import."""
    return get_settings().upload_bucket


@lru_cache(maxsize=8)
def _settings_from(values: tuple[str | None, ...]) -> Settings:
    env = {name: value for name, value in zip(_ENV_NAMES, values, strict=True) if value not in (None, "")}
    defaults = Settings()
    settings = Settings(
        stage=env.get("STAGE", defaults.stage),
        upload_bucket=_bucket(env, "UPLOAD_BUCKET", defaults.upload_bucket),
        images_bucket=_bucket(env, "IMAGES_BUCKET", defaults.images_bucket),
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", defaults.max_upload_bytes, 1, 5 * 1024 * MIB),
        max_pixels=_int(env, "MAX_PIXELS", defaults.max_pixels, 1, 1_000_000_000),
        max_frames=_int(env, "MAX_FRAMES", defaults.max_frames, 1, 100_000),
        renditions=parse_renditions(env["RENDITIONS"]) if "RENDITIONS" in env else defaults.renditions,
        rendition_formats=parse_rendition_formats(env["RENDITION_FORMATS"])
        if "RENDITION_FORMATS" in env
        else defaults.rendition_formats,
        upload_url_expires=_int(env, "UPLOAD_URL_EXPIRES", defaults.upload_url_expires, 10, 3600),
        download_url_expires=_int(
            env, "DOWNLOAD_URL_EXPIRES", defaults.download_url_expires, 60, 7 * 24 * 3600
        ),
        public_base_url=_base_url(env, "PUBLIC_BASE_URL"),
        admin_token=env.get("ADMIN_TOKEN", ""),
        admin_token_parameter=_parameter_name(env, "ADMIN_TOKEN_PARAMETER"),
        upload_token=env.get("UPLOAD_TOKEN", ""),
        upload_token_parameter=_parameter_name(env, "UPLOAD_TOKEN_PARAMETER"),
        pending_timeout=_int(env, "PENDING_TIMEOUT", defaults.pending_timeout, 10, 7 * 24 * 3600),
        delete_originals=_bool(env, "DELETE_ORIGINALS", defaults.delete_originals),
        # Set but empty (the AWS stages' "ALLOWED_ORIGINS": ""): no other origin, not the default.
        allowed_origins=()
        if values[_ENV_NAMES.index("ALLOWED_ORIGINS")] == ""
        else _origins(env, "ALLOWED_ORIGINS", defaults.allowed_origins),
        resize_dlq_url=_queue_url(env, "RESIZE_DLQ_URL"),
        reconcile_grace=_int(env, "RECONCILE_GRACE", defaults.reconcile_grace, 0, 24 * 3600),
        reconcile_attempts=_int(env, "RECONCILE_ATTEMPTS", defaults.reconcile_attempts, 1, 100),
        reconcile_batch=_int(env, "RECONCILE_BATCH", defaults.reconcile_batch, 1, 1000),
        # One ListObjectsV2 call returns at most 1,000 keys.
        reconcile_sweep_keys=_int(env, "RECONCILE_SWEEP_KEYS", defaults.reconcile_sweep_keys, 10, 1000),
        render_presets=_presets(env, "RENDER_PRESETS", defaults.render_presets),
        render_signing_key=env.get("RENDER_SIGNING_KEY", ""),
        render_signing_key_parameter=_parameter_name(env, "RENDER_SIGNING_KEY_PARAMETER"),
    )
    if settings.admin_token and settings.admin_token_parameter:
        raise ConfigError(
            "ADMIN_TOKEN and ADMIN_TOKEN_PARAMETER are both set: keep one (the parameter on AWS, "
            "so the token is not in .chalice/config.json)"
        )
    if settings.render_signing_key and settings.render_signing_key_parameter:
        raise ConfigError(
            "RENDER_SIGNING_KEY and RENDER_SIGNING_KEY_PARAMETER are both set: keep one (the "
            "parameter on AWS, so the key is not in .chalice/config.json)"
        )
    if settings.upload_token and settings.upload_token_parameter:
        raise ConfigError(
            "UPLOAD_TOKEN and UPLOAD_TOKEN_PARAMETER are both set: keep one (the parameter on AWS, "
            "so the token is not in .chalice/config.json)"
        )
    # An upload may start at the last second of its URL's life: only then can it be late.
    if settings.pending_timeout <= settings.upload_url_expires + 60:
        raise ConfigError(
            f"PENDING_TIMEOUT: {settings.pending_timeout}s would report uploads as timed out while "
            f"they may still be arriving; make it more than UPLOAD_URL_EXPIRES + 60 "
            f"({settings.upload_url_expires + 60}s)"
        )
    return settings


def parse_renditions(spec: str) -> tuple[tuple[str, tuple[int, int]], ...]:
    """Parse ``"thumb:400x400,large:1600x1600"`` into ``(("thumb", (400, 400)), ...)``."""
    result: list[tuple[str, tuple[int, int]]] = []
    for part in spec.split(","):
        match = _RENDITION.match(part.strip())
        if not match:
            raise ConfigError(
                f"RENDITIONS: {part.strip()!r} is not NAME:WIDTHxHEIGHT "
                "(lowercase name, sizes 1..99999), e.g. thumb:400x400,large:1600x1600"
            )
        name, width, height = match.group(1), int(match.group(2)), int(match.group(3))
        if any(name == seen for seen, _ in result):
            raise ConfigError(f"RENDITIONS: the name {name!r} appears twice")
        result.append((name, (width, height)))
    return tuple(result)


def parse_rendition_formats(spec: str) -> tuple[str, ...]:
    """``"jpeg,webp,avif"`` -> ``("WEBP", "AVIF")``: the formats written beside the JPEG/PNG,
    which is always written (naming it, or only it, is allowed: ``jpeg`` turns the others off)."""
    names = [part.strip().lower() for part in spec.split(",") if part.strip()]
    for name in names:
        if name not in _RENDITION_FORMATS:
            raise ConfigError(
                f"RENDITION_FORMATS: {name!r} is not one of {', '.join(_RENDITION_FORMATS)} "
                "(e.g. jpeg,webp,avif; the JPEG or PNG is always written)"
            )
    return tuple(dict.fromkeys(_RENDITION_FORMATS[n] for n in names if _RENDITION_FORMATS[n]))


_RENDITION_FORMATS = {"jpeg": "", "png": "", "webp": "WEBP", "avif": "AVIF"}


def _presets(
    env: dict[str, str], name: str, default: tuple[tuple[str, Spec], ...]
) -> tuple[tuple[str, Spec], ...]:
    if name not in env:
        return default
    try:
        added = parse_presets(env[name])
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    return tuple((dict(default) | added).items())


def _base_url(env: dict[str, str], name: str) -> str:
    value = env.get(name, "").rstrip("/")
    if value and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[^\s;,]*)?", value):
        raise ConfigError(f"{name}: {value!r} is not a base URL like https://cdn.example.com")
    return value


def _parameter_name(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        return value
    # SSM's rules: at most 15 levels, no aws/ssm prefix, 1011 characters with the ARN (which
    # takes up to about 65). Hierarchical, so the IAM policy grants exactly arn:...:parameter/<name>.
    levels = value.split("/")[1:]
    if (
        len(value) > 940
        or len(levels) > 15
        or not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", value)
        or levels[0].lower().startswith(("aws", "ssm"))
    ):
        raise ConfigError(f"{name}: {value!r} is not an SSM parameter name like /imageshelf/prod/admin-token")
    return value


def _queue_url(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if value and not _QUEUE_URL.fullmatch(value):
        raise ConfigError(f"{name}: {value!r} is not an SQS queue URL like {_QUEUE_EXAMPLE}")
    return value


_QUEUE_URL = re.compile(r"https?://[A-Za-z0-9.:-]+/[0-9]{1,12}/[A-Za-z0-9_-]{1,80}(\.fifo)?")
_QUEUE_EXAMPLE = "https://sqs.eu-west-1.amazonaws.com/123456789012/imageshelf-prod-resize-dlq"


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not true or false")


def _bucket(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
        raise ConfigError(f"{name}: {value!r} is not a valid S3 bucket name")
    return value


def _origins(env: dict[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin like https://example.com")
    return origins
