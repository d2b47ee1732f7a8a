"""Who may delete, and who may upload: bearer tokens from the environment or SSM SecureStrings.

Two tokens, read the same way:

- the admin token (``ADMIN_TOKEN``, or on AWS the parameter ``ADMIN_TOKEN_PARAMETER``) deletes;
  without one, deletion is off;
- the upload token (``UPLOAD_TOKEN`` / ``UPLOAD_TOKEN_PARAMETER``), when set, is needed for
  ``POST /uploads``; without one, uploads are open (the local stage's default). The admin token
  is accepted for uploads too: whoever may delete images may add them.

Locally a token is an environment variable. On AWS it lives in SSM Parameter Store, so it is
neither in git nor in the Lambda configuration; the API function may read those parameters and
nothing else. A parameter is read when a request presents a token and kept for ``TOKEN_TTL``
seconds, so a rotated token takes effect within minutes, with no deploy, and SSM sees at most one
read per parameter per API instance per ``TOKEN_TTL`` (``MISSING_TTL`` while the parameter does
not exist), however many requests are made.
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
    if not _matches(presented.strip(), admin_token(settings)):
        raise ImageshelfError("forbidden", "That token is not the admin token.")


def require_uploader(authorization: str | None, settings: Settings) -> None:
    """Raise ``unauthorized`` or ``forbidden`` unless uploads are open (no upload token set) or
    ``authorization`` is ``Bearer <upload token>`` or ``Bearer <admin token>``."""
    if not settings.upload_token_required:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise ImageshelfError(
            "unauthorized", "Uploads need a token here: send 'Authorization: Bearer <upload token>'."
        )
    expected = upload_token(settings)
    if _matches(presented, expected):
        return
    if settings.deletion_enabled:
        try:
            if _matches(presented, admin_token(settings)):
                return
        except ImageshelfError:  # no admin token stored yet: only the upload token counts
            pass
    if not expected:
        raise ImageshelfError(
            "forbidden",
            "Uploads need a token here, and none is stored for this stage yet: "
            "its operator runs `make upload-token STAGE=<stage>`.",
        )
    raise ImageshelfError("forbidden", "That token is not the upload token (nor the admin token).")


def admin_token(settings: Settings) -> str:
    """The admin token in force: ``ADMIN_TOKEN``, or the SSM parameter's value (cached)."""
    token = _token(settings.admin_token, settings.admin_token_parameter)
    if not token:
        log.warning(
            "deletion refused: SSM parameter %s does not exist or is empty", settings.admin_token_parameter
        )
        raise ImageshelfError(
            "forbidden",
            "Deletion is not set up yet: no admin token is stored for this stage. "
            "Its operator runs `make admin-token STAGE=<stage>`.",
        )
    return token


def upload_token(settings: Settings) -> str:
    """The upload token in force: ``UPLOAD_TOKEN``, or the SSM parameter's value (cached).

    While the parameter does not exist uploads stay closed (``""`` matches no token): a stage
    that asks for an upload token never falls open because the token is missing.
    """
    token = _token(settings.upload_token, settings.upload_token_parameter)
    if not token:
        log.warning(
            "upload token not set: SSM parameter %s does not exist or is empty",
            settings.upload_token_parameter,
        )
    return token


def render_signing_key(settings: Settings) -> str:
    """The key on-demand renders are signed with (``RENDER_SIGNING_KEY``, or the SSM parameter's
    value, cached); ``""`` when the stage has none, or its parameter does not exist yet."""
    if not settings.render_signing_required:
        return ""
    key = _token(settings.render_signing_key, settings.render_signing_key_parameter)
    if not key and settings.render_signing_key_parameter:
        log.warning("render signing key not set: SSM parameter %s does not exist or is empty",
                    settings.render_signing_key_parameter)  # fmt: skip
    return key


def _matches(presented: str, token: str) -> bool:
    return bool(token) and hmac.compare_digest(presented.encode(), token.encode())


def _token(value: str, name: str) -> str:
    """``value`` if set, else SSM parameter ``name``'s value (cached), ``""`` if it does not exist."""
    if value:
        return value
    token = _cache.get(name, lambda found: TOKEN_TTL if found else MISSING_TTL)
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
    # Few, short attempts: the API function has 28 s in all.
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
