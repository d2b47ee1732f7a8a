"""Who may delete: the admin bearer token, from ``ADMIN_TOKEN`` or an SSM SecureString.

Locally the token is an environment variable. On AWS it lives in SSM Parameter Store
(``ADMIN_TOKEN_PARAMETER``), so it is neither in git nor in the Lambda configuration; the API
function may read that one parameter and nothing else. It is read when a delete presents a token
and kept for ``TOKEN_TTL`` seconds, so a rotated token takes effect within minutes, with no
deploy.
"""

from __future__ import annotations

import hmac
import os
import threading
import time

from .config import Settings
from .errors import ImageshelfError

TOKEN_TTL = 300.0

_cache: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


def require_admin(authorization: str | None, settings: Settings) -> None:
    """Raise ``forbidden`` or ``unauthorized`` unless ``authorization`` is ``Bearer <admin token>``."""
    if not settings.deletion_enabled:
        raise ImageshelfError(
            "forbidden",
            "Deletion is disabled: set ADMIN_TOKEN (or, on AWS, ADMIN_TOKEN_PARAMETER) to enable it.",
        )
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ImageshelfError("unauthorized", "Send 'Authorization: Bearer <admin token>' to delete images.")
    if not hmac.compare_digest(presented.strip().encode(), admin_token(settings).encode()):
        raise ImageshelfError("forbidden", "That token is not the admin token.")


def admin_token(settings: Settings) -> str:
    """The admin token in force: ``ADMIN_TOKEN``, or the SSM parameter's value (cached)."""
    if settings.admin_token:
        return settings.admin_token
    name = settings.admin_token_parameter
    now = time.monotonic()
    with _lock:
        cached = _cache.get(name)
    if cached and now - cached[1] < TOKEN_TTL:
        return cached[0]
    token = _read_parameter(name)
    with _lock:
        _cache[name] = (token, now)
    return token


def reset_cache() -> None:
    """Forget fetched tokens (tests switch parameter stores between cases)."""
    with _lock:
        _cache.clear()


def _read_parameter(name: str) -> str:
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # A client per miss, not per process: misses are one per TOKEN_TTL, and credentials or
    # endpoints (tests, the local stack) may have changed since the last one.
    ssm = boto3.client(
        "ssm",
        region_name=region,
        config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=10),
    )
    try:
        value = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise ImageshelfError(
            "forbidden",
            f"Deletion is disabled: the SSM parameter {name} does not exist yet. "
            "Create it with `make admin-token STAGE=<stage>`.",
        ) from None
    token = value.strip()  # `aws ssm put-parameter --value file://token.txt` keeps the newline
    if not token:
        raise ImageshelfError("forbidden", f"Deletion is disabled: the SSM parameter {name} is empty.")
    return token
