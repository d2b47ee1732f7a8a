"""openapi.yaml: a valid OpenAPI 3.1 document, served as JSON, that describes what the app answers.

The route tests here send requests through Chalice's test client (moto behind it) and check
each answer, success and error alike, against the document's schema for that status.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from chalicelib import errors, formats, openapi, storage
from chalicelib.config import Settings
from tests.support import UPLOAD_BUCKET, jpeg, post_upload, process

DOC = openapi.from_yaml()
BASE = "urn:imageshelf:openapi"
REGISTRY = Registry().with_resource(BASE, Resource(DOC, specification=DRAFT202012))
JSON = {"Content-Type": "application/json"}
# Browser-facing routes, not part of the JSON API (see info.description).
NOT_IN_THE_API = {("/", "GET"), ("/static/{name}", "GET")}


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def schema_errors(path: str, method: str, status: int, body: Any) -> list[str]:
    """Why ``body`` does not match the document's schema for this answer ([] if it does)."""
    responses = DOC["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not document {status}"
    response = responses[str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    if "content" not in response:
        return [] if body in (b"", "", None) else [f"{status} has no body, got {body!r}"]
    # Follow the answer's own location, so the $refs inside resolve against the document.
    ref = "#/" + _pointer(
        "paths", path, method.lower(), "responses", str(status), "content", "application/json", "schema"
    )
    if "$ref" in responses[str(status)]:
        name = responses[str(status)]["$ref"].rsplit("/", 1)[-1]
        ref = "#/" + _pointer("components", "responses", name, "content", "application/json", "schema")
    validator = Draft202012Validator({"$ref": BASE + ref}, registry=REGISTRY, format_checker=FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def check(response: Any, path: str, method: str, status: int) -> Any:
    """Assert the Chalice test client's answer has ``status`` and matches the document; returns the body."""
    assert response.status_code == status, response.body
    body = json.loads(response.body) if response.body else None
    assert schema_errors(path, method, status, body) == []
    if status >= 400 and body:
        assert errors.STATUS_BY_CODE[body["error"]["code"]] == status or status == 415
    return body


# --- the document ------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1.")
    validate_spec(DOC)


def test_the_served_json_copy_is_the_yaml_document() -> None:
    assert openapi.JSON_PATH.read_text(encoding="utf-8") == openapi.json_text(DOC), (
        "chalicelib/openapi.json is out of date: run `python -m chalicelib.openapi`"
    )
    assert openapi.main(["--check"]) == 0


def test_the_served_document_carries_the_deployments_upload_limit() -> None:
    served = openapi.document(Settings(max_upload_bytes=5 * 1024 * 1024))
    assert (
        served["components"]["schemas"]["UploadRequest"]["properties"]["size"]["maximum"] == 5 * 1024 * 1024
    )
    default = openapi.document(Settings())
    assert default == DOC, "with default settings the served document is openapi.yaml"
    json.dumps(served)  # JSON-serialisable as the route returns it


def test_every_json_route_is_described_and_every_described_operation_exists() -> None:
    from app import app

    routes = {(path, method) for path, methods in app.routes.items() for method in methods}
    described = {
        (path, method.upper())
        for path, item in DOC["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routes - NOT_IN_THE_API == described, "app.py and openapi.yaml disagree on the routes"


def test_error_codes_are_the_apps() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"] == list(
        errors.STATUS_BY_CODE
    )
    assert set(schemas["ImageError"]["properties"]["code"]["enum"]) == errors.IMAGE_ERROR_CODES
    # Each documented error status names its code, and the code maps to that status.
    for name in (
        "InvalidRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "FileTooLarge",
        "UnsupportedMediaType",
        "EmptyFile",
        "InternalError",
    ):
        code = schemas[name]["allOf"][1]["properties"]["error"]["properties"]["code"]["const"]
        assert code in errors.STATUS_BY_CODE


def test_ids_and_content_types_match_the_apps_rules() -> None:
    schemas = DOC["components"]["schemas"]
    id_pattern = re.compile(schemas["ImageId"]["pattern"])
    for _ in range(50):
        assert id_pattern.search(storage.new_id())
    for char in map(chr, range(128)):
        assert bool(id_pattern.search(char * 20)) == bool(storage.ID_RE.fullmatch(char * 20)), repr(char)
    assert not id_pattern.search(storage.new_id() + "0") and not id_pattern.search(storage.new_id()[1:])
    content_type = re.compile(schemas["UploadRequest"]["properties"]["content_type"]["pattern"])
    for accepted in formats.upload_types():
        for spelling in (accepted, accepted.upper(), f" {accepted} ; charset=binary"):
            assert content_type.search(spelling), spelling
    # a type the client cannot name: accepted, and judged by the bytes like every upload
    for unnamed in ("", "  ", "application/octet-stream", "Application/Octet-Stream; x=1"):
        assert content_type.search(unnamed), unnamed
    for refused in ("image/svg+xml", "application/pdf", "image/jpegx", "text/plain", "image/", "application"):
        assert not content_type.search(refused), refused


# --- what the app answers ------------------------------------------------------------------


def test_ping_matches(client: Any) -> None:
    check(client.http.get("/ping"), "/ping", "GET", 200)


def test_upload_grants_match(client: Any) -> None:
    post = check(post_upload(client, filename="a.jpg", content_type="image/jpeg"), "/uploads", "POST", 201)
    assert post["method"] == "POST"
    response = post_upload(client, filename="a.png", content_type="image/png", size=10, method="put")
    put = check(response, "/uploads", "POST", 201)
    assert put["method"] == "PUT"
    assert re.fullmatch(
        DOC["paths"]["/uploads"]["post"]["responses"]["201"]["headers"]["Location"]["schema"]["pattern"],
        response.headers["Location"],
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"filename": "a.svg", "content_type": "image/svg+xml"}, 415),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": 20 * 1024 * 1024 + 1}, 413),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "method": "put"}, 400),
        ({"filename": " ", "content_type": "image/jpeg"}, 400),
        # Not blank by the schema's \S (a record separator is no white space in ECMA-262): cleaned
        # to "upload", as schemathesis found.
        ({"filename": "\x1e", "content_type": "image/jpeg"}, 201),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "extra": 1}, 400),
        ({"filename": "a.jpg", "content_type": "image/jpeg", "size": 0}, 422),
        ({"filename": "a.jpg", "content_type": "", "size": 0, "method": "put"}, 422),
    ],
)
def test_upload_errors_match(client: Any, body: dict[str, Any], status: int) -> None:
    check(post_upload(client, **body), "/uploads", "POST", status)


def test_images_list_and_one_image_match(client: Any, aws: Any) -> None:
    ready = process(client, aws, jpeg(640, 480), "cat.jpg")
    failed = process(client, aws, b"not a photo", "notes.jpg")
    page = check(client.http.get("/images?limit=1"), "/images", "GET", 200)
    assert page["next_cursor"] == failed
    page = check(client.http.get(f"/images?cursor={page['next_cursor']}"), "/images", "GET", 200)
    assert [i["id"] for i in page["images"]] == [ready] and page["next_cursor"] is None
    assert check(client.http.get(f"/images/{ready}"), "/images/{image_id}", "GET", 200)["status"] == "ready"
    image = check(client.http.get(f"/images/{failed}"), "/images/{image_id}", "GET", 200)
    assert image["status"] == "failed" and image["error"]["code"] == "not_an_image"
    check(client.http.get("/images?limit=0"), "/images", "GET", 400)
    check(client.http.get(f"/images/{storage.new_id()}"), "/images/{image_id}", "GET", 404)
    check(client.http.get("/images/nope"), "/images/{image_id}", "GET", 404)


def test_a_pending_image_matches(client: Any, aws: Any) -> None:
    grant = json.loads(post_upload(client, filename="a.jpg", content_type="image/jpeg").body)
    aws.put_object(Bucket=UPLOAD_BUCKET, Key=grant["fields"]["key"], Body=jpeg(64, 48))
    image = check(client.http.get(f"/images/{grant['id']}"), "/images/{image_id}", "GET", 200)
    assert image["status"] == "pending"


def test_delete_answers_match(client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    image_id = process(client, aws, jpeg(64, 48))
    path = f"/images/{image_id}"
    check(client.http.delete(path), "/images/{image_id}", "DELETE", 403)  # no token configured
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    check(client.http.delete(path), "/images/{image_id}", "DELETE", 401)
    check(
        client.http.delete(path, headers={"Authorization": "Bearer nope"}),
        "/images/{image_id}",
        "DELETE",
        403,
    )
    auth = {"Authorization": "Bearer s3cret"}
    check(client.http.delete(path, headers=auth), "/images/{image_id}", "DELETE", 204)
    check(client.http.delete(path, headers=auth), "/images/{image_id}", "DELETE", 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [("put", "/uploads"), ("post", "/images"), ("post", "/ping"), ("patch", "/images/0123456789abcdefghjk")],
)
def test_undeclared_methods_are_405_with_the_error_shape(client: Any, method: str, path: str) -> None:
    response = getattr(client.http, method)(path, headers=JSON, body="{}")
    assert response.status_code == 405
    body = json.loads(response.body)
    assert Draft202012Validator({"$ref": f"{BASE}#/components/schemas/Error"}, registry=REGISTRY).is_valid(
        body
    )
    assert body["error"]["code"] == "method_not_allowed"


def test_openapi_json_is_served(client: Any) -> None:
    """Needs ``@app.route("/openapi.json")`` in app.py, answering ``openapi.document(get_settings())``."""
    response = client.http.get("/openapi.json")
    served = check(response, "/openapi.json", "GET", 200)
    assert served == openapi.document(Settings())
