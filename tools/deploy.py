"""Deploy a stage to AWS, or package it offline: what ``make deploy`` and ``make package`` run.

``python -m tools.deploy deploy --stage prod``:

1. says which account and region it is about to deploy to, and refuses a region other than the
   one the stage already lives in (that would make a second copy and orphan the first);
2. provisions the buckets (``tools/provision.py``): Chalice subscribes the resize function to the
   upload bucket, so the bucket must exist first;
3. runs ``chalice deploy --stage prod``;
4. adds the deployed API's origin to the buckets' CORS rules (the gallery is served from it, and
   it is only known after the first deploy);
5. sets the stage's ``log_retention_days`` on both functions' log groups. Chalice's own
   ``log_retention_in_days`` is not used: in Chalice 1.34 it makes ``chalice package
   --pkg-format terraform`` fail, and it names the API function's log group wrongly.

``python -m tools.deploy admin-token --stage prod`` stores a new random admin token in the stage's
SSM parameter (``ADMIN_TOKEN_PARAMETER``, a SecureString) and prints it: that turns deletion on,
or rotates the token (the API function picks it up within five minutes).

``python -m tools.deploy package --stage dev`` runs ``chalice package --pkg-format terraform`` into
``build/dev`` with placeholder credentials: packaging never calls AWS.
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
from typing import Any
from urllib.parse import urlsplit

from tools.provision import ROOT, provision, stage_environment, stage_origins

APP_NAME = "imageshelf"


def chalice_command() -> list[str]:
    """The ``chalice`` of this virtualenv (the one whose Python matches the Lambda runtime)."""
    script = Path(sys.executable).with_name("chalice")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chalice.cli"]


def stage_config(stage: str, project_dir: Path = ROOT) -> dict[str, Any]:
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    return config["stages"][stage]


def function_names(stage: str) -> dict[str, str]:
    """Lambda function names Chalice gives the stage's functions (the API one has no suffix)."""
    return {"api_handler": f"{APP_NAME}-{stage}", "resize": f"{APP_NAME}-{stage}-resize"}


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


def deployed(stage: str, project_dir: Path = ROOT) -> dict[str, dict[str, Any]]:
    """What ``chalice deploy`` recorded for the stage, by resource name (empty before the first)."""
    path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    if not path.exists():
        return {}
    return {r["name"]: r for r in json.loads(path.read_text()).get("resources", [])}


def deployed_region(resources: dict[str, dict[str, Any]]) -> str | None:
    for resource in resources.values():
        arn = resource.get("lambda_arn", "")
        if arn.startswith("arn:"):
            return arn.split(":")[3]
    return None


def api_origin(resources: dict[str, dict[str, Any]]) -> str | None:
    url = resources.get("rest_api", {}).get("rest_api_url")
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def set_log_retention(logs: Any, stage: str, days: int) -> list[str]:
    """Create the functions' log groups if missing and set their retention (idempotent)."""
    done = []
    for name in function_names(stage).values():
        group = f"/aws/lambda/{name}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)
        done.append(f"{group}: logs kept {days} days")
    return done


def store_admin_token(ssm: Any, stage: str, project_dir: Path = ROOT) -> tuple[str, str]:
    """Put a new random admin token in the stage's SSM parameter; returns (parameter, token)."""
    name = stage_environment(stage, project_dir).get("ADMIN_TOKEN_PARAMETER")
    if not name:
        raise SystemExit(
            f"stage {stage} has no ADMIN_TOKEN_PARAMETER in .chalice/config.json: add one "
            f"(e.g. /imageshelf/{stage}/admin-token) and grant ssm:GetParameter on it (docs/deploy.md)"
        )
    token = secrets.token_urlsafe(32)
    ssm.put_parameter(
        Name=name,
        Value=token,
        Type="SecureString",
        Overwrite=True,
        Description=f"imageshelf {stage}: bearer token for DELETE /images/{{id}}",
    )
    return name, token


def admin_token_hint(ssm: Any, stage: str, project_dir: Path = ROOT) -> str | None:
    """What to do when the stage reads its token from SSM and the parameter is not there yet."""
    name = stage_environment(stage, project_dir).get("ADMIN_TOKEN_PARAMETER")
    if not name:
        return None
    from botocore.exceptions import ClientError

    try:
        ssm.get_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        return f"deletion is off until the admin token exists: make admin-token STAGE={stage}"
    except ClientError as error:  # the deploy itself worked: say what is unknown, do not fail
        return f"could not check the admin token {name} ({error.response['Error']['Code']})"
    return None


def stage_session(stage: str, project_dir: Path = ROOT) -> Any:
    """A boto3 session in the stage's region: the session's own, which must be where the stage
    already lives (another region would make a second copy, or store a token nobody reads)."""
    import boto3

    session = boto3.session.Session()
    region = session.region_name
    if not region:
        raise SystemExit("no AWS region: set AWS_DEFAULT_REGION (or a profile with a region)")
    lives_in = deployed_region(deployed(stage, project_dir))
    if lives_in and lives_in != region:
        raise SystemExit(
            f"stage {stage} is deployed in {lives_in}, not {region}: set "
            f"AWS_DEFAULT_REGION={lives_in}, or deploy the other region as its own stage "
            "(docs/deploy.md)"
        )
    return session


def deploy(stage: str, project_dir: Path = ROOT) -> None:
    session = stage_session(stage, project_dir)
    region = session.region_name
    account = session.client("sts").get_caller_identity()["Account"]
    before = deployed(stage, project_dir)
    print(f"deploying stage {stage} to account {account}, region {region}", flush=True)
    env = stage_environment(stage, project_dir)
    s3 = session.client("s3")
    known = [o for o in [api_origin(before)] if o]
    for line in provision(s3, env["UPLOAD_BUCKET"], env["IMAGES_BUCKET"], stage_origins(env, known)):
        print(line, flush=True)
    subprocess.run(
        [*chalice_command(), "--project-dir", str(project_dir), "deploy", "--stage", stage],
        env=chalice_env(project_dir),
        check=True,
    )
    origin = api_origin(deployed(stage, project_dir))
    if origin and origin not in known:
        for line in provision(s3, env["UPLOAD_BUCKET"], env["IMAGES_BUCKET"], stage_origins(env, [origin])):
            print(line)
    days = stage_config(stage, project_dir).get("log_retention_days")
    if days:
        for line in set_log_retention(session.client("logs"), stage, int(days)):
            print(line)
    hint = admin_token_hint(session.client("ssm"), stage, project_dir)
    if hint:
        print(hint)
    if origin:
        print(f"gallery: {origin}/{stage_config(stage, project_dir).get('api_gateway_stage', 'api')}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "package", "admin-token"])
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    parser.add_argument("--out", type=Path, help="package: the output folder (default build/<stage>)")
    args = parser.parse_args(argv)
    if args.stage == "local":
        raise SystemExit("stage local is the laptop stack (`make run`); deploy dev, prod or your own stage")
    stage_environment(args.stage)  # a clear error for an unknown stage
    if args.command == "package":
        print(package(args.stage, args.out or ROOT / "build" / args.stage))
    elif args.command == "admin-token":
        session = stage_session(args.stage)
        name, token = store_admin_token(session.client("ssm"), args.stage)
        print(
            f"stored a new admin token in SSM parameter {name} ({session.region_name}, SecureString); "
            "it works within 5 minutes:"
        )
        print(token)
    else:
        deploy(args.stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
