"""The CloudFront distribution in front of a deployment's images bucket, and the buckets' policies.

Renditions are immutable: a new image or new pixels get a new key, and each object is stored with
``Cache-Control: public, max-age=31536000, immutable``. So the app hands out plain URLs under the
distribution (``PUBLIC_BASE_URL=https://<distribution>.cloudfront.net``) that never expire, and
CloudFront may cache each for a year; production hands out no presigned GETs.

- The distribution reads the bucket through an origin access control (SigV4, always signed); the
  bucket stays private with every public access block on, and its policy admits
  ``cloudfront.amazonaws.com`` for ``s3:GetObject`` only when the request comes from this
  distribution (``AWS:SourceArn``).
- HTTPS only: viewers get ``https-only`` (plain HTTP is refused, not redirected: every URL the app
  hands out is https), and both buckets' policies deny any request not made over TLS.
- GET and HEAD only, cached with AWS's managed ``CachingOptimized`` policy, which follows the
  objects' own Cache-Control and compresses.

Deploy owns the distribution it finds by its comment (``imageshelf <name>: s3://<bucket>``) and
both buckets' policies: edits made to them elsewhere are put back by the next deploy.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

# AWS's managed cache policy "Managed-CachingOptimized": TTLs from the object's Cache-Control
# (default 1 day, at most 1 year), gzip and brotli, no query strings, headers or cookies in the key.
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
# North America and Europe edges: the cheapest price class. Viewers elsewhere are served too,
# from the nearest of those edges.
PRICE_CLASS = "PriceClass_100"
ORIGIN_ID = "images"
# Fields CloudFront wants with the legacy cache settings, which a cache policy replaces.
_LEGACY_CACHE_FIELDS = ("ForwardedValues", "MinTTL", "DefaultTTL", "MaxTTL")


@dataclass(frozen=True)
class Cdn:
    """A deployed distribution: where renditions are served from."""

    id: str
    arn: str
    domain: str

    @property
    def base_url(self) -> str:
        """What the app's ``PUBLIC_BASE_URL`` is set to."""
        return f"https://{self.domain}"


def comment(name: str, bucket: str) -> str:
    """How deploy recognises its distribution (CloudFront has no names)."""
    return f"imageshelf {name}: s3://{bucket}"


def origin_domain(bucket: str, region: str) -> str:
    """The bucket's regional REST endpoint: the origin an origin access control signs for."""
    return f"{bucket}.s3.{region}.amazonaws.com"


def distribution_settings(name: str, bucket: str, region: str, oac_id: str) -> dict[str, Any]:
    """The fields of the DistributionConfig that deploy sets (the rest keep CloudFront's values)."""
    methods = {"Quantity": 2, "Items": ["GET", "HEAD"]}
    return {
        "Comment": comment(name, bucket),
        "Enabled": True,
        "PriceClass": PRICE_CLASS,
        "HttpVersion": "http2and3",
        "IsIPV6Enabled": True,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": ORIGIN_ID,
                    "DomainName": origin_domain(bucket, region),
                    "OriginPath": "",
                    # Empty: no legacy origin access identity; the access control signs instead.
                    "S3OriginConfig": {"OriginAccessIdentity": ""},
                    "OriginAccessControlId": oac_id,
                }
            ],
        },
        "DefaultCacheBehavior": {
            "TargetOriginId": ORIGIN_ID,
            "ViewerProtocolPolicy": "https-only",
            "AllowedMethods": {**methods, "CachedMethods": methods},
            "CachePolicyId": CACHING_OPTIMIZED,
            "Compress": True,
        },
    }


def images_bucket_policy(bucket: str, distribution_arn: str) -> dict[str, Any]:
    """Only the distribution may read, and only over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CloudFrontReadsImages",
                "Effect": "Allow",
                "Principal": {"Service": "cloudfront.amazonaws.com"},
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
                "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}},
            },
            https_only_statement(bucket),
        ],
    }


def https_only_statement(bucket: str) -> dict[str, Any]:
    """Refuse every request to ``bucket`` not made over TLS, whoever makes it."""
    return {
        "Sid": "HttpsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def https_only_policy(bucket: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [https_only_statement(bucket)]}


def ensure(
    cloudfront: Any, s3: Any, name: str, images_bucket: str, upload_bucket: str, region: str
) -> tuple[Cdn, list[str]]:
    """Create or update the distribution and both buckets' policies; returns it and what was done."""
    done = []
    oac_id, made = _ensure_access_control(cloudfront, images_bucket)
    if made:
        done.append(f"created CloudFront origin access control {images_bucket}")
    wanted = distribution_settings(name, images_bucket, region, oac_id)
    found = find(cloudfront, name, images_bucket)
    if found is None:
        config = {**wanted, "CallerReference": f"imageshelf-{uuid.uuid4()}"}
        distribution = cloudfront.create_distribution(DistributionConfig=config)["Distribution"]
        done.append(
            f"created CloudFront distribution {distribution['Id']} ({distribution['DomainName']}); "
            "its edges take a few minutes to serve it"
        )
    else:
        current = cloudfront.get_distribution_config(Id=found)
        merged = _merge(current["DistributionConfig"], wanted)
        if _covers(current["DistributionConfig"], wanted):
            distribution = cloudfront.get_distribution(Id=found)["Distribution"]
            done.append(f"CloudFront distribution {found} is as configured")
        else:
            distribution = cloudfront.update_distribution(
                Id=found, IfMatch=current["ETag"], DistributionConfig=merged
            )["Distribution"]
            done.append(f"updated CloudFront distribution {found}")
    cdn = Cdn(distribution["Id"], distribution["ARN"], distribution["DomainName"])
    s3.put_bucket_policy(
        Bucket=images_bucket, Policy=json.dumps(images_bucket_policy(images_bucket, cdn.arn))
    )
    s3.put_bucket_policy(Bucket=upload_bucket, Policy=json.dumps(https_only_policy(upload_bucket)))
    done.append(f"s3://{images_bucket}: readable by distribution {cdn.id} only, over TLS only")
    return cdn, done


def find(cloudfront: Any, name: str, bucket: str) -> str | None:
    """The id of the deployment's distribution, if there is one."""
    wanted = comment(name, bucket)
    for page in cloudfront.get_paginator("list_distributions").paginate():
        for item in page["DistributionList"].get("Items") or []:
            if item.get("Comment") == wanted:
                return str(item["Id"])
    return None


def remove(
    cloudfront: Any, name: str, bucket: str, poll_seconds: float = 30, timeout: float = 3600
) -> list[str]:
    """Disable, then delete, the deployment's distribution and its origin access control.

    CloudFront deletes only a disabled distribution whose change has reached every edge, which
    takes minutes: this waits for it.
    """
    done = []
    found = find(cloudfront, name, bucket)
    if found is not None:
        current = cloudfront.get_distribution_config(Id=found)
        etag = current["ETag"]
        if current["DistributionConfig"]["Enabled"]:
            print(f"disabling CloudFront distribution {found}: CloudFront takes several minutes", flush=True)
            etag = cloudfront.update_distribution(
                Id=found, IfMatch=etag, DistributionConfig={**current["DistributionConfig"], "Enabled": False}
            )["ETag"]
        deadline = time.monotonic() + timeout
        while True:
            distribution = cloudfront.get_distribution(Id=found)
            if distribution["Distribution"]["Status"] == "Deployed":
                etag = distribution["ETag"]
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"CloudFront distribution {found} is still disabling: run this again later")
            time.sleep(poll_seconds)
        cloudfront.delete_distribution(Id=found, IfMatch=etag)
        done.append(f"deleted CloudFront distribution {found}")
    control = _access_control(cloudfront, bucket)
    if control is not None:
        etag = cloudfront.get_origin_access_control(Id=control)["ETag"]
        cloudfront.delete_origin_access_control(Id=control, IfMatch=etag)
        done.append(f"deleted CloudFront origin access control {bucket}")
    return done


def _access_control(cloudfront: Any, bucket: str) -> str | None:
    marker = None
    while True:
        page = cloudfront.list_origin_access_controls(**({"Marker": marker} if marker else {}))
        listing = page["OriginAccessControlList"]
        for item in listing.get("Items") or []:
            if item["Name"] == bucket:
                return str(item["Id"])
        marker = listing.get("NextMarker")
        if not marker:
            return None


def _ensure_access_control(cloudfront: Any, bucket: str) -> tuple[str, bool]:
    """The origin access control named after the bucket (names are unique per account, as bucket
    names are globally); returns (id, whether it was made now)."""
    found = _access_control(cloudfront, bucket)
    if found is not None:
        return found, False
    control = cloudfront.create_origin_access_control(
        OriginAccessControlConfig={
            "Name": bucket,
            "Description": f"imageshelf: CloudFront reads s3://{bucket}",
            "SigningProtocol": "sigv4",
            "SigningBehavior": "always",
            "OriginAccessControlOriginType": "s3",
        }
    )
    return str(control["OriginAccessControl"]["Id"]), True


def _merge(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """``current`` with deploy's fields set (UpdateDistribution takes the whole configuration)."""
    behaviour = {
        k: v for k, v in current.get("DefaultCacheBehavior", {}).items() if k not in _LEGACY_CACHE_FIELDS
    }
    return {**current, **wanted, "DefaultCacheBehavior": {**behaviour, **wanted["DefaultCacheBehavior"]}}


def _covers(current: Any, wanted: Any) -> bool:
    """Whether ``current`` already has every value of ``wanted`` (extra fields are CloudFront's)."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(
            k in current and _covers(current[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(_covers(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return bool(current == wanted)
