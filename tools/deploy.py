"""Deploy a stage to AWS, remove it, or package it offline: what ``make deploy``, ``make destroy``
and ``make package`` run.

``python -m tools.deploy deploy --stage prod [--region eu-west-1]``:

1. says which account, region and deployment it is about to deploy: the stage's home region, or
   a regional copy with names of its own (``tools/deployment.py``);
2. provisions the buckets (``tools/provision.py``): Chalice subscribes the resize function to the
   upload bucket, so the bucket must exist first;
3. creates or updates the CloudFront distribution in front of the images bucket and both
   buckets' policies (``tools/cdn.py``), and the resize function's dead-letter queue;
4. runs ``chalice deploy`` in the generated project ``build/deploy/<name>/``, whose stage
   environment adds what only exists now: ``PUBLIC_BASE_URL`` (the distribution) and
   ``RESIZE_DLQ_URL`` (the queue);
5. adds the deployed API's origin to the buckets' CORS rules (the gallery is served from it, and
   it is only known after the first deploy);
6. sets the stage's ``log_retention_days`` on the functions' log groups. Chalice's own
   ``log_retention_in_days`` is not used: in Chalice 1.34 it makes ``chalice package
   --pkg-format terraform`` fail, and it names the API function's log group wrongly;
7. routes the resize function's failed events to the queue, throttles the API stage
   (``api_throttling``) and creates the alarms (``tools/monitoring.py``), the operations
   function's errors among them.

``python -m tools.deploy destroy --stage prod [--region eu-west-1] [--delete-buckets]`` removes
all of that; the buckets, if they hold anything, only with ``--delete-buckets``.

``python -m tools.deploy admin-token --stage prod [--region ...]`` stores a new random admin token
in the deployment's SSM parameter (``ADMIN_TOKEN_PARAMETER``, a SecureString, in its region) and
prints it: that turns deletion on, or rotates the token (the API function picks it up within five
minutes).

``python -m tools.deploy upload-token --stage prod [--region ...]`` does the same for the upload
token (``UPLOAD_TOKEN_PARAMETER``), for a stage that opted in to upload authorisation
(docs/deploy.md, "Upload token"): until it runs, that stage refuses every upload.

``python -m tools.deploy render-key --stage prod [--region ...]`` does the same for the key render
URLs are signed with (``RENDER_SIGNING_KEY_PARAMETER``): until it runs, the stage renders presets
only; rotating it invalidates every signed render URL handed out before (within five minutes).

``python -m tools.deploy package --stage dev`` runs ``chalice package --pkg-format terraform`` into
``build/dev`` with placeholder credentials: packaging never calls AWS.

Every command takes the region from ``--region`` (``make ... REGION=``), else the AWS session's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from tools import cdn, monitoring
from tools.deployment import (
    Deployment,
    deployed,
    lambda_function_name,
    render_project,
    resolve,
    stage_config,
)
from tools.provision import ROOT, bucket_region, provision, stage_environment, stage_origins


def chalice_command() -> list[str]:
    """The ``chalice`` of this virtualenv (the one whose Python matches the Lambda runtime)."""
    script = Path(sys.executable).with_name("chalice")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chalice.cli"]


def function_names(stage: str, project_dir: Path = ROOT) -> dict[str, str]:
    """Lambda function names Chalice gives the stage's functions, by Chalice's name for each."""
    return {
        fn: lambda_function_name(stage, fn)
        for fn in stage_config(stage, project_dir).get("lambda_functions", {})
    }


def chalice_env(project_dir: Path) -> dict[str, str]:
    """The environment for running chalice, with this machine's bytecode out of the way.

    Chalice zips everything under chalicelib/, ``__pycache__`` included, and imports app.py
    (writing new ``.pyc`` files) before it zips: remove them and stop Python writing more.
    """
    for cache in (project_dir / "chalicelib").rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def package(stage: str, out: Path, project_dir: Path = ROOT) -> Path:
    """``chalice package --pkg-format terraform`` into ``out``; returns ``out``."""
    out = out.absolute()  # a relative ``out`` is the caller's, not the project's (Chalice's cwd)
    if out.exists():
        shutil.rmtree(out)
    env = {k: v for k, v in chalice_env(project_dir).items() if not k.startswith("AWS_")}
    # Packaging reads no AWS state, but botocore wants a region and credentials to exist.
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="packaging-only",
        AWS_SECRET_ACCESS_KEY="packaging-only",
    )
    subprocess.run(
        [
            *chalice_command(),
            "--project-dir",
            str(project_dir),
            "package",
            "--pkg-format",
            "terraform",
            "--stage",
            stage,
            str(out),
        ],
        env=env,
        check=True,
    )
    return out


def api_origin(resources: dict[str, dict[str, Any]]) -> str | None:
    """The deployed API's origin (``https://<id>.execute-api.<region>.amazonaws.com``)."""
    url = resources.get("rest_api", {}).get("rest_api_url")
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def deployed_functions(resources: dict[str, dict[str, Any]]) -> list[str]:
    """The Lambda function names Chalice recorded."""
    return [
        r["lambda_arn"].rsplit(":", 1)[-1]
        for r in resources.values()
        if r.get("resource_type") == "lambda_function"
    ]


def set_log_retention(logs: Any, functions: list[str], days: int) -> list[str]:
    """Create the functions' log groups if missing and set their retention (idempotent)."""
    done = []
    for name in functions:
        group = f"/aws/lambda/{name}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)
        done.append(f"{group}: logs kept {days} days")
    return done


class Token(NamedTuple):
    """A secret a stage may keep in SSM, made by ``make <kind>``, read by the API function."""

    variable: str  # the stage's setting naming the parameter
    purpose: str  # the parameter's description
    statement: str  # the API policy's statement that reads it (docs/deploy.md, "IAM")
    effect: str  # what is off while the parameter does not exist


# The secrets a stage may keep in SSM, by the make target (and tools.deploy command) that makes one.
TOKENS = {
    "admin-token": Token(
        "ADMIN_TOKEN_PARAMETER", "bearer token for DELETE /images/{id}", "ReadAdminToken", "deletion is off"
    ),
    "upload-token": Token(
        "UPLOAD_TOKEN_PARAMETER", "bearer token for POST /uploads", "ReadUploadToken", "uploads are refused"
    ),
    "render-key": Token(
        "RENDER_SIGNING_KEY_PARAMETER",
        "HMAC key of signed render URLs (GET /images/{id}/render)",
        "ReadRenderKey",
        "renders other than presets are refused",
    ),
}


def store_admin_token(ssm: Any, stage: str, project_dir: Path = ROOT) -> tuple[str, str]:
    """Put a new random admin token in the stage's SSM parameter; returns (parameter, token)."""
    return store_token(ssm, stage, "admin-token", project_dir)


def store_upload_token(ssm: Any, stage: str, project_dir: Path = ROOT) -> tuple[str, str]:
    """Put a new random upload token in the stage's SSM parameter; returns (parameter, token)."""
    return store_token(ssm, stage, "upload-token", project_dir)


def store_token(ssm: Any, stage: str, kind: str, project_dir: Path = ROOT) -> tuple[str, str]:
    """A new random ``kind`` secret (``TOKENS``) in the stage's SSM parameter: (parameter, value)."""
    token_spec = TOKENS[kind]
    name = stage_environment(stage, project_dir).get(token_spec.variable)
    if not name:
        raise SystemExit(
            f"stage {stage} has no {token_spec.variable} in .chalice/config.json: add one "
            f"(/imageshelf/{stage}/{kind}) and grant ssm:GetParameter on it in "
            f"policy-{stage}-api_handler.json (the {token_spec.statement} statement, docs/deploy.md)"
        )
    token = secrets.token_urlsafe(32)
    ssm.put_parameter(
        Name=name,
        Value=token,
        Type="SecureString",
        Overwrite=True,
        Description=f"imageshelf {stage}: {token_spec.purpose}",
    )
    return name, token


def token_hint(ssm: Any, stage: str, setting: str, project_dir: Path = ROOT, region: str = "") -> str | None:
    """What to do when the stage reads a secret from SSM (``setting``, a ``TOKENS`` variable) and the
    parameter is not there yet; None when it is, or when the stage does not use that secret."""
    name = stage_environment(stage, project_dir).get(setting)
    if not name:
        return None
    from botocore.exceptions import ClientError

    target, token_spec = next((kind, t) for kind, t in TOKENS.items() if t.variable == setting)
    try:
        ssm.get_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        where = f" REGION={region}" if region else ""
        what = target.replace("-", " ")
        return f"{token_spec.effect} until the {what} exists: make {target} STAGE={stage}{where}"
    except ClientError as error:  # the deploy itself worked: say what is unknown, do not fail
        return f"could not check the {target.replace('-', ' ')} {name} ({error.response['Error']['Code']})"
    return None


def admin_token_hint(ssm: Any, stage: str, project_dir: Path = ROOT, region: str = "") -> str | None:
    """``token_hint`` for the admin token."""
    return token_hint(ssm, stage, "ADMIN_TOKEN_PARAMETER", project_dir, region)


def upload_token_hint(ssm: Any, stage: str, project_dir: Path = ROOT, region: str = "") -> str | None:
    """``token_hint`` for the upload token."""
    return token_hint(ssm, stage, "UPLOAD_TOKEN_PARAMETER", project_dir, region)


def render_key_hint(ssm: Any, stage: str, project_dir: Path = ROOT, region: str = "") -> str | None:
    """``token_hint`` for the render signing key."""
    return token_hint(ssm, stage, "RENDER_SIGNING_KEY_PARAMETER", project_dir, region)


def aws_session(region: str | None = None) -> Any:
    """A boto3 session in ``region``, or in the session's own region."""
    import boto3

    session = boto3.session.Session(region_name=region or None)
    if not session.region_name:
        raise SystemExit(
            "no AWS region: set REGION= (make) or AWS_DEFAULT_REGION, or a profile with a region"
        )
    return session


def target(stage: str, session: Any, project_dir: Path = ROOT) -> Deployment:
    """The deployment of ``stage`` in the session's region (``tools/deployment.py``)."""
    return resolve(stage, session.region_name, session.client("s3"), project_dir)


def run_chalice(command: str, found: Deployment, project: Path) -> None:
    """``chalice <command> --stage <name>`` in the generated project, in the deployment's region."""
    env = {**chalice_env(project), "AWS_DEFAULT_REGION": found.region, "AWS_REGION": found.region}
    subprocess.run(
        [*chalice_command(), "--project-dir", str(project), command, "--stage", found.name],
        env=env,
        check=True,
    )


def describe(found: Deployment, account: str) -> str:
    """What is about to be deployed where (printed before anything changes)."""
    where = f"stage {found.stage} to account {account}, region {found.region}"
    if found.regional_copy:
        return (
            f"deploying {where} as the regional copy {found.name} (the stage's home is another "
            f"region): buckets s3://{found.upload_bucket} and s3://{found.images_bucket}"
        )
    return f"deploying {where}"


def deploy(stage: str, region: str | None = None, project_dir: Path = ROOT) -> None:
    """``make deploy``: the steps in this module's docstring, each idempotent."""
    session = aws_session(region)
    found = target(stage, session, project_dir)
    print(describe(found, account=session.client("sts").get_caller_identity()["Account"]), flush=True)
    s3 = session.client("s3")
    known = [o for o in [api_origin(deployed(found.name, project_dir))] if o]
    say(_buckets(s3, found, known))
    images, done = cdn.ensure(
        session.client("cloudfront"), s3, found.name, found.images_bucket, found.upload_bucket, found.region
    )
    say(done)
    queue_url, queue_arn = monitoring.ensure_queue(session.client("sqs"), found.resize_dlq)
    print(f"dead-letter queue {found.resize_dlq}", flush=True)
    settings = {"PUBLIC_BASE_URL": images.base_url, "RESIZE_DLQ_URL": queue_url}
    run_chalice("deploy", found, render_project(found, settings, project_dir))

    resources = deployed(found.name, project_dir)
    origin = api_origin(resources)
    if origin and origin not in known:
        say(_buckets(s3, found, [origin]))
    config = stage_config(stage, project_dir)
    if config.get("log_retention_days"):
        logs = session.client("logs")
        say(set_log_retention(logs, deployed_functions(resources), int(config["log_retention_days"])))
    say([monitoring.route_failures(session.client("lambda"), found.function_name("resize"), queue_arn)])
    api_stage = config.get("api_gateway_stage", "api")
    if "rest_api" in resources:
        say(_guard_api(session, found, resources["rest_api"]["rest_api_id"], api_stage, config))
    where = found.region if found.regional_copy else ""
    ssm = session.client("ssm")
    for token_spec in TOKENS.values():
        hint = token_hint(ssm, stage, token_spec.variable, project_dir, where)
        if hint:
            print(hint)
    print(f"images: {images.base_url}/ (CloudFront distribution {images.id})")
    if origin:
        print(f"gallery: {origin}/{api_stage}/")


def _buckets(s3: Any, found: Deployment, origins: list[str]) -> list[str]:
    """Provision the deployment's buckets, with CORS for the stage's origins and ``origins``."""
    return provision(s3, found.upload_bucket, found.images_bucket, stage_origins(found.env, origins))


def _guard_api(
    session: Any, found: Deployment, rest_api_id: str, api_stage: str, config: dict[str, Any]
) -> list[str]:
    """Throttle the API stage and (re)create the alarms, which name the deployed API."""
    apigateway = session.client("apigateway")
    done = []
    limits = config.get("api_throttling")
    if limits:
        done.append(
            monitoring.throttle(
                apigateway, rest_api_id, api_stage, limits["rate_limit"], limits["burst_limit"]
            )
        )
    api_name = apigateway.get_rest_api(restApiId=rest_api_id)["name"]
    return done + monitoring.ensure_alarms(
        session.client("cloudwatch"),
        session.client("sns"),
        found.prefix,
        found.function_name,
        found.resize_dlq,
        api_name,
        api_stage,
    )


def destroy(
    stage: str, region: str | None = None, delete_buckets: bool = False, project_dir: Path = ROOT
) -> None:
    """Remove what ``deploy`` made; buckets holding anything only with ``delete_buckets``."""
    session = aws_session(region)
    found = target(stage, session, project_dir)
    print(f"removing stage {stage} ({found.name}) from region {found.region}", flush=True)
    functions = deployed_functions(deployed(found.name, project_dir)) or [
        found.function_name(fn) for fn in found.functions
    ]
    if deployed(found.name, project_dir):
        run_chalice("delete", found, render_project(found, {}, project_dir))
    say(
        monitoring.remove(
            session.client("cloudwatch"),
            session.client("sns"),
            session.client("sqs"),
            session.client("logs"),
            found.prefix,
            found.resize_dlq,
            [f"/aws/lambda/{name}" for name in functions],
        )
    )
    say(cdn.remove(session.client("cloudfront"), found.name, found.images_bucket))
    s3 = session.client("s3")
    kept = []
    for bucket in (found.upload_bucket, found.images_bucket):
        if bucket_region(s3, bucket) is None:
            continue
        if delete_buckets or not _holds_objects(s3, bucket):
            _delete_bucket(s3, bucket)
            print(f"deleted s3://{bucket}")
        else:
            kept.append(bucket)
            # The distribution is gone: only the TLS rule of its policy still means something.
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(cdn.https_only_policy(bucket)))
    if kept:
        where = f" REGION={found.region}" if found.regional_copy else ""
        held = "they hold" if len(kept) > 1 else "it holds"
        print(
            f"kept {' and '.join(f's3://{b}' for b in kept)}: {held} uploads or images. "
            f"`make destroy STAGE={stage}{where} DELETE_BUCKETS=1` deletes them with everything in them"
        )
    for kind, token_spec in TOKENS.items():
        parameter = found.env.get(token_spec.variable)
        if parameter:
            print(
                f"the {kind.replace('-', ' ')} {parameter} (SSM, {found.region}) is left as it is: "
                f"`make {kind}` made it"
            )


def say(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)


def _holds_objects(s3: Any, bucket: str) -> bool:
    """Whether anything is in ``bucket`` (a version or delete marker counts, if it was versioned)."""
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=1)
    return bool(page.get("Versions") or page.get("DeleteMarkers"))


def _delete_bucket(s3: Any, bucket: str) -> None:
    """Delete every object (and version) in ``bucket``, then the bucket."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "destroy", "package", *TOKENS])
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    parser.add_argument(
        "--region", default=os.environ.get("REGION") or None, help="default: the AWS session's region"
    )
    parser.add_argument("--out", type=Path, help="package: the output folder (default build/<stage>)")
    parser.add_argument(
        "--delete-buckets", action="store_true", help="destroy: also the buckets, and the images in them"
    )
    args = parser.parse_args(argv)
    if args.stage == "local":
        raise SystemExit("stage local is the laptop stack (`make run`); deploy dev, prod or your own stage")
    stage_environment(args.stage)  # a clear error for an unknown stage
    if args.command == "package":
        print(package(args.stage, args.out or ROOT / "build" / args.stage))
    elif args.command in TOKENS:
        session = aws_session(args.region)
        found = target(args.stage, session)
        if found.regional_copy and not deployed(found.name):
            # A token stored here would be read by no function.
            raise SystemExit(
                f"stage {args.stage} is not deployed in {found.region}: its home is another region "
                f"(REGION=<that region>), or deploy the regional copy first "
                f"(make deploy STAGE={args.stage} REGION={found.region})"
            )
        name, token = store_token(session.client("ssm"), args.stage, args.command)
        print(
            f"stored a new {args.command.replace('-', ' ')} in SSM parameter {name} "
            f"({session.region_name}, SecureString) for {found.name}; it works within 5 minutes:"
        )
        print(token)
    elif args.command == "destroy":
        destroy(args.stage, args.region, args.delete_buckets)
    else:
        deploy(args.stage, args.region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
