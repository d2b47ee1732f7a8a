"""One stage deployed to one region: its names, and the Chalice project ``chalice deploy`` runs in.

A stage (``dev``, ``prod`` in ``.chalice/config.json``) can be deployed to several regions. The
stage's *home* region uses the names config.json gives. Any other region is a *regional copy*,
whose globally unique names carry the region so the two never touch:

- S3 bucket names are global: the copy's are ``<UPLOAD_BUCKET>-<region>`` and
  ``<IMAGES_BUCKET>-<region>``;
- IAM role names are global, and Chalice derives them (and the functions', and its record in
  ``.chalice/deployed/``) from the Chalice stage name: the copy is deployed as the Chalice stage
  ``<stage>-<region>`` (roles ``imageshelf-<stage>-<region>-<function>``);
- its policies are the stage's policy files with those names, and with the region pinned
  where the files say ``*``.

Regional services (Lambda, API Gateway, SQS, CloudWatch, SSM) keep the rest apart by
themselves: the SSM parameter ``/imageshelf/<stage>/admin-token`` of one region is not the other's.

The home region is the one ``.chalice/deployed/<stage>.json`` records, else the region the stage's
upload bucket is in (S3 answers that from any region), else the region deployed to now. A region
with its own record ``.chalice/deployed/<stage>-<region>.json`` stays a copy.

Chalice reads its configuration only from ``<project>/.chalice/config.json``, and some values
exist only at deploy time (the CDN's domain, the dead-letter queue's URL). So every deploy runs
Chalice in a generated project, ``build/deploy/<chalice stage>/``: a snapshot of ``app.py``,
``chalicelib/``, ``requirements.txt`` and ``vendor/``, and a ``config.json`` with that one stage.
Its ``.chalice/deployed`` and ``.chalice/deployments`` link to the real project's, so Chalice's
record of what it made, and its cache of packaged dependencies, stay where they always were.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.provision import ROOT, bucket_region, stage_environment

APP_NAME = "imageshelf"
# What the generated project copies from the real one (everything Chalice packages).
PROJECT_FILES = ("app.py", "requirements.txt", "chalicelib", "vendor")


def stage_config(stage: str, project_dir: Path = ROOT) -> dict[str, Any]:
    """The stage's block of ``.chalice/config.json``."""
    stage_environment(stage, project_dir)  # a clear error for an unknown stage
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    stage_block: dict[str, Any] = config["stages"][stage]
    return stage_block


def lambda_function_name(chalice_stage: str, function: str) -> str:
    """The name Chalice gives a function: the API handler has no suffix."""
    base = f"{APP_NAME}-{chalice_stage}"
    return base if function == "api_handler" else f"{base}-{function}"


def deployed(chalice_stage: str, project_dir: Path = ROOT) -> dict[str, dict[str, Any]]:
    """What ``chalice deploy`` recorded for a Chalice stage, by resource name (empty before)."""
    path = project_dir / ".chalice" / "deployed" / f"{chalice_stage}.json"
    if not path.exists():
        return {}
    return {r["name"]: r for r in json.loads(path.read_text()).get("resources", [])}


def deployed_region(resources: dict[str, dict[str, Any]]) -> str | None:
    """The region of the functions Chalice recorded (None when it recorded none)."""
    for resource in resources.values():
        arn = resource.get("lambda_arn", "")
        if arn.startswith("arn:"):
            return str(arn.split(":")[3])
    return None


@dataclass(frozen=True)
class Deployment:
    """A stage in a region: the names its resources get."""

    stage: str
    region: str
    name: str  # the Chalice stage: the stage itself at home, ``<stage>-<region>`` for a copy
    env: dict[str, str] = field(hash=False)  # the stage's environment, with this deployment's buckets
    functions: tuple[str, ...]  # Chalice's names for the app's functions: api_handler, resize, ...

    @property
    def regional_copy(self) -> bool:
        return self.name != self.stage

    @property
    def upload_bucket(self) -> str:
        return self.env["UPLOAD_BUCKET"]

    @property
    def images_bucket(self) -> str:
        return self.env["IMAGES_BUCKET"]

    def function_name(self, function: str) -> str:
        return lambda_function_name(self.name, function)

    @property
    def resize_dlq(self) -> str:
        """The SQS queue the resize function's failed asynchronous invocations go to."""
        return f"{self.prefix}-resize-dlq"

    @property
    def prefix(self) -> str:
        """What the deployment's own regional resources (alarms, topic) are named with."""
        return f"{APP_NAME}-{self.name}"


def deployment(stage: str, region: str, home: str | None, project_dir: Path = ROOT) -> Deployment:
    """The deployment of ``stage`` in ``region``, given the stage's home region (None: none yet)."""
    env = stage_environment(stage, project_dir)
    functions = tuple(stage_config(stage, project_dir).get("lambda_functions", {}))
    copy_name = f"{stage}-{region}"
    if deployed(copy_name, project_dir) or home not in (None, region):
        env = {**env, **{var: f"{env[var]}-{region}" for var in ("UPLOAD_BUCKET", "IMAGES_BUCKET")}}
        for var in ("UPLOAD_BUCKET", "IMAGES_BUCKET"):
            if len(env[var]) > 63:
                raise SystemExit(
                    f"{var} {env[var]} is longer than S3's 63 characters: give stage {stage} a "
                    "shorter bucket name in .chalice/config.json"
                )
        return Deployment(stage, region, copy_name, env, functions)
    return Deployment(stage, region, stage, env, functions)


def resolve(stage: str, region: str, s3: Any, project_dir: Path = ROOT) -> Deployment:
    """Which deployment of ``stage`` lives (or will live) in ``region`` (see the module's docstring)."""
    home = deployed_region(deployed(stage, project_dir))
    if home is None:
        home = bucket_region(s3, stage_environment(stage, project_dir)["UPLOAD_BUCKET"])
    return deployment(stage, region, home, project_dir)


def regional_policy(document: dict[str, Any], target: Deployment, project_dir: Path = ROOT) -> dict[str, Any]:
    """The stage's policy ``document`` for a regional copy: its buckets, its Chalice names
    (functions' log groups, the dead-letter queue), and its region where the file says ``*``."""
    home = stage_environment(target.stage, project_dir)
    buckets = {home[var]: target.env[var] for var in ("UPLOAD_BUCKET", "IMAGES_BUCKET")}
    # imageshelf-dev, not followed by more of a name (imageshelf-devx) and not part of another.
    stage_names = re.compile(rf"(?<![\w-]){re.escape(f'{APP_NAME}-{target.stage}')}(?=$|[-:/])")

    def rename(arn: str) -> str:
        if arn.startswith("arn:aws:s3:::"):
            bucket, slash, key = arn.removeprefix("arn:aws:s3:::").partition("/")
            return f"arn:aws:s3:::{buckets.get(bucket, bucket)}{slash}{key}"
        parts = arn.split(":", 5)  # arn, partition, service, region, account, resource
        if len(parts) < 6:
            return arn
        if parts[3] == "*":
            parts[3] = target.region
        parts[5] = stage_names.sub(f"{APP_NAME}-{target.name}", parts[5])
        return ":".join(parts)

    result = copy.deepcopy(document)
    for statement in result["Statement"]:
        resources = statement.get("Resource")
        if isinstance(resources, str):
            statement["Resource"] = rename(resources)
        elif isinstance(resources, list):
            statement["Resource"] = [rename(r) for r in resources]
    return result


def render_project(target: Deployment, env: dict[str, str], project_dir: Path = ROOT) -> Path:
    """Write ``build/deploy/<name>/``: the Chalice project that deploys ``target``, whose stage
    environment is the stage's with ``env`` on top; returns its folder."""
    out = project_dir / "build" / "deploy" / target.name
    if out.exists():
        shutil.rmtree(out)
    (out / ".chalice").mkdir(parents=True)
    # Bytecode from this machine must not reach the zip (Chalice zips chalicelib/ as it is).
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        source = project_dir / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, out / name)
    for state in ("deployed", "deployments"):
        (project_dir / ".chalice" / state).mkdir(exist_ok=True)
        (out / ".chalice" / state).symlink_to(project_dir / ".chalice" / state, target_is_directory=True)

    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    stage = copy.deepcopy(config["stages"][target.stage])
    stage["environment_variables"] = {
        **stage.get("environment_variables", {}),
        "UPLOAD_BUCKET": target.upload_bucket,
        "IMAGES_BUCKET": target.images_bucket,
        **env,
    }
    for function, settings in stage.get("lambda_functions", {}).items():
        source = settings.get("iam_policy_file")
        if not source:
            continue
        document = json.loads((project_dir / ".chalice" / source).read_text())
        if target.regional_copy:
            document = regional_policy(document, target, project_dir)
            settings["iam_policy_file"] = f"policy-{target.name}-{function}.json"
        (out / ".chalice" / settings["iam_policy_file"]).write_text(json.dumps(document, indent=2) + "\n")
    config["stages"] = {target.name: stage}
    (out / ".chalice" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def policy_documents(target: Deployment, project_dir: Path = ROOT) -> dict[str, dict[str, Any]]:
    """Each function's policy as ``render_project`` gives it to Chalice, by function."""
    folder = project_dir / "build" / "deploy" / target.name / ".chalice"
    config = json.loads((folder / "config.json").read_text())
    functions = config["stages"][target.name].get("lambda_functions", {})
    return {
        function: json.loads((folder / settings["iam_policy_file"]).read_text())
        for function, settings in functions.items()
        if settings.get("iam_policy_file")
    }
