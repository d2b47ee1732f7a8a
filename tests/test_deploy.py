"""What ``make package`` builds, checked offline: the Lambda zip and the Terraform that wires it.

``chalice package`` runs once per stage per session (it downloads Linux wheels from PyPI: without
network these tests fail, on purpose, rather than skip). Nothing here calls AWS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools import package_check
from tools.deploy import api_origin, deployed_region, function_names, package, set_log_retention
from tools.provision import ROOT, stage_environment

STAGES = ("dev", "prod")


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``build``-like folders from ``tools.deploy.package`` (what ``make package`` runs), by stage."""
    out = tmp_path_factory.mktemp("package")
    builds = {}
    for stage in STAGES:
        try:
            builds[stage] = package(stage, out / stage)
        except subprocess.CalledProcessError as error:
            pytest.fail(
                f"`chalice package --stage {stage}` failed ({error}); it needs PyPI to download "
                "Pillow's manylinux wheel: see the output above"
            )
    return builds


def terraform(build: Path) -> dict[str, Any]:
    return json.loads((build / "chalice.tf.json").read_text())


def stage_functions(stage: str) -> dict[str, dict[str, Any]]:
    return json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][stage]["lambda_functions"]


def test_the_makefile_python_matches_the_lambda_runtime() -> None:
    """Chalice downloads wheels for the Python it runs on: it must be the runtime's 3.12, and
    Pillow must be pinned to a release with cp312 manylinux wheels (13.0.0: manylinux_2_28)."""
    assert sys.version_info[:2] == (3, 12)
    assert "Pillow==13.0.0" in (ROOT / "requirements.txt").read_text().splitlines()


def test_zip_holds_pillows_manylinux_wheel(packaged: dict[str, Path]) -> None:
    assert package_check.zip_problems(packaged["dev"] / "deployment.zip") == []


def test_zip_runs_fit_in_a_clean_interpreter(packaged: dict[str, Path], tmp_path: Path) -> None:
    """Only the standard library and the unpacked zip on sys.path; Pillow's libraries come from the
    zip's pillow.libs/, and importing app.py (the API's cold start) does not load Pillow."""
    samples = package_check.make_samples(tmp_path)
    with package_check.unpacked(packaged["dev"] / "deployment.zip", tmp_path) as task:
        report = package_check.run_clean(task, "smoke", samples["small"])
    assert report["fit"] == {
        "width": 64,
        "height": 40,
        "content_type": "image/jpeg",
        "decoded": ["JPEG", 64, 40],
    }
    assert package_check.library_problems(report) == []
    assert [p for p in report["sys_path"] if p.startswith(str(task))] == [str(task)]


def test_zip_check_catches_a_source_build(tmp_path: Path) -> None:
    """The check fails for a zip whose Pillow has no bundled libraries (a build against the host)."""
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("pillow-13.0.0.dist-info/WHEEL", "Tag: cp312-cp312-linux_x86_64\n")
        archive.writestr("PIL/_imaging.cpython-312-x86_64-linux-gnu.so", b"")
        archive.writestr("boto3/__init__.py", "")
    problems = "\n".join(package_check.zip_problems(bad))
    assert "not a cp312 manylinux" in problems and "no bundled libjpeg" in problems
    assert "boto3/__init__.py should not be in the zip" in problems


@pytest.mark.parametrize("stage", STAGES)
def test_terraform_wires_uploads_to_resize(packaged: dict[str, Path], stage: str) -> None:
    resources = terraform(packaged[stage])["resource"]
    bucket = stage_environment(stage)["UPLOAD_BUCKET"]
    [notification] = resources["aws_s3_bucket_notification"].values()
    assert notification["bucket"] == bucket
    assert notification["lambda_function"] == [
        {
            "events": ["s3:ObjectCreated:*"],
            "filter_prefix": "uploads/",
            "lambda_function_arn": "${aws_lambda_function.resize.arn}",
        }
    ]
    permission = resources["aws_lambda_permission"]["resize-s3event"]
    assert permission["principal"] == "s3.amazonaws.com"
    assert permission["source_arn"].endswith(f":s3:::{bucket}")
    assert resources["aws_lambda_function"]["resize"]["handler"] == "app.resize"


@pytest.mark.parametrize("stage", STAGES)
def test_terraform_wires_every_route_to_the_api_handler(packaged: dict[str, Path], stage: str) -> None:
    tf = terraform(packaged[stage])
    swagger = json.loads(tf["locals"]["chalice_api_swagger"])
    uris = {
        op["x-amazon-apigateway-integration"]["uri"]
        for path in swagger["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "x-amazon-apigateway-integration" in op
    }
    assert uris == {"${aws_lambda_function.api_handler.invoke_arn}"}
    assert {"/", "/uploads", "/images", "/images/{image_id}", "/ping"} <= set(swagger["paths"])
    api = tf["resource"]["aws_lambda_function"]["api_handler"]
    assert api["handler"] == "app.app"
    assert (
        tf["resource"]["aws_lambda_permission"]["rest_api_invoke"]["function_name"]
        == "${aws_lambda_function.api_handler.arn}"
    )


@pytest.mark.parametrize("stage", STAGES)
def test_terraform_functions_are_sized_as_configured(packaged: dict[str, Path], stage: str) -> None:
    functions = package_check.terraform_functions(terraform(packaged[stage]))
    for name, configured in stage_functions(stage).items():
        fn = functions[name]
        assert fn["runtime"] == "python3.12"
        assert (fn["memory_size"], fn["timeout"]) == (
            configured["lambda_memory_size"],
            configured["lambda_timeout"],
        )
        assert fn.get("reserved_concurrent_executions") == configured.get("reserved_concurrency")
        assert fn["function_name"] == function_names(stage)[name]
        assert fn["environment"]["variables"] == stage_environment(stage)
        # No secret in the template or the function's configuration: the token is read from SSM.
        assert "ADMIN_TOKEN" not in fn["environment"]["variables"]
        assert fn["environment"]["variables"]["ADMIN_TOKEN_PARAMETER"] == f"/imageshelf/{stage}/admin-token"
    assert functions["resize"]["memory_size"] > functions["api_handler"]["memory_size"]
    assert functions["resize"]["timeout"] > functions["api_handler"]["timeout"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_has_its_own_role_with_its_policy_file(packaged: dict[str, Path], stage: str) -> None:
    resources = terraform(packaged[stage])["resource"]
    for name in ("api_handler", "resize"):
        assert resources["aws_lambda_function"][name]["role"] == f"${{aws_iam_role.{name}_role.arn}}"
        written = json.loads(resources["aws_iam_role_policy"][f"{name}_role"]["policy"])
        assert written == json.loads((ROOT / ".chalice" / f"policy-{stage}-{name}.json").read_text())
    assert "default-role" not in resources["aws_iam_role"]


def test_deploy_reads_what_chalice_recorded() -> None:
    resources = {
        "api_handler": {"lambda_arn": "arn:aws:lambda:eu-west-1:1:function:imageshelf-prod"},
        "rest_api": {"rest_api_url": "https://abc123.execute-api.eu-west-1.amazonaws.com/api/"},
    }
    assert deployed_region(resources) == "eu-west-1"
    assert api_origin(resources) == "https://abc123.execute-api.eu-west-1.amazonaws.com"
    assert deployed_region({}) is None and api_origin({}) is None


def test_log_retention_is_set_on_the_real_log_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both functions' actual log groups (the API's has no ``-api_handler`` suffix), idempotently."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        logs = boto3.client("logs", region_name="eu-west-1")
        logs.create_log_group(logGroupName="/aws/lambda/imageshelf-prod")
        for _ in range(2):
            set_log_retention(logs, "prod", 90)
        found = logs.describe_log_groups()["logGroups"]
    groups = {g["logGroupName"]: g.get("retentionInDays") for g in found}
    assert groups == {"/aws/lambda/imageshelf-prod": 90, "/aws/lambda/imageshelf-prod-resize": 90}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_sets_log_retention(stage: str) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][stage]
    assert config["log_retention_days"] in (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731)
    # Chalice 1.34's own key breaks `chalice package --pkg-format terraform`: see tools/deploy.py.
    assert "log_retention_in_days" not in json.dumps(config)


def test_make_admin_token_stores_a_working_securestring_and_rotates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make admin-token STAGE=prod``: the printed token is what the prod app then accepts."""
    import boto3
    from moto import mock_aws

    from chalicelib import auth
    from chalicelib.config import Settings
    from chalicelib.errors import ImageshelfError
    from tools import deploy

    for name, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # Whatever this checkout may have deployed for real (the region check has its own test).
    monkeypatch.setattr(deploy, "deployed", lambda stage, project_dir=ROOT: {})
    parameter = stage_environment("prod")["ADMIN_TOKEN_PARAMETER"]
    settings = Settings(stage="prod", admin_token_parameter=parameter)
    auth.reset_cache()
    with mock_aws():
        ssm = boto3.client("ssm", region_name="eu-west-1")
        assert "make admin-token STAGE=prod" in deploy.admin_token_hint(ssm, "prod")
        tokens = []
        for _ in range(2):
            assert deploy.main(["admin-token", "--stage", "prod"]) == 0
            tokens.append(capsys.readouterr().out.strip().splitlines()[-1])
        stored = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]
        assert stored["Type"] == "SecureString" and stored["Value"] == tokens[1] != tokens[0]
        assert len(tokens[1]) >= 40 and tokens[1].replace("-", "").replace("_", "").isalnum()
        assert deploy.admin_token_hint(ssm, "prod") is None
        auth.require_admin(f"Bearer {tokens[1]}", settings)
        with pytest.raises(ImageshelfError) as refused:
            auth.require_admin(f"Bearer {tokens[0]}", settings)
        assert refused.value.code == "forbidden"
    auth.reset_cache()
    with pytest.raises(SystemExit, match="make run"):
        deploy.main(["admin-token", "--stage", "local"])


def test_deploy_and_admin_token_refuse_a_region_the_stage_does_not_live_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token stored in another region would never be read: say so instead of 'stored'."""
    from tools.deploy import stage_session

    (tmp_path / ".chalice" / "deployed").mkdir(parents=True)
    (tmp_path / ".chalice" / "deployed" / "prod.json").write_text(
        json.dumps(
            {"resources": [{"name": "api_handler", "lambda_arn": "arn:aws:lambda:eu-west-1:1:function:x"}]}
        )
    )
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(SystemExit, match="no AWS region"):
        stage_session("prod", tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(SystemExit, match="deployed in eu-west-1, not us-east-1"):
        stage_session("prod", tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert stage_session("prod", tmp_path).region_name == "eu-west-1"
