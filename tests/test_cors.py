"""CORS on the JSON API for the stage's ALLOWED_ORIGINS (chalicelib/http.py), through Chalice's
test client: the preflight Chalice answers itself, and the answers the middleware fits to the
request's Origin. A page on a listed origin may read answers; no other origin gets CORS headers.
The browser's own verdict is in tests/test_browser_cors.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice import CORSConfig

from chalicelib import http
from chalicelib.config import Settings

# The local stage's ALLOWED_ORIGINS (.chalice/config.json), which Chalice's test client applies
# during each request, over the test's own environment.
A, B, OTHER = "http://127.0.0.1:8000", "http://localhost:8000", "https://evil.example"


@pytest.fixture
def two_origins() -> None:
    from chalicelib.config import get_settings

    assert get_settings().allowed_origins == (A, B)  # the default, as the local stage sets it


def settings_with(monkeypatch: pytest.MonkeyPatch, origins: tuple[str, ...]) -> None:
    """ALLOWED_ORIGINS as the middleware reads it for a request (the stage's value wins otherwise)."""
    monkeypatch.setattr(http, "get_settings", lambda: Settings(allowed_origins=origins))


@pytest.mark.parametrize("origin", [A, B])
def test_a_listed_origin_is_named_in_the_answer(client: Any, two_origins: None, origin: str) -> None:
    response = client.http.get("/images", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.headers["Vary"]


def test_another_origin_gets_no_cors_headers(client: Any, two_origins: None) -> None:
    response = client.http.get("/images", headers={"Origin": OTHER})
    assert response.status_code == 200
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert "Origin" in response.headers["Vary"]  # a cache must not give it a listed origin's answer


def test_no_origin_header_gets_no_allow_origin(client: Any, two_origins: None) -> None:
    assert "Access-Control-Allow-Origin" not in client.http.get("/ping").headers


def test_an_upload_grant_exposes_its_location_to_a_listed_origin(client: Any, two_origins: None) -> None:
    response = client.http.post(
        "/uploads",
        headers={"Origin": A, "Content-Type": "application/json"},
        body=json.dumps({"filename": "cat.jpg", "content_type": "image/jpeg"}),
    )
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == A
    assert "Location" in response.headers["Access-Control-Expose-Headers"].split(",")


def test_errors_carry_cors_too_so_the_page_can_read_them(client: Any, two_origins: None) -> None:
    refused = client.http.post(
        "/uploads", headers={"Origin": B, "Content-Type": "application/json"}, body=b"{}"
    )
    assert refused.status_code == 400
    assert refused.headers["Access-Control-Allow-Origin"] == B
    missing = client.http.get("/images/" + "0" * 26, headers={"Origin": B})
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == B


def preflight(path: str, method: str, headers: str = "") -> dict[str, str]:
    """The preflight answer of ``chalice local`` (Chalice's test client cannot read one: no body)."""
    from chalice.config import Config
    from chalice.local import LocalGateway

    from app import app

    request = {"Origin": A, "Access-Control-Request-Method": method}
    if headers:
        request["Access-Control-Request-Headers"] = headers
    answer = LocalGateway(app, Config()).handle_request("OPTIONS", path, request, None)
    assert answer["statusCode"] == 200
    return dict(answer["headers"])


def test_the_preflight_allows_the_methods_and_headers_the_api_needs() -> None:
    # app.py was imported with the default origins (two): the fixed preflight says "*".
    answer = preflight("/images/x", "DELETE", "authorization")
    assert answer["Access-Control-Allow-Origin"] == "*"
    assert set(answer["Access-Control-Allow-Methods"].split(",")) >= {"GET", "DELETE"}
    allowed = {h.lower() for h in answer["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in preflight("/uploads", "POST", "content-type")["Access-Control-Allow-Methods"]


def test_the_gallery_page_and_its_assets_declare_no_cors(client: Any, two_origins: None) -> None:
    page = client.http.get("/", headers={"Origin": A})
    assert "Access-Control-Allow-Origin" not in page.headers


def test_no_allowed_origins_means_no_cors(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, ())
    response = client.http.get("/images", headers={"Origin": A})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_an_empty_allowed_origins_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.config import get_settings

    monkeypatch.setenv("ALLOWED_ORIGINS", "")  # the AWS stages' "": no other origin, not the default
    assert get_settings().allowed_origins == ()


def test_cors_config_follows_the_number_of_origins() -> None:
    assert http.cors_config(Settings(allowed_origins=())) is None  # no preflight routes at all
    one = http.cors_config(Settings(allowed_origins=(A,)))
    assert isinstance(one, CORSConfig) and one.allow_origin == A
    several = http.cors_config(Settings(allowed_origins=(A, B)))
    assert several is not None and several.allow_origin == "*"
    headers = several.get_access_control_headers()
    assert headers["Access-Control-Expose-Headers"] == "Location"


def test_a_star_origin_allows_every_origin(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, ("*",))
    assert client.http.get("/ping", headers={"Origin": OTHER}).headers["Access-Control-Allow-Origin"] == "*"


SWAGGER = """
import json, sys
from chalice.deploy.swagger import SwaggerGenerator
from app import app
arn = {"api_handler_arn": "arn:aws:lambda:us-east-1:123456789012:function:imageshelf-dev"}
document = SwaggerGenerator("us-east-1", arn).generate_swagger(app)
print(json.dumps({
    path: methods["options"]["x-amazon-apigateway-integration"]["responses"]["default"]["responseParameters"]
    for path, methods in document["paths"].items() if "options" in methods
}))
"""


def api_gateway_preflights(allowed_origins: str) -> dict[str, dict[str, str]]:
    """The preflight API Gateway would answer per path (Chalice's Swagger, MOCK integration), for
    the app imported as ``chalice deploy`` imports it: with the stage's variables set."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "ALLOWED_ORIGINS": allowed_origins, "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run(
        [sys.executable, "-c", SWAGGER], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return {
        path: {k.removeprefix("method.response.header."): v.strip("'") for k, v in headers.items()}
        for path, headers in json.loads(found.stdout).items()
    }


def test_api_gateway_preflight_is_fixed_at_deploy_from_the_stage_origins() -> None:
    one = api_gateway_preflights("https://a.example")
    assert set(one) == {
        "/ping",
        "/openapi.json",
        "/uploads",
        "/images",
        "/images/{image_id}",
        "/images/{image_id}/render",
        "/images/{image_id}/info",
        "/sample/render",
        "/sample/info",
    }  # not the gallery
    assert {h["Access-Control-Allow-Origin"] for h in one.values()} == {"https://a.example"}
    assert set(one["/images/{image_id}"]["Access-Control-Allow-Methods"].split(",")) == {
        "GET",
        "DELETE",
        "OPTIONS",
    }
    assert "Authorization" in one["/uploads"]["Access-Control-Allow-Headers"].split(",")
    several = api_gateway_preflights("https://a.example,https://b.example")
    assert {h["Access-Control-Allow-Origin"] for h in several.values()} == {"*"}
    assert api_gateway_preflights("") == {}  # the dev and prod stages as shipped: no preflight routes
