"""Settings: defaults, parsing and errors that name the variable."""

from __future__ import annotations

import pytest

from chalicelib.config import ConfigError, Settings, get_settings, parse_renditions


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "UPLOAD_BUCKET",
        "IMAGES_BUCKET",
        "MAX_UPLOAD_BYTES",
        "RENDITIONS",
        "ADMIN_TOKEN",
        "ADMIN_TOKEN_PARAMETER",
        "DELETE_ORIGINALS",
        "ALLOWED_ORIGINS",
        "MAX_PIXELS",
        "PENDING_TIMEOUT",
        "PUBLIC_BASE_URL",
        "UPLOAD_URL_EXPIRES",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_local_stage() -> None:
    settings = get_settings()
    assert settings == Settings()
    assert settings.upload_bucket == "imageshelf-local-uploads"
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.renditions == (("thumb", (400, 400)), ("large", (1600, 1600)))
    assert not settings.deletion_enabled


def test_environment_overrides_are_read_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "1_000")
    monkeypatch.setenv("DELETE_ORIGINALS", "Yes")
    monkeypatch.setenv("ADMIN_TOKEN", "t")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://shelf.example.com/, http://localhost:3000")
    settings = get_settings()
    assert settings.max_upload_bytes == 1000
    assert settings.delete_originals and settings.deletion_enabled
    assert settings.allowed_origins == ("https://shelf.example.com", "http://localhost:3000")
    monkeypatch.delenv("MAX_UPLOAD_BYTES")
    assert get_settings().max_upload_bytes == 20 * 1024 * 1024


def test_parse_renditions() -> None:
    assert parse_renditions("thumb:400x400, large:1600x1600") == (
        ("thumb", (400, 400)),
        ("large", (1600, 1600)),
    )
    assert parse_renditions("sq:64x64") == (("sq", (64, 64)),)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "thumb",
        "thumb:400",
        "thumb:0x10",
        "thumb:axb",
        "a:1x1,a:2x2",
        "Thumb:1x1",
        "t:²x400",
        "t:400x400,",
    ],
)
def test_bad_renditions_are_refused_with_the_variable_named(spec: str) -> None:
    with pytest.raises(ConfigError, match="RENDITIONS"):
        parse_renditions(spec)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_UPLOAD_BYTES", "lots"),
        ("MAX_UPLOAD_BYTES", "0"),
        ("MAX_PIXELS", "-5"),
        ("DELETE_ORIGINALS", "maybe"),
        ("UPLOAD_BUCKET", "Bad_Bucket"),
        ("ALLOWED_ORIGINS", "example.com"),
        ("PENDING_TIMEOUT", "1"),
        ("PENDING_TIMEOUT", "300"),
        ("PUBLIC_BASE_URL", "cdn.example.com"),
        ("PUBLIC_BASE_URL", "https://a b"),
        ("ADMIN_TOKEN_PARAMETER", "imageshelf/prod/admin-token"),
        ("ADMIN_TOKEN_PARAMETER", "/imageshelf/prod/admin token"),
        ("ADMIN_TOKEN_PARAMETER", "/" + "a" * 1011),
        ("ADMIN_TOKEN_PARAMETER", "/aws/imageshelf/token"),
        ("ADMIN_TOKEN_PARAMETER", "/SSM-token"),
        ("ADMIN_TOKEN_PARAMETER", "/a" * 16),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        get_settings()


def test_a_cdn_base_url_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://d111111abcdef8.cloudfront.net/shelf/")
    assert get_settings().public_base_url == "https://d111111abcdef8.cloudfront.net/shelf"


def test_the_admin_token_may_live_in_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN_PARAMETER", "/imageshelf/prod/admin-token")
    settings = get_settings()
    assert settings.admin_token_parameter == "/imageshelf/prod/admin-token"
    assert settings.deletion_enabled and not settings.admin_token


def test_one_admin_token_source_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN_PARAMETER", "/imageshelf/prod/admin-token")
    monkeypatch.setenv("ADMIN_TOKEN", "t")
    with pytest.raises(ConfigError, match="ADMIN_TOKEN and ADMIN_TOKEN_PARAMETER"):
        get_settings()
