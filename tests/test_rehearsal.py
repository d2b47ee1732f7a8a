"""The deploy rehearsal: ``make deploy`` and ``make destroy`` against moto's server, read back.

A copy of the project (what a user checks out, with this virtualenv) runs the real Makefile
targets in a subprocess, with ``AWS_ENDPOINT_URL`` pointing at moto's server (``tests/moto_server``,
which fixes six places where moto 5.2.5 is not AWS) and dummy credentials. So ``chalice deploy``
is the real deployer, packaging the real zip; only AWS is moto. Then every resource is read back
through the AWS APIs, as an operator would see it, and the deployed zip runs on the events AWS
would send it (moto's server runs a function's package: its fix 6).

Steps, in order (one deployment, module-scoped): the first deploy, with an admin token and a
render key stored first; a second deploy with a changed configuration (updates in place); a regional copy in
another region beside it; destroying one, then the other, then the kept buckets.

What this cannot prove (moto does not run it) is in docs/deploy.md, "What the rehearsal proves".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest

from tests.moto_server import MotoServer, copy_project
from tools import cdn
from tools.deployment import APP_NAME, Deployment, deployment, regional_policy
from tools.provision import stage_environment
from tools.stack import free_port

pytestmark = pytest.mark.deploy

STAGE, HOME, OTHER = "dev", "us-east-1", "eu-west-1"


@dataclass
class Rehearsal:
    """A copy of the project and moto's server, and what the steps so far printed."""

    project: Path
    moto: MotoServer
    admin_token: str = ""
    render_key: str = ""
    printed: dict[str, str] = field(default_factory=dict)

    def make(self, target: str, **variables: str) -> str:
        """``make <target> STAGE=dev ...`` in the copy, against moto; returns what it printed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MAKE", "MFLAGS"))}
        for name in ("STAGE", "REGION", "DELETE_BUCKETS"):
            env.pop(name, None)
        env.update(
            AWS_ENDPOINT_URL=self.moto.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=HOME,
            AWS_CONFIG_FILE=str(self.project / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.project / "no-aws-credentials"),
        )
        # -o: the virtualenv is this one, installed already; never reinstall it from the copy.
        command = ["make", "-o", ".venv/.installed", target, f"STAGE={STAGE}"]
        command += [f"{k}={v}" for k, v in variables.items()]
        result = subprocess.run(
            command, cwd=self.project, env=env, capture_output=True, text=True, timeout=240, check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
        return output

    def client(self, service: str, region: str = HOME) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def target(self, region: str = HOME) -> Deployment:
        """The deployment in ``region``: the stage's home, or its regional copy."""
        return deployment(STAGE, region, HOME, self.project)

    def config(self) -> dict[str, Any]:
        return json.loads((self.project / ".chalice" / "config.json").read_text())


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    """The project copied, moto started, an admin token and a render key stored, then
    ``make deploy STAGE=dev``."""
    folder = tmp_path_factory.mktemp("rehearsal")
    project = copy_project(folder / "project")
    moto = MotoServer(free_port(), folder / "moto.log", run_functions=True)
    try:
        run = Rehearsal(project, moto)
        run.printed["admin-token"] = run.make("admin-token")
        run.admin_token = run.printed["admin-token"].strip().splitlines()[-1]
        run.printed["render-key"] = run.make("render-key")
        run.render_key = run.printed["render-key"].strip().splitlines()[-1]
        run.printed["deploy"] = run.make("deploy")
        yield run
    finally:
        moto.stop()


def functions_of(run: Rehearsal, region: str = HOME) -> dict[str, dict[str, Any]]:
    """The deployment's functions as Lambda describes them, by Chalice's name for each."""
    target, lam = run.target(region), run.client("lambda", region)
    return {
        fn: lam.get_function_configuration(FunctionName=target.function_name(fn)) for fn in target.functions
    }


def declared_functions() -> set[str]:
    """Every function the app declares: the API's handler, and one per event source or pure function."""
    from app import app

    return {"api_handler", *(s.name for s in app.event_sources), *(f.name for f in app.pure_lambda_functions)}


def distribution(run: Rehearsal, region: str = HOME) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the deployment's distribution, its configuration)."""
    target, cloudfront = run.target(region), run.client("cloudfront")
    found = cdn.find(cloudfront, target.name, target.images_bucket)
    assert found is not None, f"no distribution for {target.name}"
    return cloudfront.get_distribution(Id=found)["Distribution"], cloudfront.get_distribution_config(
        Id=found
    )["DistributionConfig"]


def rest_api(run: Rehearsal, region: str = HOME) -> dict[str, Any]:
    [api] = run.client("apigateway", region).get_rest_apis()["items"]
    return dict(api)


# --- the first deploy ---------------------------------------------------------------------------


def test_every_function_the_app_declares_is_deployed_as_configured(rehearsal: Rehearsal) -> None:
    functions = functions_of(rehearsal)
    assert set(functions) == declared_functions()
    configured = rehearsal.config()["stages"][STAGE]["lambda_functions"]
    lam = rehearsal.client("lambda")
    for name, fn in functions.items():
        assert fn["Runtime"] == "python3.12"
        assert fn["Handler"] == ("app.app" if name == "api_handler" else f"app.{name}")
        assert (fn["MemorySize"], fn["Timeout"]) == (
            configured[name]["lambda_memory_size"],
            configured[name]["lambda_timeout"],
        ), name
        reserved = lam.get_function_concurrency(FunctionName=fn["FunctionName"]).get(
            "ReservedConcurrentExecutions"
        )
        assert reserved == configured[name].get("reserved_concurrency"), name


def test_the_functions_run_the_zip_chalice_built_with_pillows_wheel(rehearsal: Rehearsal) -> None:
    """The zip Lambda holds is the one Chalice packaged (same SHA-256), and it passes the package
    checks: Pillow's manylinux wheel, the app, no boto3 or bytecode."""
    from tools import package_check

    [built] = (rehearsal.project / ".chalice" / "deployments").glob("*.zip")
    digest = base64.b64encode(hashlib.sha256(built.read_bytes()).digest()).decode()
    assert {fn["CodeSha256"] for fn in functions_of(rehearsal).values()} == {digest}
    assert package_check.zip_problems(built) == []


def test_each_function_has_its_own_role_holding_exactly_its_policy_file(rehearsal: Rehearsal) -> None:
    iam = rehearsal.client("iam")
    roles = {name: fn["Role"].rsplit("/", 1)[-1] for name, fn in functions_of(rehearsal).items()}
    assert len(set(roles.values())) == len(roles), roles
    configured = rehearsal.config()["stages"][STAGE]["lambda_functions"]
    for name, role in roles.items():
        assert role == f"{APP_NAME}-{STAGE}-{name}"
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        [inline] = iam.list_role_policies(RoleName=role)["PolicyNames"]
        granted = iam.get_role_policy(RoleName=role, PolicyName=inline)["PolicyDocument"]
        written = json.loads(
            (rehearsal.project / ".chalice" / configured[name]["iam_policy_file"]).read_text()
        )
        assert granted == written, name


def test_uploads_notify_the_resize_function_and_schedules_run_theirs(rehearsal: Rehearsal) -> None:
    from chalice.app import ScheduledEventConfig, SQSEventConfig

    from app import app

    target, functions = rehearsal.target(), functions_of(rehearsal)
    notification = rehearsal.client("s3").get_bucket_notification_configuration(Bucket=target.upload_bucket)
    [config] = notification["LambdaFunctionConfigurations"]
    assert config["LambdaFunctionArn"] == functions["resize"]["FunctionArn"]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    rules = config["Filter"]["Key"]["FilterRules"]
    assert [(r["Name"].lower(), r["Value"]) for r in rules] == [("prefix", "uploads/")]
    assert not notification.get("QueueConfigurations") and not notification.get("TopicConfigurations")
    # S3 may invoke the function, for this bucket only.
    [statement] = json.loads(
        rehearsal.client("lambda").get_policy(FunctionName=target.function_name("resize"))["Policy"]
    )["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == f"arn:aws:s3:::{target.upload_bucket}"

    events, lam = rehearsal.client("events"), rehearsal.client("lambda")
    for source in app.event_sources:
        arn = functions[source.name]["FunctionArn"]
        if isinstance(source, ScheduledEventConfig):
            expression = source.schedule_expression
            wanted = expression if isinstance(expression, str) else expression.to_string()
            [rule] = events.list_rule_names_by_target(TargetArn=arn)["RuleNames"]
            assert events.describe_rule(Name=rule)["ScheduleExpression"] == wanted, source.name
        elif isinstance(source, SQSEventConfig):
            assert lam.list_event_source_mappings(FunctionName=arn)["EventSourceMappings"], source.name


def test_the_api_has_every_route_and_the_stage_is_throttled(rehearsal: Rehearsal) -> None:
    from app import app

    apigateway, api = rehearsal.client("apigateway"), rest_api(rehearsal)
    api_arn = functions_of(rehearsal)["api_handler"]["FunctionArn"]
    resources = {r["path"]: r for r in apigateway.get_resources(restApiId=api["id"])["items"]}
    for path, methods in app.routes.items():
        assert path in resources, path
        assert set(methods) <= set(resources[path].get("resourceMethods", {})), path
        for method in methods:
            integration = apigateway.get_integration(
                restApiId=api["id"], resourceId=resources[path]["id"], httpMethod=method
            )
            # Chalice writes "aws_proxy" in its Swagger; API Gateway reports it upper-case.
            assert integration["type"].upper() == "AWS_PROXY" and api_arn in integration["uri"], (
                path,
                method,
            )
    limits = rehearsal.config()["stages"][STAGE]["api_throttling"]
    settings = apigateway.get_stage(restApiId=api["id"], stageName="api")["methodSettings"]["*/*"]
    assert (settings["throttlingRateLimit"], settings["throttlingBurstLimit"]) == (
        limits["rate_limit"],
        limits["burst_limit"],
    )
    assert f"https://{api['id']}.execute-api.{HOME}.amazonaws.com/api/" in rehearsal.printed["deploy"]


def test_the_environment_is_the_stages_plus_cdn_and_queue_and_holds_no_secret(rehearsal: Rehearsal) -> None:
    target = rehearsal.target()
    images, _ = distribution(rehearsal)
    queue = rehearsal.client("sqs").get_queue_url(QueueName=target.resize_dlq)["QueueUrl"]
    expected = {**stage_environment(STAGE, rehearsal.project), "PUBLIC_BASE_URL": f"https://{images['DomainName']}",
                "RESIZE_DLQ_URL": queue}  # fmt: skip
    lam = rehearsal.client("lambda")
    assert len(rehearsal.admin_token) >= 40 and len(rehearsal.render_key) >= 40
    for name, fn in functions_of(rehearsal).items():
        assert fn["Environment"]["Variables"] == expected, name
        described = json.dumps(lam.get_function(FunctionName=fn["FunctionName"]), default=str)
        assert rehearsal.admin_token not in described and rehearsal.render_key not in described, name
        assert "ADMIN_TOKEN" not in fn["Environment"]["Variables"]
        assert "RENDER_SIGNING_KEY" not in fn["Environment"]["Variables"]
    ssm = rehearsal.client("ssm")
    for variable, value in (
        ("ADMIN_TOKEN_PARAMETER", rehearsal.admin_token),
        ("RENDER_SIGNING_KEY_PARAMETER", rehearsal.render_key),
    ):
        stored = ssm.get_parameter(Name=expected[variable], WithDecryption=True)["Parameter"]
        assert (stored["Type"], stored["Value"]) == ("SecureString", value), variable
    # Both were stored first: deploy has nothing to remind.
    assert "deletion is off" not in rehearsal.printed["deploy"]
    assert "make render-key" not in rehearsal.printed["deploy"]


def test_images_are_served_by_a_cloudfront_distribution_that_alone_may_read_them(
    rehearsal: Rehearsal,
) -> None:
    target, cloudfront, s3 = rehearsal.target(), rehearsal.client("cloudfront"), rehearsal.client("s3")
    images, config = distribution(rehearsal)
    assert config["Enabled"] is True
    [origin] = config["Origins"]["Items"]
    assert origin["DomainName"] == f"{target.images_bucket}.s3.{HOME}.amazonaws.com"
    assert origin["OriginPath"] == "" and origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    control = cloudfront.get_origin_access_control(Id=origin["OriginAccessControlId"])["OriginAccessControl"]
    assert control["OriginAccessControlConfig"] | {"Description": ""} == {
        "Name": target.images_bucket,
        "Description": "",
        "SigningProtocol": "sigv4",
        "SigningBehavior": "always",
        "OriginAccessControlOriginType": "s3",
    }
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["TargetOriginId"] == origin["Id"]
    assert behaviour["ViewerProtocolPolicy"] == "https-only"
    assert behaviour["AllowedMethods"]["Items"] == ["GET", "HEAD"]
    assert behaviour["CachePolicyId"] == cdn.CACHING_OPTIMIZED

    policy = json.loads(s3.get_bucket_policy(Bucket=target.images_bucket)["Policy"])
    [allow] = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow["Action"] == "s3:GetObject" and allow["Resource"] == f"arn:aws:s3:::{target.images_bucket}/*"
    assert allow["Condition"] == {"StringEquals": {"AWS:SourceArn": images["ARN"]}}
    for bucket in (target.images_bucket, target.upload_bucket):
        statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
        [deny] = [s for s in statements if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and deny["Action"] == "s3:*"
        assert sorted(deny["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
        assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
        assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())


def test_the_api_hands_out_cdn_urls_that_never_expire(
    rehearsal: Rehearsal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app run here, through Chalice's test client (to read every answer), with exactly the
    deployed function's environment: upload, resize, then what the API answers, the
    renders it makes on demand (the signed one checked with the key in SSM), and what the
    operations function answers."""
    from chalice.test import Client

    from app import app
    from chalicelib import auth, operations, storage
    from tests.support import jpeg, s3_event

    target = rehearsal.target()
    images, _ = distribution(rehearsal)
    deployed_env = functions_of(rehearsal)["api_handler"]["Environment"]["Variables"]
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in {
        **deployed_env,
        "AWS_ENDPOINT_URL": rehearsal.moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": HOME,
    }.items():
        monkeypatch.setenv(name, value)
    # A Chalice stage that adds nothing: the environment above is the deployed one, as it is.
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(
        json.dumps(
            {"version": "2.0", "app_name": APP_NAME, "stages": {"deployed": {"api_gateway_stage": "api"}}}
        )
    )
    storage.reset_clients()
    auth.reset_cache()
    s3 = rehearsal.client("s3")
    try:
        with Client(app, stage_name="deployed", project_dir=str(tmp_path)) as client:
            grant = json.loads(
                client.http.post(
                    "/uploads",
                    headers={"Content-Type": "application/json"},
                    body=json.dumps({"filename": "cat.jpg", "content_type": "image/jpeg"}),
                ).body
            )
            key = grant["fields"]["key"]
            s3.put_object(
                Bucket=target.upload_bucket,
                Key=key,
                Body=jpeg(900, 600),
                Metadata={"filename": grant["fields"]["x-amz-meta-filename"]},
            )
            client.lambda_.invoke("resize", s3_event(key, bucket=target.upload_bucket))
            image = json.loads(client.http.get(f"/images/{grant['id']}").body)
            listed = json.loads(client.http.get("/images").body)["images"]
            page = client.http.get("/")
            # Renders on demand: a preset; parameters refused unsigned, and signed with the key
            # `make render-key` stored; the operations function invoked as an SDK client would.
            renders = {"preset": client.http.get(f"/images/{grant['id']}/render?preset=thumb")}
            unsigned = client.http.get(f"/images/{grant['id']}/render?w=300&format=webp")
            spec = operations.parse({"w": ["300"], "format": ["webp"]})
            signature = operations.sign(spec, rehearsal.render_key, grant["id"])
            renders["signed"] = client.http.get(
                f"/images/{grant['id']}/render?w=300&format=webp&sig={signature}"
            )
            operated = client.lambda_.invoke(
                "operations", {"operation": "thumbnail", "id": grant["id"]}
            ).payload
    finally:
        storage.reset_clients()
        auth.reset_cache()
    assert unsigned.status_code == 403, unsigned.body
    render_urls = [response.headers.get("Location", "") for response in renders.values()]
    assert [response.status_code for response in renders.values()] == [302, 302], renders
    for url in [*render_urls, operated.get("url", "")]:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == f"https://{images['DomainName']}" and not parts.query, (
            url
        )
        stored = s3.head_object(Bucket=target.images_bucket, Key=unquote(parts.path.lstrip("/")))
        assert stored["CacheControl"] == "public, max-age=86400", url  # a replaced original renders anew
    assert len(set(render_urls)) == 2 and operated["url"] not in render_urls, operated
    assert image["status"] == "ready" and len(image["renditions"]) == 2, image
    assert [i for i in listed if i["id"] == grant["id"]] == [image]
    for rendition in image["renditions"]:
        parts = urlsplit(rendition["url"])
        assert f"{parts.scheme}://{parts.netloc}" == f"https://{images['DomainName']}", rendition["url"]
        assert parts.query == "" and "X-Amz-" not in rendition["url"]  # no signature, no expiry
        # The distribution's origin is the images bucket at its root: the URL's path is the key.
        stored = s3.head_object(Bucket=target.images_bucket, Key=unquote(parts.path.lstrip("/")))
        assert "immutable" in stored["CacheControl"]
    assert f"https://{images['DomainName']}" in page.headers["Content-Security-Policy"]


def invoke(run: Rehearsal, function: str, event: dict[str, Any]) -> dict[str, Any]:
    """The deployed ``function`` invoked as an SDK client would; its answer, failing on a function error."""
    answer = run.client("lambda").invoke(
        FunctionName=run.target().function_name(function), Payload=json.dumps(event)
    )
    payload: dict[str, Any] = json.load(answer["Payload"])
    assert "FunctionError" not in answer, (function, payload)
    return payload


def test_the_deployed_package_runs_on_real_events(rehearsal: Rehearsal) -> None:
    """The zip `chalice deploy` uploaded, run by moto's server (its fix 6) on events AWS makes:
    S3's notification of an upload invokes the resize function, which makes the image; the API
    function then answers API Gateway's event for the list, and the reconcile function its schedule's."""
    from chalice.local import LambdaEventConverter, RouteMatcher

    from app import app
    from tests.support import jpeg

    target, s3 = rehearsal.target(), rehearsal.client("s3")
    s3.put_object(
        Bucket=target.upload_bucket, Key="uploads/holiday/harbour at dawn.jpg", Body=jpeg(1200, 800)
    )
    gateway = LambdaEventConverter(RouteMatcher(list(app.routes)))
    deadline = time.monotonic() + 60
    while True:  # S3 notifies after it answered the upload, as AWS does
        answer = invoke(rehearsal, "api_handler", gateway.create_lambda_event("GET", "/images", {}))
        assert answer["statusCode"] == 200, answer
        listed = json.loads(answer["body"])["images"]
        images = [i for i in listed if i.get("original", {}).get("filename") == "harbour at dawn.jpg"]
        if (images and images[0]["status"] != "pending") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert images and images[0]["status"] == "ready", listed
    assert [(r["width"], r["height"]) for r in images[0]["renditions"]] == [(400, 267), (1200, 800)]
    for rendition in images[0]["renditions"]:
        key = unquote(urlsplit(rendition["url"]).path.lstrip("/"))
        assert s3.head_object(Bucket=target.images_bucket, Key=key)["ContentType"] == "image/jpeg"
    scheduled = {"version": "0", "id": "rehearsal", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-12-01T00:00:00Z", "region": HOME,
                 "resources": [], "detail": {}}  # fmt: skip
    invoke(rehearsal, "reconcile", scheduled)


def test_failed_resizes_reach_a_dead_letter_queue_and_alarms_watch_it(rehearsal: Rehearsal) -> None:
    from moto.iam.access_control import IAMPolicy, PermissionResult

    target, sqs = rehearsal.target(), rehearsal.client("sqs")
    queue = sqs.get_queue_url(QueueName=target.resize_dlq)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    routing = rehearsal.client("lambda").get_function_event_invoke_config(
        FunctionName=target.function_name("resize")
    )
    assert routing["DestinationConfig"]["OnFailure"]["Destination"] == attributes["QueueArn"]
    assert routing["MaximumRetryAttempts"] == 2
    # The resize role may send there (Lambda sends as the function), and nowhere else.
    role = functions_of(rehearsal)["resize"]["Role"].rsplit("/", 1)[-1]
    iam = rehearsal.client("iam")
    [inline] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    granted = IAMPolicy(json.dumps(iam.get_role_policy(RoleName=role, PolicyName=inline)["PolicyDocument"]))
    assert (
        granted.is_action_permitted("sqs:SendMessage", attributes["QueueArn"]) == PermissionResult.PERMITTED
    )
    other_queue = attributes["QueueArn"].replace(target.resize_dlq, "someone-elses-queue")
    assert granted.is_action_permitted("sqs:SendMessage", other_queue) != PermissionResult.PERMITTED
    # The reconciler drains it: every function reads its URL from RESIZE_DLQ_URL.
    assert functions_of(rehearsal)["reconcile"]["Environment"]["Variables"]["RESIZE_DLQ_URL"] == queue

    alarms = {
        a["AlarmName"]: a
        for a in rehearsal.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{APP_NAME}-{STAGE}-")[
            "MetricAlarms"
        ]
    }
    topic = f"arn:aws:sns:{HOME}:123456789012:{APP_NAME}-{STAGE}-alarms"
    watched = {
        name: (
            a["Namespace"],
            a["MetricName"],
            {d["Name"]: d["Value"] for d in a["Dimensions"]},
            a["AlarmActions"],
        )
        for name, a in alarms.items()
    }
    assert watched == {
        f"{APP_NAME}-{STAGE}-resize-errors": (
            "AWS/Lambda",
            "Errors",
            {"FunctionName": target.function_name("resize")},
            [topic],
        ),
        f"{APP_NAME}-{STAGE}-resize-dlq-depth": (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": target.resize_dlq},
            [topic],
        ),
        f"{APP_NAME}-{STAGE}-api-5xx": (
            "AWS/ApiGateway",
            "5XXError",
            {"ApiName": rest_api(rehearsal)["name"], "Stage": "api"},
            [topic],
        ),
        f"{APP_NAME}-{STAGE}-operations-errors": (
            "AWS/Lambda",
            "Errors",
            {"FunctionName": target.function_name("operations")},
            [topic],
        ),
    }
    assert all(
        a["Threshold"] >= 1 and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        for a in alarms.values()
    )


def test_upload_lifecycle_and_log_retention(rehearsal: Rehearsal) -> None:
    target, s3, logs = rehearsal.target(), rehearsal.client("s3"), rehearsal.client("logs")
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=target.upload_bucket)["Rules"]}
    assert rules["abort-abandoned-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # dev keeps originals (DELETE_ORIGINALS=false): only those tagged failed (never images) expire.
    expiring = {r["Filter"]["And"]["Prefix"]: r for r in rules.values() if "Expiration" in r}
    assert sorted(expiring) == ["originals/", "uploads/"]
    assert all(
        r["Filter"]["And"]["Tags"] == [{"Key": "imageshelf-state", "Value": "failed"}]
        and r["Expiration"] == {"Days": 30}
        for r in expiring.values()
    )
    days = rehearsal.config()["stages"][STAGE]["log_retention_days"]
    for fn in functions_of(rehearsal).values():
        [group] = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{fn['FunctionName']}")[
            "logGroups"
        ][:1]
        assert (
            group["logGroupName"] == f"/aws/lambda/{fn['FunctionName']}" and group["retentionInDays"] == days
        )


# --- updating, a second region, removing --------------------------------------------------------


def snapshot(run: Rehearsal, region: str = HOME) -> dict[str, Any]:
    """The identities of what a deployment is made of: the same after an update in place."""
    target = run.target(region)
    images, _ = distribution(run, region)
    return {
        "functions": {name: fn["FunctionArn"] for name, fn in functions_of(run, region).items()},
        "roles": sorted(fn["Role"] for fn in functions_of(run, region).values()),
        "api": rest_api(run, region)["id"],
        "distribution": images["Id"],
        "queue": run.client("sqs", region).get_queue_url(QueueName=target.resize_dlq)["QueueUrl"],
        "alarms": sorted(
            a["AlarmName"] for a in run.client("cloudwatch", region).describe_alarms()["MetricAlarms"]
        ),
        # S3 names each notification anew when it is put again: compare what it does.
        "notification": [
            {k: v for k, v in n.items() if k != "Id"}
            for n in run.client("s3")
            .get_bucket_notification_configuration(Bucket=target.upload_bucket)
            .get("LambdaFunctionConfigurations", [])
        ],
    }


def test_a_second_deploy_updates_in_place(rehearsal: Rehearsal) -> None:
    before = snapshot(rehearsal)
    path = rehearsal.project / ".chalice" / "config.json"
    original = path.read_text()
    changed = json.loads(original)
    changed["stages"][STAGE]["lambda_functions"]["api_handler"]["lambda_memory_size"] = 640
    changed["stages"][STAGE]["api_throttling"]["rate_limit"] = 12
    path.write_text(json.dumps(changed, indent=2))
    try:
        printed = rehearsal.make("deploy")
        assert snapshot(rehearsal) == before
        assert "Updating lambda function" in printed and "Creating lambda function" not in printed
        assert f"CloudFront distribution {before['distribution']} is as configured" in printed
        assert functions_of(rehearsal)["api_handler"]["MemorySize"] == 640
        api = rest_api(rehearsal)["id"]
        stage = rehearsal.client("apigateway").get_stage(restApiId=api, stageName="api")
        assert stage["methodSettings"]["*/*"]["throttlingRateLimit"] == 12
        assert len(rehearsal.client("cloudfront").list_distributions()["DistributionList"]["Items"]) == 1
    finally:
        path.write_text(original)


def test_a_deploy_puts_back_what_was_changed_by_hand(rehearsal: Rehearsal) -> None:
    """Someone allows plain HTTP on the distribution and opens the images bucket to everyone."""
    target, cloudfront, s3 = rehearsal.target(), rehearsal.client("cloudfront"), rehearsal.client("s3")
    images, config = distribution(rehearsal)
    loosened = {
        **config,
        "DefaultCacheBehavior": {**config["DefaultCacheBehavior"], "ViewerProtocolPolicy": "allow-all"},
    }
    etag = cloudfront.get_distribution_config(Id=images["Id"])["ETag"]
    cloudfront.update_distribution(Id=images["Id"], IfMatch=etag, DistributionConfig=loosened)
    everyone = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{target.images_bucket}/*"}  # fmt: skip
    open_policy = {"Version": "2012-10-17", "Statement": [everyone]}
    s3.put_bucket_policy(Bucket=target.images_bucket, Policy=json.dumps(open_policy))

    printed = rehearsal.make("deploy")
    assert f"updated CloudFront distribution {images['Id']}" in printed
    _, config = distribution(rehearsal)
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "https-only"
    policy = json.loads(s3.get_bucket_policy(Bucket=target.images_bucket)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["CloudFrontReadsImages", "HttpsOnly"]
    assert s3.get_bucket_policy_status(Bucket=target.images_bucket)["PolicyStatus"]["IsPublic"] is False


def test_a_second_region_deploys_beside_the_first(rehearsal: Rehearsal) -> None:
    home = snapshot(rehearsal)
    home_env = functions_of(rehearsal)["api_handler"]["Environment"]["Variables"]
    printed = rehearsal.make("deploy", REGION=OTHER)
    assert f"as the regional copy {STAGE}-{OTHER}" in printed
    # SSM is regional: the copy has no render key (nor admin token) until one is made there.
    assert f"make render-key STAGE={STAGE} REGION={OTHER}" in printed
    assert f"make admin-token STAGE={STAGE} REGION={OTHER}" in printed
    copy = rehearsal.target(OTHER)
    assert (copy.name, copy.upload_bucket, copy.images_bucket) == (
        f"{STAGE}-{OTHER}",
        f"imageshelf-{STAGE}-uploads-{OTHER}",
        f"imageshelf-{STAGE}-images-{OTHER}",
    )
    # The first region is as it was.
    assert snapshot(rehearsal) == home
    assert functions_of(rehearsal)["api_handler"]["Environment"]["Variables"] == home_env

    s3, iam = rehearsal.client("s3"), rehearsal.client("iam")
    for bucket in (copy.upload_bucket, copy.images_bucket):
        assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == OTHER
    there = snapshot(rehearsal, OTHER)
    assert there["distribution"] != home["distribution"] and there["api"] != home["api"]
    [notification] = there["notification"]
    assert (
        notification["LambdaFunctionArn"]
        == f"arn:aws:lambda:{OTHER}:123456789012:function:{copy.function_name('resize')}"
    )
    images, config = distribution(rehearsal, OTHER)
    assert config["Origins"]["Items"][0]["DomainName"] == f"{copy.images_bucket}.s3.{OTHER}.amazonaws.com"
    configured = rehearsal.config()["stages"][STAGE]["lambda_functions"]
    for name, fn in functions_of(rehearsal, OTHER).items():
        env = fn["Environment"]["Variables"]
        assert (env["UPLOAD_BUCKET"], env["IMAGES_BUCKET"]) == (copy.upload_bucket, copy.images_bucket)
        assert env["PUBLIC_BASE_URL"] == f"https://{images['DomainName']}" != home_env["PUBLIC_BASE_URL"]
        assert env["RESIZE_DLQ_URL"].endswith(f"/{APP_NAME}-{STAGE}-{OTHER}-resize-dlq")
        role = fn["Role"].rsplit("/", 1)[-1]
        assert role == f"{APP_NAME}-{STAGE}-{OTHER}-{name}"
        [inline] = iam.list_role_policies(RoleName=role)["PolicyNames"]
        granted = iam.get_role_policy(RoleName=role, PolicyName=inline)["PolicyDocument"]
        written = json.loads(
            (rehearsal.project / ".chalice" / configured[name]["iam_policy_file"]).read_text()
        )
        assert granted == regional_policy(written, copy, rehearsal.project)
        # The same statements, naming only the copy's resources, in its region.
        assert [(s["Sid"], s["Action"]) for s in granted["Statement"]] == [
            (s["Sid"], s["Action"]) for s in written["Statement"]
        ]
        text = json.dumps(granted)
        assert f'{STAGE}-uploads"' not in text and f"{STAGE}-images/" not in text
        arns = re.findall(r'"(arn:aws:(?!s3)[a-z]+:[^:"]*:)', text)
        assert arns and {a.split(":")[3] for a in arns} == {OTHER}, arns

    # Its own admin token, in its own region's SSM.
    printed = rehearsal.make("admin-token", REGION=OTHER)
    token = printed.strip().splitlines()[-1]
    parameter = home_env["ADMIN_TOKEN_PARAMETER"]
    assert (
        rehearsal.client("ssm", OTHER).get_parameter(Name=parameter, WithDecryption=True)["Parameter"][
            "Value"
        ]
        == token
    )
    assert rehearsal.client("ssm").get_parameter(Name=parameter, WithDecryption=True)["Parameter"][
        "Value"
    ] == (rehearsal.admin_token)


def test_destroy_removes_what_deploy_made_and_keeps_buckets_holding_images(rehearsal: Rehearsal) -> None:
    home, copy = rehearsal.target(), rehearsal.target(OTHER)
    s3 = rehearsal.client("s3")
    for bucket in (home.upload_bucket, home.images_bucket):
        s3.put_object(Bucket=bucket, Key="kept-by-destroy", Body=b"x")
    copy_functions = snapshot(rehearsal, OTHER)["functions"]

    printed = rehearsal.make("destroy")
    assert f"kept s3://{home.upload_bucket} and s3://{home.images_bucket}" in printed
    # The secrets stay (a redeploy keeps its signed render URLs working), and destroy says so.
    assert f"the render key /imageshelf/{STAGE}/render-key (SSM, {HOME}) is left as it is" in printed
    assert f"make destroy STAGE={STAGE} DELETE_BUCKETS=1" in printed
    assert_gone(rehearsal, home)
    for bucket in (home.upload_bucket, home.images_bucket):
        assert s3.get_object(Bucket=bucket, Key="kept-by-destroy")["Body"].read() == b"x"
        statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
        assert [s["Sid"] for s in statements] == ["HttpsOnly"]  # the distribution's grant went with it
    assert not s3.get_bucket_notification_configuration(Bucket=home.upload_bucket).get(
        "LambdaFunctionConfigurations"
    )
    # The other region is untouched.
    assert snapshot(rehearsal, OTHER)["functions"] == copy_functions

    rehearsal.make("destroy", REGION=OTHER, DELETE_BUCKETS="1")
    assert_gone(rehearsal, copy)
    rehearsal.make("destroy", DELETE_BUCKETS="1")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert buckets == []
    cloudfront = rehearsal.client("cloudfront")
    assert not cloudfront.list_distributions()["DistributionList"].get("Items")
    assert not cloudfront.list_origin_access_controls()["OriginAccessControlList"].get("Items")


def assert_gone(run: Rehearsal, target: Deployment) -> None:
    """Nothing of the deployment is left but its buckets."""
    region = target.region
    lam, iam = run.client("lambda", region), run.client("iam")
    assert not [
        f
        for f in lam.list_functions()["Functions"]
        if f["FunctionName"].startswith(f"{APP_NAME}-{target.name}")
    ]
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
    assert not [r for r in roles if r in {f"{APP_NAME}-{target.name}-{fn}" for fn in target.functions}]
    assert run.client("apigateway", region).get_rest_apis()["items"] == []
    assert not run.client("events", region).list_rules(NamePrefix=f"{APP_NAME}-{target.name}-")["Rules"]
    assert not run.client("cloudwatch", region).describe_alarms(AlarmNamePrefix=f"{APP_NAME}-{target.name}-")[
        "MetricAlarms"
    ]
    assert not run.client("sqs", region).list_queues(QueueNamePrefix=target.resize_dlq).get("QueueUrls")
    assert not [
        t
        for t in run.client("sns", region).list_topics()["Topics"]
        if t["TopicArn"].endswith(f":{APP_NAME}-{target.name}-alarms")
    ]
    groups = run.client("logs", region).describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/{APP_NAME}-{target.name}"
    )
    assert groups["logGroups"] == []
    assert cdn.find(run.client("cloudfront"), target.name, target.images_bucket) is None
