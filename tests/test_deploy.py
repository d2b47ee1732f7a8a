"""What ``make package`` builds, checked offline: the Lambda zip and the Terraform that wires it;
and, offline too, what ``make deploy`` adds around Chalice: the generated project a deployment runs
in, a regional copy's names and policies, the CDN's configuration and bucket policy, the alarms.
(tests/test_rehearsal.py runs the deploy itself, against moto's server.)

``chalice package`` runs once per stage per session (it downloads Linux wheels from PyPI: without
network these tests fail, on purpose, rather than skip). Nothing here calls AWS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools import cdn, monitoring, package_check
from tools.deploy import api_origin, function_names, package, set_log_retention
from tools.deployment import deployed_region, deployment, regional_policy, render_project, resolve
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
    assert "pi-heif==1.4.0" in (ROOT / "requirements.txt").read_text().splitlines()  # cp312 manylinux_2_28


def test_zip_holds_pillows_manylinux_wheel(packaged: dict[str, Path]) -> None:
    assert package_check.zip_problems(packaged["dev"] / "deployment.zip") == []


def test_zip_runs_fit_in_a_clean_interpreter(packaged: dict[str, Path], tmp_path: Path) -> None:
    """Only the standard library and the unpacked zip on sys.path; Pillow's libraries come from the
    zip's pillow.libs/, and importing app.py (the API's cold start) does not load Pillow."""
    samples = package_check.make_samples(tmp_path)
    with package_check.unpacked(packaged["dev"] / "deployment.zip", tmp_path) as task:
        report = package_check.run_clean(task, "smoke", samples["small"], heic=package_check.HEIC_SAMPLE)
    # an iPhone HEIC, decoded by the zip's pi-heif with its own libheif (library_problems below)
    heic = {"width": 48, "height": 64, "content_type": "image/jpeg", "decoded": ["JPEG", 48, 64]}
    assert report["heic"] == heic
    assert report["fit"] == {
        "width": 64,
        "height": 40,
        "content_type": "image/jpeg",
        "decoded": ["JPEG", 64, 40],
    }
    assert package_check.library_problems(report) == []
    assert [p for p in report["sys_path"] if p.startswith(str(task))] == [str(task)]
    # An on-demand render in every format it may write, with the zip's own codecs (AVIF, WebP).
    assert report["render"] == {f: [f.upper(), 32, 20] for f in ("jpeg", "png", "webp", "avif")}
    # The zip's app declares every function: the API's, the event handlers' and the pure ones.
    assert sorted(report["functions"]) == ["api_handler", "operations", "reconcile", "resize"]


@pytest.mark.parametrize("stage", STAGES)
def test_terraform_deploys_every_function_the_app_declares(packaged: dict[str, Path], stage: str) -> None:
    """``make package`` checks the Terraform against the app: the ``operations`` function is there,
    runs ``app.operations`` under its own role, and nothing but IAM principals may invoke it (no
    ``aws_lambda_permission`` names it: no S3, schedule or API Gateway trigger)."""
    from app import app

    declared = [
        "api_handler",
        *(s.name for s in app.event_sources),
        *(f.name for f in app.pure_lambda_functions),
    ]
    tf = terraform(packaged[stage])
    assert package_check.terraform_problems(tf, declared) == []
    assert "operations" in declared
    operations = tf["resource"]["aws_lambda_function"]["operations"]
    assert operations["handler"] == "app.operations"
    assert not [
        name
        for name, permission in tf["resource"]["aws_lambda_permission"].items()
        if "operations" in json.dumps(permission)
    ]
    # A Terraform missing it, or giving it another's role, fails the check.
    broken = json.loads(json.dumps(tf))
    del broken["resource"]["aws_lambda_function"]["operations"]
    assert package_check.terraform_problems(broken, declared) == [
        "the app declares function operations, which chalice.tf.json does not deploy"
    ]
    broken = json.loads(json.dumps(tf))
    broken["resource"]["aws_lambda_function"]["operations"]["role"] = "${aws_iam_role.api_handler_role.arn}"
    assert package_check.terraform_problems(broken, declared) == [
        "function operations has no role of its own with its policy file"
    ]


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
    assert "pi-heif (HEIC input) is missing" in problems
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
        # No secret in the template or the function's configuration: the token and key are read from SSM.
        variables = fn["environment"]["variables"]
        assert "ADMIN_TOKEN" not in variables and "RENDER_SIGNING_KEY" not in variables
        assert variables["ADMIN_TOKEN_PARAMETER"] == f"/imageshelf/{stage}/admin-token"
        assert variables["RENDER_SIGNING_KEY_PARAMETER"] == f"/imageshelf/{stage}/render-key"
    # The API renders on a miss: one full vCPU, and time for a render or for waiting on another's
    # (renders.WAIT_SECONDS), ending before API Gateway's 29 s integration timeout does.
    from chalicelib import renders

    api = functions["api_handler"]
    assert api["memory_size"] == 1769 and renders.WAIT_SECONDS + 5 <= api["timeout"] < 29
    assert functions["resize"]["timeout"] > api["timeout"]
    assert (functions["operations"]["memory_size"], functions["operations"]["timeout"]) == (1769, 60)


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_has_its_own_role_with_its_policy_file(packaged: dict[str, Path], stage: str) -> None:
    resources = terraform(packaged[stage])["resource"]
    for name in stage_functions(stage):
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
            set_log_retention(logs, ["imageshelf-prod", "imageshelf-prod-resize"], 90)
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
    from tools import deployment as deployment_module

    for name, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("REGION", raising=False)
    # Whatever this checkout may have deployed for real (the region check has its own test).
    monkeypatch.setattr(deploy, "deployed", lambda stage, project_dir=ROOT: {})
    monkeypatch.setattr(deployment_module, "deployed", lambda stage, project_dir=ROOT: {})
    parameter = stage_environment("prod")["ADMIN_TOKEN_PARAMETER"]
    settings = Settings(stage="prod", admin_token_parameter=parameter)
    auth.reset_cache()
    with mock_aws():
        ssm = boto3.client("ssm", region_name="eu-west-1")
        assert "make admin-token STAGE=prod" in (deploy.admin_token_hint(ssm, "prod") or "")
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


def test_make_render_key_stores_the_key_signed_renders_need_and_rotates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make render-key STAGE=prod``: before it, the stage has no key (presets only, and deploy
    says so); the printed key is the one the prod app checks render signatures with; running it
    again rotates it, and URLs signed with the old key are refused."""
    import boto3
    from moto import mock_aws

    from chalicelib import auth, operations, renders, storage
    from chalicelib.config import Settings
    from chalicelib.errors import ImageshelfError
    from tools import deploy
    from tools import deployment as deployment_module

    for name, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("REGION", raising=False)
    monkeypatch.setattr(deploy, "deployed", lambda stage, project_dir=ROOT: {})
    monkeypatch.setattr(deployment_module, "deployed", lambda stage, project_dir=ROOT: {})
    parameter = stage_environment("prod")["RENDER_SIGNING_KEY_PARAMETER"]
    settings = Settings(stage="prod", render_signing_key_parameter=parameter)
    image_id, spec = storage.new_id(), operations.parse({"w": ["300"], "format": ["webp"]})
    presets = dict(settings.render_presets)

    def signed_with(key: str) -> dict[str, list[str]]:
        return {"w": ["300"], "format": ["webp"], "sig": [operations.sign(spec, key, image_id)]}

    auth.reset_cache()
    with mock_aws():
        ssm = boto3.client("ssm", region_name="eu-west-1")
        assert deploy.render_key_hint(ssm, "prod") == (
            "renders other than presets are refused until the render key exists: make render-key STAGE=prod"
        )
        assert settings.render_signing_required and renders.signing_key(settings) == ""
        keys = []
        for _ in range(2):
            assert deploy.main(["render-key", "--stage", "prod"]) == 0
            printed = capsys.readouterr().out.strip().splitlines()
            assert "render key" in printed[0] and parameter in printed[0]
            keys.append(printed[-1])
        stored = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]
        assert stored["Type"] == "SecureString" and stored["Value"] == keys[1] != keys[0]
        assert len(keys[1]) >= 40 and deploy.render_key_hint(ssm, "prod") is None
        auth.reset_cache()
        in_force = renders.signing_key(settings)
        assert in_force == keys[1]
        assert operations.request_spec(signed_with(keys[1]), image_id, presets, in_force) == spec
        with pytest.raises(ImageshelfError) as refused:
            operations.request_spec(signed_with(keys[0]), image_id, presets, in_force)
        assert refused.value.code == "forbidden"
    auth.reset_cache()


# --- what make deploy adds around Chalice, offline ------------------------------------------------


def write_record(project: Path, chalice_stage: str, region: str) -> None:
    """A ``.chalice/deployed/<stage>.json`` as ``chalice deploy`` leaves it, in ``region``."""
    folder = project / ".chalice" / "deployed"
    folder.mkdir(parents=True, exist_ok=True)
    arn = f"arn:aws:lambda:{region}:1:function:imageshelf-{chalice_stage}"
    record = {"resources": [{"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": arn}]}
    (folder / f"{chalice_stage}.json").write_text(json.dumps(record))


def project_copy(tmp_path: Path) -> Path:
    """The project's Chalice configuration and policies, in a folder of its own."""
    (tmp_path / ".chalice").mkdir()
    for source in [ROOT / ".chalice" / "config.json", *(ROOT / ".chalice").glob("policy-*.json")]:
        shutil.copy2(source, tmp_path / ".chalice" / source.name)
    return tmp_path


def test_a_stage_keeps_its_names_at_home_and_a_regional_copy_gets_its_own(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    env = stage_environment("prod")
    for home in (None, "eu-west-1"):  # nothing deployed anywhere yet, or deployed here
        at_home = deployment("prod", "eu-west-1", home, project)
        assert (at_home.name, at_home.upload_bucket, at_home.regional_copy) == (
            "prod",
            env["UPLOAD_BUCKET"],
            False,
        )
    copy = deployment("prod", "us-east-1", "eu-west-1", project)
    assert copy.regional_copy and copy.name == "prod-us-east-1"
    assert (copy.upload_bucket, copy.images_bucket) == (
        f"{env['UPLOAD_BUCKET']}-us-east-1",
        f"{env['IMAGES_BUCKET']}-us-east-1",
    )
    assert copy.function_name("api_handler") == "imageshelf-prod-us-east-1"
    assert copy.function_name("resize") == "imageshelf-prod-us-east-1-resize"
    assert copy.resize_dlq == "imageshelf-prod-us-east-1-resize-dlq"
    # A copy stays a copy, even once the home's buckets and record are gone.
    write_record(project, "prod-us-east-1", "us-east-1")
    assert deployment("prod", "us-east-1", None, project).name == "prod-us-east-1"


def test_the_home_region_is_the_recorded_one_else_the_upload_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import mock_aws

    project = project_copy(tmp_path)
    for name, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = stage_environment("dev")["UPLOAD_BUCKET"]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        assert resolve("dev", "us-east-1", s3, project).name == "dev"  # nothing anywhere: home
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert resolve("dev", "us-east-1", s3, project).name == "dev-us-east-1"
        assert resolve("dev", "eu-west-1", s3, project).name == "dev"
        write_record(project, "dev", "ap-south-1")  # Chalice's record wins
        assert resolve("dev", "ap-south-1", s3, project).name == "dev"
        assert resolve("dev", "eu-west-1", s3, project).name == "dev-eu-west-1"
    assert deployed_region({}) is None


def test_a_bucket_name_too_long_for_a_region_is_refused(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    config = json.loads((project / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"]["UPLOAD_BUCKET"] = "x" * 50
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="longer than S3's 63 characters"):
        deployment("dev", "ap-southeast-2", "us-east-1", project)


@pytest.mark.parametrize("function", ["api_handler", "resize", "operations"])
def test_a_regional_copys_policy_names_its_own_resources_in_its_region(tmp_path: Path, function: str) -> None:
    project = project_copy(tmp_path)
    copy = deployment("dev", "eu-west-1", "us-east-1", project)
    written = json.loads((project / ".chalice" / f"policy-dev-{function}.json").read_text())
    derived = regional_policy(written, copy, project)
    assert [(s["Sid"], s["Action"]) for s in derived["Statement"]] == [
        (s["Sid"], s["Action"]) for s in written["Statement"]
    ]
    resources = [
        r
        for s in derived["Statement"]
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    for arn in resources:
        if arn.startswith("arn:aws:s3:::"):
            assert arn.removeprefix("arn:aws:s3:::").split("/")[0] in (
                copy.upload_bucket,
                copy.images_bucket,
            ), arn
        else:
            assert arn.split(":")[3] == "eu-west-1", arn
    group = f"arn:aws:logs:eu-west-1:*:log-group:/aws/lambda/{copy.function_name(function)}"
    assert group in resources and f"{group}:*" in resources
    if function == "resize":
        assert "arn:aws:sqs:eu-west-1:*:imageshelf-dev-eu-west-1-resize-dlq" in resources
    elif function == "api_handler":  # SSM is regional: the same parameter names, in the copy's region
        assert "arn:aws:ssm:eu-west-1:*:parameter/imageshelf/dev/admin-token" in resources
        assert "arn:aws:ssm:eu-west-1:*:parameter/imageshelf/dev/render-key" in resources
    else:  # renders into the copy's images bucket, from the copy's originals; no SSM, no queue
        assert f"arn:aws:s3:::{copy.images_bucket}/*/x/*" in resources
        assert not [r for r in resources if r.startswith(("arn:aws:ssm", "arn:aws:sqs"))]


def test_the_generated_project_holds_one_stage_with_deploy_time_settings(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(ROOT / name, project / name)
    (project / "chalicelib" / "__pycache__").mkdir(parents=True)
    (project / "chalicelib" / "__init__.py").write_text("")
    (project / "chalicelib" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"")
    extra = {"PUBLIC_BASE_URL": "https://d111.cloudfront.net", "RESIZE_DLQ_URL": "https://sqs/1/q"}
    for home, region in (("us-east-1", "us-east-1"), ("us-east-1", "eu-west-1")):
        target = deployment("dev", region, home, project)
        out = render_project(target, extra, project)
        config = json.loads((out / ".chalice" / "config.json").read_text())
        [stage] = config["stages"]
        assert stage == target.name
        env = config["stages"][stage]["environment_variables"]
        assert env == {**stage_environment("dev", project), **target.env, **extra}
        for function, settings in config["stages"][stage]["lambda_functions"].items():
            policy = json.loads((out / ".chalice" / settings["iam_policy_file"]).read_text())
            source = json.loads((project / ".chalice" / f"policy-dev-{function}.json").read_text())
            assert policy == (regional_policy(source, target, project) if target.regional_copy else source)
        # Chalice's record and cache stay the project's own.
        assert (out / ".chalice" / "deployed").resolve() == (project / ".chalice" / "deployed").resolve()
        assert (out / ".chalice" / "deployments").resolve() == (
            project / ".chalice" / "deployments"
        ).resolve()
        assert (out / "app.py").read_text() == (ROOT / "app.py").read_text()
        assert not list(out.rglob("__pycache__"))


def test_the_cdn_serves_the_images_bucket_over_https_through_origin_access_control() -> None:
    settings = cdn.distribution_settings("prod", "imageshelf-prod-images", "eu-west-1", "E2OAC")
    [origin] = settings["Origins"]["Items"]
    assert origin["DomainName"] == "imageshelf-prod-images.s3.eu-west-1.amazonaws.com"
    assert origin["OriginAccessControlId"] == "E2OAC" and origin["S3OriginConfig"] == {
        "OriginAccessIdentity": ""
    }
    behaviour = settings["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "https-only"
    assert (
        behaviour["AllowedMethods"]["Items"] == ["GET", "HEAD"]
        and behaviour["TargetOriginId"] == origin["Id"]
    )
    assert behaviour["CachePolicyId"] == cdn.CACHING_OPTIMIZED and settings["Enabled"] is True

    arn = "arn:aws:cloudfront::123456789012:distribution/E1"
    policy = cdn.images_bucket_policy("imageshelf-prod-images", arn)
    allow, deny = policy["Statement"]
    assert allow == {
        "Sid": "CloudFrontReadsImages",
        "Effect": "Allow",
        "Principal": {"Service": "cloudfront.amazonaws.com"},
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::imageshelf-prod-images/*",
        "Condition": {"StringEquals": {"AWS:SourceArn": arn}},
    }
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_updating_a_distribution_sets_deploys_fields_and_keeps_the_rest() -> None:
    wanted = cdn.distribution_settings("dev", "b", "us-east-1", "OAC")
    current = {
        **wanted,
        "CallerReference": "ref",
        "Aliases": {"Quantity": 1, "Items": ["img.example.com"]},
        "DefaultCacheBehavior": {
            **wanted["DefaultCacheBehavior"],
            "MinTTL": 0,
            "ViewerProtocolPolicy": "allow-all",
        },
    }
    assert not cdn._covers(current, wanted)
    merged = cdn._merge(current, wanted)
    assert cdn._covers(merged, wanted)
    assert merged["Aliases"] == current["Aliases"] and merged["CallerReference"] == "ref"
    assert "MinTTL" not in merged["DefaultCacheBehavior"]  # a cache policy replaces the legacy TTLs
    assert cdn._covers({**merged, "Logging": {"Enabled": False}}, wanted)


def test_alarms_watch_resize_dlq_api_and_operations_and_are_documented() -> None:
    from tools.deployment import deployment

    names = deployment("dev", "us-east-1", None).function_name
    watched = {
        alarm.suffix: monitoring.alarm_dimensions(alarm, names, "q", "imageshelf", "api")
        for alarm in monitoring.ALARMS
    }
    assert watched == {
        "resize-errors": [{"Name": "FunctionName", "Value": "imageshelf-dev-resize"}],
        "resize-dlq-depth": [{"Name": "QueueName", "Value": "q"}],
        "api-5xx": [{"Name": "ApiName", "Value": "imageshelf"}, {"Name": "Stage", "Value": "api"}],
        "operations-errors": [{"Name": "FunctionName", "Value": "imageshelf-dev-operations"}],
    }
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for alarm in monitoring.ALARMS:
        assert f"`imageshelf-<name>-{alarm.suffix}`" in docs, (
            f"docs/deploy.md does not say what to do about {alarm.suffix}"
        )


@pytest.mark.parametrize("stage", STAGES)
def test_stage_throttles_its_api(stage: str) -> None:
    limits = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][stage]["api_throttling"]
    assert 0 < limits["rate_limit"] <= limits["burst_limit"] <= 5000  # API Gateway's account burst
