"""Create and configure imageshelf's two buckets; the same code provisions AWS and the local stack.

Idempotent: run it as often as you like. ``python -m tools.provision --stage prod``
(or ``make provision STAGE=prod [REGION=eu-west-1]``) reads the stage's bucket names and allowed
origins from ``.chalice/config.json`` (a regional copy's names carry its region: see
``tools/deployment.py``); ``--origin`` adds one (``tools/deploy.py`` passes the deployed
API's origin, which is only known after the first deploy).

The buckets are made here, not by Chalice: Chalice only subscribes the resize function to an
existing bucket, and ``chalice delete`` must never take the images with it.

Lifecycle of the upload bucket, under ``uploads/``:

- multipart uploads never completed are aborted after ``ABANDONED_UPLOAD_DAYS`` (their parts are
  billed and invisible);
- with ``DELETE_ORIGINALS`` on, each original is deleted once its renditions exist, so whatever is
  still under ``uploads/`` after ``UNPROCESSED_UPLOAD_DAYS`` never became an image (refused, or
  never processed): it expires. 14 days is as long as the resize function's dead-letter queue
  keeps a failed event (SQS's maximum), so an upload expires only once nothing can re-drive it.
  With ``DELETE_ORIGINALS`` off the originals of ready images live under the same prefix, and a
  lifecycle rule cannot tell them apart: there is no expiry then (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ABANDONED_UPLOAD_DAYS = 1
UNPROCESSED_UPLOAD_DAYS = 14


def stage_environment(stage: str, project_dir: Path = ROOT) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives a stage (global, then stage)."""
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    stages = config.get("stages", {})
    if stage not in stages:
        raise SystemExit(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(stages)})")
    return {**config.get("environment_variables", {}), **stages[stage].get("environment_variables", {})}


def provision(
    s3: Any, upload_bucket: str, images_bucket: str, origins: list[str], *, delete_originals: bool = False
) -> list[str]:
    """Make both buckets private, encrypted and CORS-enabled for ``origins``; returns what it did.

    With no origins the CORS rules are left as they are: a first deploy does not know the
    gallery's origin yet (see ``tools/deploy.py``). ``delete_originals`` (the stage's
    ``DELETE_ORIGINALS``) adds the expiry of uploads that never became images.
    """
    done = []
    for bucket in (upload_bucket, images_bucket):
        if _create(s3, bucket):
            done.append(f"created s3://{bucket}")
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_ownership_controls(
            Bucket=bucket,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        )
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    if origins:
        _cors(s3, upload_bucket, images_bucket, origins)
    s3.put_bucket_lifecycle_configuration(
        Bucket=upload_bucket, LifecycleConfiguration={"Rules": lifecycle_rules(delete_originals)}
    )
    cors = f"CORS for {', '.join(origins)}" if origins else "CORS unchanged: no origins given"
    done.append(f"configured s3://{upload_bucket} and s3://{images_bucket} (private, {cors})")
    if delete_originals:
        done.append(f"uploads that never became images expire after {UNPROCESSED_UPLOAD_DAYS} days")
    return done


def lifecycle_rules(delete_originals: bool) -> list[dict[str, Any]]:
    """The upload bucket's lifecycle rules (see the module's docstring)."""
    rules: list[dict[str, Any]] = [
        {
            "ID": "abort-abandoned-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": "uploads/"},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABANDONED_UPLOAD_DAYS},
        }
    ]
    if delete_originals:
        rules.append(
            {
                "ID": "expire-uploads-never-processed",
                "Status": "Enabled",
                "Filter": {"Prefix": "uploads/"},
                "Expiration": {"Days": UNPROCESSED_UPLOAD_DAYS},
            }
        )
    return rules


def _cors(s3: Any, upload_bucket: str, images_bucket: str, origins: list[str]) -> None:
    # Browsers POST (or PUT) uploads straight to the upload bucket from the gallery's origin.
    s3.put_bucket_cors(
        Bucket=upload_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": origins,
                    "AllowedMethods": ["POST", "PUT"],
                    "AllowedHeaders": ["Content-Type", "Content-Length", "x-amz-meta-filename"],
                    "ExposeHeaders": ["ETag", "Location"],
                    "MaxAgeSeconds": 3600,
                }
            ]
        },
    )
    s3.put_bucket_cors(
        Bucket=images_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": origins,
                    "AllowedMethods": ["GET", "HEAD"],
                    "AllowedHeaders": [],
                    "MaxAgeSeconds": 3600,
                }
            ]
        },
    )


def bucket_region(s3: Any, bucket: str) -> str | None:
    """The region ``bucket`` is in, or None if it does not exist (S3 answers from any region)."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("403", "AccessDenied"):
            raise SystemExit(
                f"s3://{bucket} exists but this account cannot use it: bucket names are global, "
                "so another account may own it. Choose another name in .chalice/config.json "
                "(UPLOAD_BUCKET / IMAGES_BUCKET), or check your credentials."
            ) from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        return None
    found = head.get("BucketRegion") or head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
    return str(found or "us-east-1")


def _create(s3: Any, bucket: str) -> bool:
    region = s3.meta.region_name
    found = bucket_region(s3, bucket)
    if found is not None:
        if region and found != region:
            # S3 notifies only functions in the bucket's own region.
            raise SystemExit(
                f"s3://{bucket} is in {found}, but this deploy targets {region}: the resize "
                "function must be in the bucket's region. Use that region, or other bucket "
                "names for a stage in this region."
            )
        return False
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **extra)
    return True


def main(argv: list[str] | None = None) -> int:
    import boto3

    from tools.deployment import resolve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    parser.add_argument(
        "--region", default=os.environ.get("REGION") or None, help="default: the AWS session's region"
    )
    parser.add_argument(
        "--origin", action="append", default=[], help="another origin the gallery is served from (repeatable)"
    )
    args = parser.parse_args(argv)
    s3 = boto3.client("s3", region_name=args.region)
    # A regional copy of the stage has buckets of its own (tools/deployment.py).
    target = resolve(args.stage, s3.meta.region_name, s3)
    origins = stage_origins(target.env, args.origin)
    print(f"provisioning stage {args.stage} in {s3.meta.region_name}")
    for line in provision(
        s3, target.upload_bucket, target.images_bucket, origins, delete_originals=delete_originals(target.env)
    ):
        print(line)
    if not origins:
        print("no ALLOWED_ORIGINS yet: `make deploy` adds the API's origin once it exists")
    return 0


def delete_originals(env: dict[str, str]) -> bool:
    """The stage's DELETE_ORIGINALS, read as ``chalicelib/config.py`` reads it."""
    return env.get("DELETE_ORIGINALS", "false").strip().lower() in ("1", "true", "yes", "on")


def stage_origins(env: dict[str, str], extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The stage's ALLOWED_ORIGINS plus ``extra``, without duplicates, in order."""
    found = [o.strip().rstrip("/") for o in [*env.get("ALLOWED_ORIGINS", "").split(","), *extra]]
    return list(dict.fromkeys(o for o in found if o))


if __name__ == "__main__":
    sys.exit(main())
