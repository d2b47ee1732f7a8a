"""Create and configure imageshelf's two buckets; the same code provisions AWS and the local stack.

Idempotent: run it as often as you like. ``python -m tools.provision --stage prod``
(or ``make provision STAGE=prod [REGION=eu-west-1]``) reads the stage's bucket names and allowed
origins from ``.chalice/config.json`` (a regional copy's names carry its region: see
``tools/deployment.py``); ``--origin`` adds one (``tools/deploy.py`` passes the deployed
API's origin, which is only known after the first deploy).

The buckets are made here, not by Chalice: Chalice only subscribes the resize function to an
existing bucket, and ``chalice delete`` must never take the images with it.

Lifecycle of the upload bucket:

- multipart uploads under ``uploads/`` never completed are aborted after ``ABANDONED_UPLOAD_DAYS``
  (their parts are billed and invisible);
- originals that never became images expire ``FAILED_UPLOAD_DAYS`` after they were uploaded. An
  upload that never became an image is one whose processing ended ``failed`` (not an image,
  corrupt, too large, ``processing_timeout``...): processing tags its original
  ``imageshelf-state=failed`` (``chalicelib/storage.py`` ``FAILED_TAG``), and one rule per prefix
  (``uploads/``, ``originals/``) expires what carries that tag. A ready image's original never
  does, whatever ``DELETE_ORIGINALS`` says; an upload not settled yet is re-driven by the
  reconciler until it is ready or ``failed``. Once the original has expired, the reconciler's
  sweep removes the failed record. 30 days: the failure stays visible, with its reason, long
  enough for whoever uploaded it to notice and upload again, and outlives the dead-letter queue's
  14 days (docs/deploy.md).
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
FAILED_UPLOAD_DAYS = 30
# Kept in step with chalicelib/storage.py FAILED_TAG (tests/test_provision.py checks it): the
# provisioning tools do not import the app's package.
FAILED_TAG = {"Key": "imageshelf-state", "Value": "failed"}


def stage_environment(stage: str, project_dir: Path = ROOT) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives a stage (global, then stage)."""
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    stages = config.get("stages", {})
    if stage not in stages:
        raise SystemExit(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(stages)})")
    return {**config.get("environment_variables", {}), **stages[stage].get("environment_variables", {})}


def provision(s3: Any, upload_bucket: str, images_bucket: str, origins: list[str]) -> list[str]:
    """Make both buckets private, encrypted and CORS-enabled for ``origins``; returns what it did.

    With no origins the CORS rules are left as they are: a first deploy does not know the
    gallery's origin yet (see ``tools/deploy.py``). Failed originals expire by their tag in every
    stage, whatever its ``DELETE_ORIGINALS``.
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
        Bucket=upload_bucket, LifecycleConfiguration={"Rules": lifecycle_rules()}
    )
    cors = f"CORS for {', '.join(origins)}" if origins else "CORS unchanged: no origins given"
    done.append(f"configured s3://{upload_bucket} and s3://{images_bucket} (private, {cors})")
    done.append(f"uploads that never became images (tagged failed) expire after {FAILED_UPLOAD_DAYS} days")
    return done


def lifecycle_rules() -> list[dict[str, Any]]:
    """The upload bucket's lifecycle rules (see the module's docstring)."""
    rules: list[dict[str, Any]] = [
        {
            "ID": "abort-abandoned-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": "uploads/"},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABANDONED_UPLOAD_DAYS},
        }
    ]
    for prefix in ("uploads/", "originals/"):
        rules.append(
            {
                "ID": f"expire-failed-{prefix.rstrip('/')}",
                "Status": "Enabled",
                "Filter": {"And": {"Prefix": prefix, "Tags": [dict(FAILED_TAG)]}},
                "Expiration": {"Days": FAILED_UPLOAD_DAYS},
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
    for line in provision(s3, target.upload_bucket, target.images_bucket, origins):
        print(line)
    if not origins:
        print("no ALLOWED_ORIGINS yet: `make deploy` adds the API's origin once it exists")
    return 0


def stage_origins(env: dict[str, str], extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The stage's ALLOWED_ORIGINS plus ``extra``, without duplicates, in order."""
    found = [o.strip().rstrip("/") for o in [*env.get("ALLOWED_ORIGINS", "").split(","), *extra]]
    return list(dict.fromkeys(o for o in found if o))


if __name__ == "__main__":
    sys.exit(main())
