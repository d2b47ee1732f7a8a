"""Who may delete: the admin bearer token, from ``ADMIN_TOKEN`` or an SSM SecureString.

Locally the token is an environment variable. On AWS it lives in SSM Parameter Store
(``ADMIN_TOKEN_PARAMETER``), so it is neither in git nor in the Lambda configuration; the API
function may read that one parameter and nothing else. It is read when a delete presents a token
and kept for ``TOKEN_TTL`` seconds, so a rotated token takes effect within minutes, with no
deploy, and SSM sees at most one read per API instance per ``TOKEN_TTL`` (``MISSING_TTL`` while
the parameter does not exist), however many deletes are attempted.
"""

from __future__ import annotations

import hmac
import logging

from .config import Settings, aws_target
from .errors import ImageshelfError
from .ttlcache import ExpiringCache

TOKEN_TTL = 300.0
MISSING_TTL = 60.0
_MISSING = ""  # cached for a parameter that does not exist (SSM refuses empty values)

log = logging.getLogger("imageshelf.auth")

# Tokens by parameter name; _MISSING for a parameter that does not exist (re-read sooner).
_cache: ExpiringCache[str] = ExpiringCache(max_entries=16)


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
    token = _cache.get(name, lambda value: TOKEN_TTL if value else MISSING_TTL)
    if token is None:
        try:
            token = _cache.put(name, _read_parameter(name))
        except Exception:
            last = _cache.stale(name)
            if not last:
                raise
            # SSM throttled or failed: the last token read stays good until SSM answers again.
            log.warning("could not read SSM parameter %s; using the token read before", name, exc_info=True)
            return last
    if not token:
        log.warning("deletion refused: SSM parameter %s does not exist or is empty", name)
        raise ImageshelfError(
            "forbidden",
            "Deletion is not set up yet: no admin token is stored for this stage. "
            "Its operator runs `make admin-token STAGE=<stage>`.",
        )
    return token


def reset_cache() -> None:
    """Forget fetched tokens (tests switch parameter stores between cases)."""
    _cache.clear()


def _read_parameter(name: str) -> str:
    """The parameter's value, stripped, or ``_MISSING`` if it does not exist."""
    import boto3
    from botocore.config import Config

    # A new session and client per read (boto3's default session is not thread-safe): reads are
    # rare, and credentials or endpoints (tests, the local stack) may have changed since the last.
    # Few, short attempts: the API function has 15 s in all.
    ssm = boto3.session.Session().client(
        "ssm",
        region_name=aws_target().region,
        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=3),
    )
    try:
        value = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return _MISSING
    return value.strip()  # `aws ssm put-parameter --value file://token.txt` keeps the newline
