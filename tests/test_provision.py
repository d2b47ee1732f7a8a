"""tools/provision.py against moto: private buckets, CORS, the lifecycle rule, idempotence, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from tools import deployment
from tools.provision import (
    FAILED_UPLOAD_DAYS,
    bucket_region,
    main,
    provision,
    stage_environment,
    stage_origins,
)

UPLOADS, IMAGES = "imageshelf-test-uploads", "imageshelf-test-images"
GALLERY = "https://abc123.execute-api.eu-west-1.amazonaws.com"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield boto3.client("s3", region_name="eu-west-1")


def state(s3: Any, bucket: str) -> dict[str, Any]:
    def get(call: str, key: str) -> Any:
        return getattr(s3, call)(Bucket=bucket)[key]

    return {
        "public": get("get_public_access_block", "PublicAccessBlockConfiguration"),
        "ownership": get("get_bucket_ownership_controls", "OwnershipControls"),
        "encryption": get("get_bucket_encryption", "ServerSideEncryptionConfiguration")["Rules"][0][
            "ApplyServerSideEncryptionByDefault"
        ]["SSEAlgorithm"],
        "cors": get("get_bucket_cors", "CORSRules"),
        "region": s3.get_bucket_location(Bucket=bucket)["LocationConstraint"],
    }


def test_creates_private_buckets_with_cors_and_lifecycle(s3: Any) -> None:
    done = provision(s3, UPLOADS, IMAGES, [GALLERY])
    assert done[:2] == [f"created s3://{UPLOADS}", f"created s3://{IMAGES}"]
    for bucket in (UPLOADS, IMAGES):
        found = state(s3, bucket)
        assert all(found["public"].values()) and len(found["public"]) == 4
        assert found["ownership"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert found["encryption"] == "AES256" and found["region"] == "eu-west-1"
    [upload_cors] = state(s3, UPLOADS)["cors"]
    assert upload_cors["AllowedOrigins"] == [GALLERY]
    assert sorted(upload_cors["AllowedMethods"]) == ["POST", "PUT"]
    [image_cors] = state(s3, IMAGES)["cors"]
    assert image_cors["AllowedOrigins"] == [GALLERY]
    assert sorted(image_cors["AllowedMethods"]) == ["GET", "HEAD"]
    rule = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=UPLOADS)["Rules"]}[
        "abort-abandoned-uploads"
    ]
    assert rule["Status"] == "Enabled" and rule["Filter"] == {"Prefix": "uploads/"}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_is_idempotent_and_keeps_objects(s3: Any) -> None:
    provision(s3, UPLOADS, IMAGES, [GALLERY])
    s3.put_object(Bucket=IMAGES, Key="kept", Body=b"x")
    before = [state(s3, b) for b in (UPLOADS, IMAGES)]
    done = provision(s3, UPLOADS, IMAGES, [GALLERY])
    assert not any(line.startswith("created") for line in done)
    assert [state(s3, b) for b in (UPLOADS, IMAGES)] == before
    assert s3.get_object(Bucket=IMAGES, Key="kept")["Body"].read() == b"x"


def test_without_origins_leaves_cors_alone(s3: Any) -> None:
    provision(s3, UPLOADS, IMAGES, [GALLERY])
    provision(s3, UPLOADS, IMAGES, [])
    assert state(s3, UPLOADS)["cors"][0]["AllowedOrigins"] == [GALLERY]


def test_refuses_a_bucket_in_another_region(s3: Any) -> None:
    """S3 notifies only functions in the bucket's region: say so instead of failing in chalice."""
    boto3.client("s3", region_name="us-west-2").create_bucket(
        Bucket=UPLOADS, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    with pytest.raises(SystemExit, match="is in us-west-2, but this deploy targets eu-west-1"):
        provision(s3, UPLOADS, IMAGES, [GALLERY])


def test_explains_a_bucket_name_taken_by_another_account() -> None:
    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        with pytest.raises(SystemExit, match="another account may own it"):
            provision(s3, UPLOADS, IMAGES, [GALLERY])


def test_origins_merge_config_and_extra() -> None:
    env = {"ALLOWED_ORIGINS": "https://a.example, https://b.example/"}
    merged = stage_origins(env, ["https://b.example", GALLERY])
    assert merged == ["https://a.example", "https://b.example", GALLERY]
    assert stage_origins({"ALLOWED_ORIGINS": ""}) == []


def test_command_line_provisions_a_stage(
    s3: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this checkout may have deployed for real decides nothing here.
    monkeypatch.setattr(deployment, "deployed", lambda stage, project_dir=None: {})
    assert main(["--stage", "dev", "--origin", GALLERY]) == 0
    env = stage_environment("dev")
    assert state(s3, env["UPLOAD_BUCKET"])["cors"][0]["AllowedOrigins"] == [GALLERY]
    assert f"created s3://{env['IMAGES_BUCKET']}" in capsys.readouterr().out
    # In another region than the stage's buckets, it provisions the regional copy's.
    assert main(["--stage", "dev", "--region", "us-west-2"]) == 0
    copy = f"{env['UPLOAD_BUCKET']}-us-west-2"
    assert (
        bucket_region(s3, copy) == "us-west-2"
        and "provisioning stage dev in us-west-2" in capsys.readouterr().out
    )


def test_only_originals_tagged_failed_expire(s3: Any) -> None:
    """Originals of uploads that never became images carry the tag processing puts on them: under
    both prefixes they, and only they, expire after FAILED_UPLOAD_DAYS (in every stage, whatever
    its DELETE_ORIGINALS); the multipart rule stays."""
    from chalicelib.storage import FAILED_TAG

    done = provision(s3, UPLOADS, IMAGES, [GALLERY])
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=UPLOADS)["Rules"]}
    assert sorted(rules) == ["abort-abandoned-uploads", "expire-failed-originals", "expire-failed-uploads"]
    tag = {"Key": FAILED_TAG[0], "Value": FAILED_TAG[1]}
    expiring = [r for r in rules.values() if "Expiration" in r]
    assert sorted(r["Filter"]["And"]["Prefix"] for r in expiring) == ["originals/", "uploads/"]
    for rule in expiring:
        assert rule["Status"] == "Enabled" and rule["Filter"]["And"]["Tags"] == [tag]
        assert rule["Expiration"] == {"Days": FAILED_UPLOAD_DAYS} and "Prefix" not in rule["Filter"]
    assert f"expire after {FAILED_UPLOAD_DAYS} days" in done[-1]
    # Only the upload bucket: renditions are never expired.
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        s3.get_bucket_lifecycle_configuration(Bucket=IMAGES)


def test_bucket_region_says_where_a_bucket_is_or_none(s3: Any) -> None:
    assert bucket_region(s3, UPLOADS) is None
    boto3.client("s3", region_name="ap-south-1").create_bucket(
        Bucket=UPLOADS, CreateBucketConfiguration={"LocationConstraint": "ap-south-1"}
    )
    assert bucket_region(s3, UPLOADS) == "ap-south-1"
