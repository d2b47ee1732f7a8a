"""Optional upload authorisation: ``UPLOAD_TOKEN`` (locally) or ``UPLOAD_TOKEN_PARAMETER`` (an SSM
SecureString, on AWS) makes ``POST /uploads`` need ``Authorization: Bearer <token>``; the admin
token is accepted too. The Python client and the CLI send it. The gallery's dialog is tested in
tests/test_browser_cors.py, the IAM grant in tests/test_iam.py."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import responses

from chalicelib import auth
from chalicelib.config import ConfigError, get_settings
from chalicelib.errors import ImageshelfError as ServerError
from imageshelf_client import Client, ImageshelfError
from imageshelf_client.cli import main
from tests.support import jpeg

PARAMETER = "/imageshelf/test/upload-token"
GRANT = {"filename": "cat.jpg", "content_type": "image/jpeg"}


def upload(client: Any, token: str | None = None, scheme: str = "Bearer") -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    return client.http.post("/uploads", headers=headers, body=json.dumps(GRANT))


def error_of(response: Any) -> dict[str, str]:
    body = json.loads(response.body)
    assert set(body) == {"error"}, body
    return body["error"]


def test_uploads_are_open_when_no_upload_token_is_set(client: Any) -> None:
    assert upload(client).status_code == 201
    assert '"uploadTokenRequired": true' not in client.http.get("/").body.decode()


def test_an_upload_token_closes_uploads_to_everyone_without_it(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLOAD_TOKEN", "up-tok")
    missing = upload(client)
    assert missing.status_code == 401 and error_of(missing)["code"] == "unauthorized"
    assert "Bearer <upload token>" in error_of(missing)["message"]
    assert upload(client, "up-tok", scheme="Basic").status_code == 401
    wrong = upload(client, "nope")
    assert wrong.status_code == 403 and error_of(wrong)["code"] == "forbidden"
    granted = upload(client, "up-tok")
    assert granted.status_code == 201 and json.loads(granted.body)["fields"]["key"].startswith("uploads/")
    assert '"uploadTokenRequired": true' in client.http.get("/").body.decode()  # the gallery asks


def test_the_admin_token_may_upload_too(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_TOKEN", "up-tok")
    monkeypatch.setenv("ADMIN_TOKEN", "admin-tok")
    assert upload(client, "admin-tok").status_code == 201
    assert upload(client, "up-tok").status_code == 201


def test_the_upload_token_cannot_delete(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_TOKEN", "up-tok")
    monkeypatch.setenv("ADMIN_TOKEN", "admin-tok")
    grant = json.loads(upload(client, "up-tok").body)
    refused = client.http.delete(f"/images/{grant['id']}", headers={"Authorization": "Bearer up-tok"})
    assert refused.status_code == 403


def test_both_token_and_parameter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_TOKEN", "x")
    monkeypatch.setenv("UPLOAD_TOKEN_PARAMETER", PARAMETER)
    with pytest.raises(ConfigError, match="UPLOAD_TOKEN"):
        get_settings()
    monkeypatch.delenv("UPLOAD_TOKEN")
    monkeypatch.setenv("UPLOAD_TOKEN_PARAMETER", "not a path")
    with pytest.raises(ConfigError, match="UPLOAD_TOKEN_PARAMETER"):
        get_settings()


def test_the_upload_token_comes_from_ssm_read_once_per_ttl_and_missing_means_closed(
    client: Any, aws: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import boto3

    monkeypatch.setenv("UPLOAD_TOKEN_PARAMETER", PARAMETER)
    reads: list[str] = []
    real_read = auth._read_parameter
    monkeypatch.setattr(auth, "_read_parameter", lambda name: reads.append(name) or real_read(name))

    refused = upload(client, "anything")  # no parameter yet: closed, never open
    assert refused.status_code == 403
    assert (
        "make upload-token" in error_of(refused)["message"] and PARAMETER not in error_of(refused)["message"]
    )
    assert PARAMETER in caplog.text

    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name=PARAMETER, Value="ssm-tok\n", Type="SecureString")
    auth.reset_cache()
    for _ in range(5):
        assert upload(client, "ssm-tok").status_code == 201
    assert upload(client, "other").status_code == 403
    assert reads == [PARAMETER, PARAMETER]  # one miss, then one read for six requests


# --- the Python client and the CLI ---------------------------------------------------------

API = "http://shelf.test"


@pytest.fixture
def api() -> Any:
    with responses.RequestsMock() as mock:
        yield mock


def refuse(api: Any, code: str = "unauthorized", status: int = 401) -> None:
    message = "Uploads need a token here: send 'Authorization: Bearer <upload token>'."
    api.post(f"{API}/uploads", status=status, json={"error": {"code": code, "message": message}})


@pytest.mark.parametrize(
    ("kwargs", "env", "sent"),
    [
        ({"upload_token": "up"}, {}, "Bearer up"),
        ({}, {"IMAGESHELF_UPLOAD_TOKEN": "env-up"}, "Bearer env-up"),
        ({"token": "admin"}, {}, "Bearer admin"),  # the admin token, when there is no upload token
        ({"token": "admin", "upload_token": "up"}, {}, "Bearer up"),
        ({}, {}, None),
    ],
)
def test_the_client_sends_the_upload_token(
    api: Any, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, str], env: dict[str, str], sent: str | None
) -> None:
    monkeypatch.delenv("IMAGESHELF_TOKEN", raising=False)
    monkeypatch.delenv("IMAGESHELF_UPLOAD_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    refuse(api)
    with pytest.raises(ImageshelfError, match="unauthorized"):
        Client(API, retries=0, **kwargs).upload(jpeg(8, 8), "a.jpg")
    assert api.calls[0].request.headers.get("Authorization") == sent


def test_the_cli_takes_upload_token_and_says_so_when_refused(
    api: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMAGESHELF_TOKEN", raising=False)
    monkeypatch.delenv("IMAGESHELF_UPLOAD_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photo = tmp_path / "a.jpg"
    photo.write_bytes(jpeg(8, 8))
    refuse(api)
    refuse(api, "forbidden", 403)
    out = io.StringIO()
    assert main(["upload", str(photo), "--url", API], stdout=out, stderr=io.StringIO()) == 1
    assert "--upload-token" in out.getvalue() and "IMAGESHELF_UPLOAD_TOKEN" in out.getvalue()
    code = main(
        ["upload", str(photo), "--url", API, "--upload-token", "s3cret"], io.StringIO(), io.StringIO()
    )
    assert code == 1
    assert api.calls[1].request.headers["Authorization"] == "Bearer s3cret"


def test_the_refusals_match_the_openapi_document(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.openapi import from_yaml
    from tests.test_openapi import check

    monkeypatch.setenv("UPLOAD_TOKEN", "up-tok")
    check(upload(client), "/uploads", "POST", 401)
    check(upload(client, "nope"), "/uploads", "POST", 403)
    check(upload(client, "up-tok"), "/uploads", "POST", 201)
    operation = from_yaml()["paths"]["/uploads"]["post"]
    assert operation["security"] == [{}, {"uploadToken": []}, {"adminToken": []}]  # optional


# --- make upload-token ------------------------------------------------------------------------


def test_make_upload_token_stores_a_working_securestring_for_a_stage_that_opted_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make upload-token STAGE=dev``: refused (with what to add) for a stage that did not opt in;
    for one that did, the printed token is what its app then accepts, and deploy's hint goes."""
    import boto3
    from moto import mock_aws

    from chalicelib.config import Settings
    from tools import deploy
    from tools import deployment as deployment_module
    from tools.provision import stage_environment

    for name, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("REGION", raising=False)
    monkeypatch.setattr(deploy, "deployed", lambda stage, project_dir=None: {})
    monkeypatch.setattr(deployment_module, "deployed", lambda stage, project_dir=None: {})
    with mock_aws():
        with pytest.raises(SystemExit, match=r"UPLOAD_TOKEN_PARAMETER.*ReadUploadToken"):
            deploy.main(["upload-token", "--stage", "dev"])  # dev as shipped: open to the public

        opted_in = {**stage_environment("dev"), "UPLOAD_TOKEN_PARAMETER": PARAMETER}
        monkeypatch.setattr(deploy, "stage_environment", lambda stage, project_dir=None: opted_in)
        ssm = boto3.client("ssm", region_name="eu-west-1")
        assert "make upload-token STAGE=dev" in (deploy.upload_token_hint(ssm, "dev") or "")
        assert deploy.main(["upload-token", "--stage", "dev"]) == 0
        printed = capsys.readouterr().out
        token = printed.strip().splitlines()[-1]
        assert "upload token" in printed and PARAMETER in printed and len(token) >= 40
        stored = ssm.get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]
        assert stored["Type"] == "SecureString" and stored["Value"] == token
        assert deploy.upload_token_hint(ssm, "dev") is None
        auth.reset_cache()
        settings = Settings(stage="dev", upload_token_parameter=PARAMETER)
        auth.require_uploader(f"Bearer {token}", settings)
        with pytest.raises(ServerError) as refused:
            auth.require_uploader("Bearer not-it", settings)
        assert refused.value.code == "forbidden"
    auth.reset_cache()
