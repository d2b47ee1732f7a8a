"""Create and configure imageshelf's two buckets; the same code provisions AWS and the local stack.

Idempotent: run it as often as you like. ``python -m tools.provision --stage prod``
(or ``make provision STAGE=prod``) reads the stage's bucket names and allowed origins
from ``.chalice/config.json``.
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


def stage_environment(stage: str, project_dir: Path = ROOT) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives a stage (global, then stage)."""
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise SystemExit(f"stage {stage!r} is not in .chalice/config.json (stages: {', '.join(config['stages'])})")
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def provision(s3: Any, upload_bucket: str, images_bucket: str, origins: list[str]) -> list[str]:
    """Make both buckets private, encrypted and CORS-enabled for ``origins``; returns what it did."""
    done = []
    for bucket in (upload_bucket, images_bucket):
        if _create(s3, bucket):
            done.append(f"created s3://{bucket}")
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True,
                "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_ownership_controls(
            Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        )
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    # Browsers POST (or PUT) uploads straight to the upload bucket from the gallery's origin.
    s3.put_bucket_cors(Bucket=upload_bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": origins, "AllowedMethods": ["POST", "PUT"],
        "AllowedHeaders": ["Content-Type", "Content-Length", "x-amz-meta-filename"],
        "ExposeHeaders": ["ETag", "Location"], "MaxAgeSeconds": 3600,
    }]})
    s3.put_bucket_cors(Bucket=images_bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": origins, "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": [],
        "MaxAgeSeconds": 3600,
    }]})
    # Uploads never finished (multipart parts left behind by a dropped client) cost money
    # and are never processed: expire them.
    s3.put_bucket_lifecycle_configuration(Bucket=upload_bucket, LifecycleConfiguration={"Rules": [{
        "ID": "abort-abandoned-uploads", "Status": "Enabled", "Filter": {"Prefix": "uploads/"},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABANDONED_UPLOAD_DAYS},
    }]})
    done.append(f"configured s3://{upload_bucket} and s3://{images_bucket} (private, CORS for {', '.join(origins)})")
    return done


def _create(s3: Any, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise  # 403: the name is taken by another account, or no permission
    region = s3.meta.region_name
    extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **extra)
    return True


def main(argv: list[str] | None = None) -> int:
    import boto3

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    args = parser.parse_args(argv)
    env = stage_environment(args.stage)
    origins = [o.strip() for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()]
    if not origins:
        raise SystemExit(f"set ALLOWED_ORIGINS for stage {args.stage!r} in .chalice/config.json "
                         "(the gallery's origin, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com)")
    for line in provision(boto3.client("s3"), env["UPLOAD_BUCKET"], env["IMAGES_BUCKET"], origins):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
