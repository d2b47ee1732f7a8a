"""The hand-written IAM policies (.chalice/policy-<stage>-<function>.json) are sufficient and minimal.

How: the app's real code paths (routes through Chalice's test client, the resize and operations
functions through their Lambda invoke) run against moto with IAM enforcement on, as an IAM user
holding exactly one function's policy. Every path must work with the whole policy (sufficient),
and removing any one statement must break at least one path (minimal).

Where moto's S3 authorisation differs from AWS's, the harness makes it behave like AWS, because a
test that passes against looser rules proves nothing:

- HeadObject on a missing key: AWS answers 404 only to callers allowed ``s3:ListBucket`` on the
  bucket, 403 to everyone else; moto always answers 404.
- DeleteObjects: AWS checks ``s3:DeleteObject`` on each key; moto checks it on the bucket ARN.
- SSM and SQS: moto authorises their calls against the resource ``*``; AWS authorises GetParameter
  against the parameter's ARN and ReceiveMessage/DeleteMessage against the queue's, so a policy
  naming the one parameter or queue would pass on AWS and fail in moto. The harness gives moto
  the ARN.
- CopyObject: AWS also needs ``s3:GetObject`` on the source; a conditional delete (If-Match) also
  needs ``s3:GetObject`` on the key. moto checks neither; the harness does. A conditional write
  (PutObject with If-None-Match, a render's lease) needs ``s3:PutObject`` alone, on AWS as in
  moto. ``test_conditional_requests_are_authorised_as_on_aws`` holds the harness to both.
- Presigned URLs are not sent by the app (browsers use them), and moto cannot authorise presigned
  requests under enforcement. The harness checks, with moto's own policy evaluator, that the
  policy allows the action on the exact bucket and key each URL the app returned will be used
  for: S3 authorises a presigned request as the principal that signed it.

Not proven here: the CloudWatch Logs statement (the Lambda runtime uses it, not the app), and the
resize function's ``ReportFailedEvents`` (Lambda itself sends failed events to the dead-letter
queue); they are checked for the exact log group and queue of each function instead. Nor who may
invoke the operations function: ``lambda:InvokeFunction`` is in its callers' policies, not in
any of the app's (the API renders a miss itself and never invokes another function).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import boto3
import pytest
from moto import mock_aws, settings
from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.s3.responses import S3Response
from moto.sqs.responses import SQSResponse
from moto.ssm.responses import SimpleSystemManagerResponse

from tests.support import jpeg, s3_event
from tools.provision import ROOT, provision, stage_environment

STAGES = ("dev", "prod")
FUNCTIONS = ("api_handler", "resize", "reconcile", "operations")
ADMIN_TOKEN = "iam-test-token"
# The stage's render signing key, in SSM (`make render-key`), as RENDER_SIGNING_KEY_PARAMETER names it.
RENDER_KEY = "iam-render-key"
# What a stage with DELETE_ORIGINALS=true adds to its resize policy (docs/deploy.md says so too).
DELETE_ORIGINALS_STATEMENT = {
    "Sid": "DeleteOriginals",
    "Effect": "Allow",
    "Action": "s3:DeleteObject",
    "Resource": "arn:aws:s3:::{upload_bucket}/originals/*",
}
# What docs/deploy.md ("Upload token") tells a stage that opts in to upload authorisation to add.
UPLOAD_TOKEN = "iam-upload-token"
# The tag processing puts on an original that never became an image (chalicelib/storage.py).
FAILED_TAGS = [{"Key": "imageshelf-state", "Value": "failed"}]
READ_UPLOAD_TOKEN_STATEMENT = {
    "Sid": "ReadUploadToken",
    "Effect": "Allow",
    "Action": "ssm:GetParameter",
    "Resource": "arn:aws:ssm:*:*:parameter/imageshelf/{stage}/upload-token",
}


def policy(stage: str, function: str) -> dict[str, Any]:
    return json.loads((ROOT / ".chalice" / f"policy-{stage}-{function}.json").read_text())


def without(document: dict[str, Any], index: int) -> dict[str, Any]:
    statements = [s for i, s in enumerate(document["Statement"]) if i != index]
    return {**document, "Statement": statements}


# --- moto, made to authorise S3 like AWS --------------------------------------------------------


def _aws_like_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    authorize = S3Response._authenticate_and_authorize_s3_action
    head = S3Response.head_object

    def authorize_as(self: Any, action: str, bucket_name: str, key_name: str) -> None:
        saved = self.data.get("Action")
        self.data["Action"] = action
        try:
            authorize(self, bucket_name=bucket_name, key_name=key_name)
        finally:
            self.data["Action"] = saved

    def authorize_each_key(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        if key_name is None and self.data.get("Action") == "DeleteObject" and self.is_delete_keys():
            for element in ET.fromstring(self.body).iter():
                if element.tag.rsplit("}", 1)[-1] == "Key":
                    authorize(self, bucket_name=bucket_name, key_name=element.text)
            return
        authorize(self, bucket_name=bucket_name, key_name=key_name)
        source = self.headers.get("x-amz-copy-source")
        if source and self.data.get("Action") == "PutObject":  # CopyObject reads its source
            source_bucket, source_key = unquote(urlsplit(source).path).lstrip("/").split("/", 1)
            authorize_as(self, "GetObject", source_bucket, source_key)
        if self.headers.get("If-Match") and self.data.get("Action") == "DeleteObject" and key_name:
            authorize_as(self, "GetObject", bucket_name or "", key_name)  # a conditional delete reads it

    def head_404_needs_list(self: Any, bucket_name: str, *args: Any, **kwargs: Any) -> Any:
        response = head(self, bucket_name, *args, **kwargs)
        if response[0] == 404:
            self.data["Action"] = "ListBucket"
            authorize(self, bucket_name=bucket_name)  # raises AccessDenied: S3 says 403, not 404
        return response

    def parameter_arn(self: Any) -> str:
        name = self._get_param("Name") or ""
        return f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"

    monkeypatch.setattr(S3Response, "_authenticate_and_authorize_s3_action", authorize_each_key)
    monkeypatch.setattr(S3Response, "head_object", head_404_needs_list)

    def queue_arn(self: Any) -> str:
        name = (self._get_param("QueueUrl") or "").rstrip("/").rsplit("/", 1)[-1]
        return f"arn:aws:sqs:{self.region}:{self.current_account}:{name}"

    monkeypatch.setattr(SimpleSystemManagerResponse, "_determine_resource", parameter_arn, raising=False)
    monkeypatch.setattr(SQSResponse, "_determine_resource", queue_arn, raising=False)


@dataclass
class Harness:
    """One stage's app against moto, its S3 calls made as an IAM user holding ``document``."""

    stage: str
    document: dict[str, Any]
    client: Any
    admin: Any
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    sqs: Any = None
    queue_url: str = ""

    @contextmanager
    def unenforced(self) -> Iterator[None]:
        """Set-up and inspection, outside the policy under test (nested ones end with the outer)."""
        before = settings.INITIAL_NO_AUTH_ACTION_COUNT
        self.monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", math.inf)
        try:
            yield
        finally:
            self.monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", before)

    def may(self, action: str, url: str, key: str | None = None) -> None:
        """The policy lets its holder sign ``url`` for ``action`` (S3 checks the signer's rights)."""
        parts = urlsplit(url)
        bucket = parts.netloc.split(".s3", 1)[0]
        key = key if key is not None else unquote(parts.path.lstrip("/"))
        arn = f"arn:aws:s3:::{bucket}/{key}"
        verdict = IAMPolicy(json.dumps(self.document)).is_action_permitted(action, arn)
        if verdict != PermissionResult.PERMITTED:
            raise PermissionError(f"the policy does not allow {action} on {arn}, which the app presigned")

    def upload(self, data: bytes) -> tuple[str, str]:
        """An object in the upload bucket as a presigned upload leaves it; returns (id, key)."""
        from chalicelib import storage

        image_id = storage.new_id()
        key = storage.upload_key(image_id)
        with self.unenforced():
            self.admin.put_object(
                Bucket=self.env["UPLOAD_BUCKET"], Key=key, Body=data, Metadata={"filename": "photo.jpg"}
            )
        return image_id, key

    def ready_image(self) -> str:
        image_id, key = self.upload(jpeg(900, 600))
        with self.unenforced():
            self.resize(key)
        return image_id

    def clear(self) -> None:
        """Empty both buckets and the dead-letter queue, and forget tokens and keys read from SSM:
        each path starts from nothing (a key cached by an earlier path would hide its statement)."""
        from chalicelib import auth

        auth.reset_cache()
        with self.unenforced():
            for bucket in (self.env["UPLOAD_BUCKET"], self.env["IMAGES_BUCKET"]):
                for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    for obj in page.get("Contents", []):
                        self.admin.delete_object(Bucket=bucket, Key=obj["Key"])
            while messages := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages"
            ):
                for message in messages:
                    self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def raw_upload(self, data: bytes, key: str = "uploads/holiday photo.jpg") -> str:
        """An object put under uploads/ by any S3 client (``aws s3 cp``); returns its key."""
        with self.unenforced():
            self.admin.put_object(Bucket=self.env["UPLOAD_BUCKET"], Key=key, Body=data)
        return key

    def resize(self, key: str) -> None:
        self.client.lambda_.invoke("resize", s3_event(key, bucket=self.env["UPLOAD_BUCKET"]))

    def reconcile(self) -> None:
        event = self.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        self.client.lambda_.invoke("reconcile", event)

    def only_image(self) -> tuple[str, list[str]]:
        """The one image in the images bucket: its id and keys (bookkeeping keys aside)."""
        keys = [k for k in self.keys("IMAGES_BUCKET") if not k.startswith("~")]
        assert len({k[:20] for k in keys}) == 1, keys
        return keys[0][:20], keys

    def tags(self, key: str) -> list[dict[str, str]]:
        """The tags of an object in the upload bucket."""
        with self.unenforced():
            return list(self.admin.get_object_tagging(Bucket=self.env["UPLOAD_BUCKET"], Key=key)["TagSet"])

    def keys(self, bucket_var: str, prefix: str = "") -> list[str]:
        with self.unenforced():
            listing = self.admin.list_objects_v2(Bucket=self.env[bucket_var], Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    def render(self, path: str) -> str:
        """GET a render route: a 302 to the render, which must be in the images bucket, whole (no
        lease left), and readable through the URL the app presigned; returns its key."""
        response = self.client.http.get(path)
        assert response.status_code == 302, (path, response.status_code, response.body)
        location = response.headers["Location"]
        self.may("s3:GetObject", location)
        key = unquote(urlsplit(location).path.lstrip("/"))
        assert "/x/" in key and key in self.keys("IMAGES_BUCKET", key), key
        assert not [k for k in self.keys("IMAGES_BUCKET") if k.endswith(".lock")], "a lease was left"
        return key

    def operation(self, **event: Any) -> dict[str, Any]:
        """Invoke the ``operations`` function as an SDK client would; returns its JSON answer."""
        payload = self.client.lambda_.invoke("operations", event).payload
        assert isinstance(payload, dict) and "error" not in payload, (event, payload)
        return payload

    def rendered(self, answer: dict[str, Any]) -> str:
        """The key of the render an ``operations`` answer points at (as ``render`` checks it)."""
        self.may("s3:GetObject", answer["url"])
        key = unquote(urlsplit(answer["url"]).path.lstrip("/"))
        assert "/x/" in key and key in self.keys("IMAGES_BUCKET", key), answer
        assert not [k for k in self.keys("IMAGES_BUCKET") if k.endswith(".lock")], "a lease was left"
        return key


def signed_query(subject: str, params: dict[str, str]) -> str:
    """A render query string signed with the stage's key, as the client and the CLI sign it."""
    from chalicelib import operations

    spec = operations.parse({name: [value] for name, value in params.items()})
    return urlencode({**params, "sig": operations.sign(spec, RENDER_KEY, subject)})


@contextmanager
def no_decoding() -> Iterator[None]:
    """Rendering fails meanwhile: what runs is a cache hit, or nothing."""
    from chalicelib import transform

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cache hit decoded the image")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transform, "render", refuse)
        yield


@contextmanager
def leases_look_stale() -> Iterator[None]:
    """Leases are looked at as if their maker had died long ago (RENDER_LEASE_STALE passed)."""
    from chalicelib import storage

    take = storage.take_render_lease
    later = datetime.now(UTC) + timedelta(seconds=storage.RENDER_LEASE_STALE + 60)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "take_render_lease", lambda key, settings: take(key, settings, now=later))
        yield


# --- the code paths -------------------------------------------------------------------------------


def api_upload_post(h: Harness) -> None:
    response = h.client.http.post(
        "/uploads",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"filename": "a.jpg", "content_type": "image/jpeg"}),
    )
    assert response.status_code == 201, response.body
    grant = json.loads(response.body)
    h.may("s3:PutObject", grant["url"], key=grant["fields"]["key"])


def api_upload_put(h: Harness) -> None:
    response = h.client.http.post(
        "/uploads",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"filename": "a.jpg", "content_type": "image/jpeg", "size": 1000, "method": "put"}),
    )
    assert response.status_code == 201, response.body
    h.may("s3:PutObject", json.loads(response.body)["url"])


def api_list(h: Harness) -> None:
    h.ready_image()
    response = h.client.http.get("/images")
    assert response.status_code == 200, response.body
    images = json.loads(response.body)["images"]
    assert images and images[0]["status"] == "ready" and images[0]["renditions"]
    for rendition in images[0]["renditions"]:
        h.may("s3:GetObject", rendition["url"])


def api_gallery(h: Harness) -> None:
    h.ready_image()
    assert h.client.http.get("/").status_code == 200


def api_get_ready(h: Harness) -> None:
    response = h.client.http.get(f"/images/{h.ready_image()}")
    assert response.status_code == 200 and json.loads(response.body)["status"] == "ready", response.body


def api_get_pending(h: Harness) -> None:
    image_id, _ = h.upload(jpeg(64, 64))
    response = h.client.http.get(f"/images/{image_id}")
    assert response.status_code == 200 and json.loads(response.body)["status"] == "pending", response.body


def api_get_missing(h: Harness) -> None:
    from chalicelib import storage

    response = h.client.http.get(f"/images/{storage.new_id()}")
    assert response.status_code == 404, response.body


def api_delete_ready(h: Harness) -> None:
    image_id = h.ready_image()
    response = h.client.http.delete(f"/images/{image_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 204, response.body
    # The app ignores DeleteObjects' per-key errors, so check that everything is really gone
    # (but the tombstone, which keeps it from coming back).
    assert h.keys("IMAGES_BUCKET", f"{image_id}/") == [f"{image_id}/deleted"]
    assert h.keys("UPLOAD_BUCKET", f"uploads/{image_id}") == []


def api_delete_pending(h: Harness) -> None:
    image_id, key = h.upload(jpeg(64, 64))
    response = h.client.http.delete(f"/images/{image_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 204, response.body
    assert h.keys("UPLOAD_BUCKET", key) == []


def api_render_miss(h: Harness) -> None:
    """A preset (no signature needed) not cached yet: the lease, the original, the render stored."""
    image_id = h.ready_image()
    key = h.render(f"/images/{image_id}/render?preset=thumb")
    assert key.startswith(f"{image_id}/x/"), key


def api_render_hit(h: Harness) -> None:
    """A cached render: one HeadObject, no decode, the same object."""
    image_id = h.ready_image()
    with h.unenforced():
        made = h.render(f"/images/{image_id}/render?preset=large")
    with no_decoding():
        assert h.render(f"/images/{image_id}/render?preset=large") == made


def api_render_signed(h: Harness) -> None:
    """Parameters other than a preset: refused unsigned, rendered signed with the stage's key,
    which the function reads from SSM (RENDER_SIGNING_KEY_PARAMETER)."""
    image_id = h.ready_image()
    response = h.client.http.get(f"/images/{image_id}/render?w=300&format=webp")
    assert response.status_code == 403 and json.loads(response.body)["error"]["code"] == "forbidden"
    h.render(f"/images/{image_id}/render?{signed_query(image_id, {'w': '300', 'format': 'webp'})}")


def api_render_inbox_image(h: Harness) -> None:
    """An ``aws s3 cp`` upload's image renders from its own original, ``originals/{id}``."""
    key = h.raw_upload(jpeg(300, 200))
    with h.unenforced():
        h.resize(key)
    image_id, _ = h.only_image()
    h.render(f"/images/{image_id}/render?preset=thumb")


def api_render_original_gone(h: Harness) -> None:
    """With DELETE_ORIGINALS the original is gone once the image is ready (removed here by hand,
    as the resize function would): the render is made from the largest rendition."""
    image_id = h.ready_image()
    with h.unenforced():
        h.admin.delete_object(Bucket=h.env["UPLOAD_BUCKET"], Key=f"uploads/{image_id}")
    h.render(f"/images/{image_id}/render?preset=thumb")


def api_render_lease_takeover(h: Harness) -> None:
    """A lease whose maker died (a stale ``.lock``): taken over with a conditional delete of
    exactly that lease (If-Match), then a conditional put (If-None-Match) of a new one."""
    image_id = h.ready_image()
    with h.unenforced():
        key = h.render(f"/images/{image_id}/render?preset=thumb")
        h.admin.delete_object(Bucket=h.env["IMAGES_BUCKET"], Key=key)
        h.admin.put_object(Bucket=h.env["IMAGES_BUCKET"], Key=f"{key}.lock", Body=b"")
    with leases_look_stale():
        assert h.render(f"/images/{image_id}/render?preset=thumb") == key


def api_info(h: Harness) -> None:
    image_id = h.ready_image()
    response = h.client.http.get(f"/images/{image_id}/info")
    assert response.status_code == 200, response.body
    assert json.loads(response.body)["width"] == 900


def api_sample(h: Harness) -> None:
    """The bundled sample photo: rendered into ``~sample/x/``, and identified (no AWS for that)."""
    assert h.render("/sample/render?preset=thumb").startswith("~sample/x/")
    response = h.client.http.get("/sample/info")
    assert response.status_code == 200 and json.loads(response.body)["id"] == "sample", response.body


def api_delete_rendered(h: Harness) -> None:
    """Renders go with their image."""
    image_id = h.ready_image()
    h.render(f"/images/{image_id}/render?preset=thumb")
    response = h.client.http.delete(f"/images/{image_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 204, response.body
    assert h.keys("IMAGES_BUCKET", f"{image_id}/") == [f"{image_id}/deleted"]


# The operations function, invoked directly (lambda:InvokeFunction is its caller's authorisation).


def operations_identify(h: Harness) -> None:
    image_id = h.ready_image()
    assert h.operation(operation="ping") == {"message": "pong"}
    dimensions = h.operation(operation="getDimensions", id=image_id)
    assert (dimensions["width"], dimensions["height"]) == (900, 600), dimensions
    assert h.operation(operation="identify", id=image_id)["format"] == "JPEG"


def operations_render(h: Harness) -> None:
    """resize, thumbnail and convert: each a render made once, answered as a URL."""
    image_id = h.ready_image()
    made = [
        h.rendered(h.operation(operation="resize", id=image_id, w=300, format="webp")),
        h.rendered(h.operation(operation="thumbnail", id=image_id)),
        h.rendered(h.operation(operation="convert", id=image_id, format="png")),
    ]
    assert len(set(made)) == 3 and all(k.startswith(f"{image_id}/x/") for k in made), made


def operations_render_hit(h: Harness) -> None:
    image_id = h.ready_image()
    with h.unenforced():
        made = h.rendered(h.operation(operation="resize", id=image_id, w=300))
    with no_decoding():
        assert h.rendered(h.operation(operation="resize", id=image_id, w=300)) == made


def operations_render_inbox_image(h: Harness) -> None:
    key = h.raw_upload(jpeg(300, 200))
    with h.unenforced():
        h.resize(key)
    image_id, _ = h.only_image()
    h.rendered(h.operation(operation="thumbnail", id=image_id))


def operations_render_original_gone(h: Harness) -> None:
    """DELETE_ORIGINALS (the original removed by hand): the largest rendition is the source."""
    image_id = h.ready_image()
    with h.unenforced():
        h.admin.delete_object(Bucket=h.env["UPLOAD_BUCKET"], Key=f"uploads/{image_id}")
    h.rendered(h.operation(operation="convert", id=image_id, format="png"))


def operations_lease_takeover(h: Harness) -> None:
    image_id = h.ready_image()
    with h.unenforced():
        key = h.rendered(h.operation(operation="resize", id=image_id, w=200))
        h.admin.delete_object(Bucket=h.env["IMAGES_BUCKET"], Key=key)
        h.admin.put_object(Bucket=h.env["IMAGES_BUCKET"], Key=f"{key}.lock", Body=b"")
    with leases_look_stale():
        assert h.rendered(h.operation(operation="resize", id=image_id, w=200)) == key


def operations_sample(h: Harness) -> None:
    sample = h.operation(operation="getSample")
    assert h.rendered(sample).startswith("~sample/x/") and sample["width"], sample
    assert h.rendered(h.operation(operation="resize", id="sample", w=120)).startswith("~sample/x/")


def operations_unknown_image(h: Harness) -> None:
    from chalicelib import storage

    payload = h.client.lambda_.invoke("operations", {"operation": "identify", "id": storage.new_id()}).payload
    assert payload["status"] == 404 and payload["error"]["code"] == "not_found", payload


def resize_ready(h: Harness) -> None:
    image_id, key = h.upload(jpeg(900, 600))
    h.resize(key)
    keys = h.keys("IMAGES_BUCKET", f"{image_id}/")
    assert {k.split("/r/")[1].split(".")[0] for k in keys if "/r/" in k} == {"thumb", "large"}, keys
    records = [k for k in keys if "/s/" in k]
    assert len(records) == 1 and records[0].startswith(f"{image_id}/s/ready."), keys


def resize_failed(h: Harness) -> None:
    image_id, key = h.upload(b"not an image at all")
    h.resize(key)
    assert [k.split("/s/")[1][:7] for k in h.keys("IMAGES_BUCKET", f"{image_id}/")] == ["failed."]
    assert h.tags(key) == FAILED_TAGS  # so the upload bucket's lifecycle expires it


def resize_inbox_failed(h: Harness) -> None:
    """``aws s3 cp`` of a file that is no image: its own original, tagged to expire."""
    h.resize(h.raw_upload(b"not an image either"))
    image_id, keys = h.only_image()
    assert any(f"{image_id}/s/failed." in k for k in keys), keys
    assert h.tags(f"originals/{image_id}") == FAILED_TAGS


def resize_duplicate(h: Harness) -> None:
    image_id, key = h.upload(jpeg(300, 200))
    h.resize(key)
    before = h.keys("IMAGES_BUCKET", f"{image_id}/")
    h.resize(key)
    assert h.keys("IMAGES_BUCKET", f"{image_id}/") == before


def resize_gone(h: Harness) -> None:
    from chalicelib import storage

    image_id = storage.new_id()
    h.resize(storage.upload_key(image_id))  # deleted before the event arrived: ignored, no error
    assert h.keys("IMAGES_BUCKET", f"{image_id}/") == []


def resize_inbox(h: Harness) -> None:
    """``aws s3 cp`` to a raw key: the object gets an original of its own, and leaves the inbox."""
    key = h.raw_upload(jpeg(300, 200))
    h.resize(key)
    image_id, keys = h.only_image()
    assert any(f"{image_id}/s/ready." in k for k in keys), keys
    assert h.keys("UPLOAD_BUCKET") == [f"originals/{image_id}"]


def reconcile_lost_upload(h: Harness) -> None:
    """A granted upload whose event never came: the reconciler processes it from the index."""
    with h.unenforced():
        grant = json.loads(
            h.client.http.post(
                "/uploads", headers={"Content-Type": "application/json"},
                body=json.dumps({"filename": "a.jpg", "content_type": "image/jpeg"}),
            ).body
        )  # fmt: skip
        h.admin.put_object(Bucket=h.env["UPLOAD_BUCKET"], Key=grant["fields"]["key"], Body=jpeg(300, 200))
    h.reconcile()
    keys = h.keys("IMAGES_BUCKET", f"{grant['id']}/")
    assert any("/s/ready." in k for k in keys) and h.keys("IMAGES_BUCKET", "~todo/") == [], keys


def reconcile_lost_inbox_upload(h: Harness) -> None:
    """An ``aws s3 cp`` whose event never came: found by the sweep, then processed."""
    h.raw_upload(jpeg(300, 200))
    h.reconcile()  # the sweep marks it
    h.reconcile()  # the index processes it
    image_id, keys = h.only_image()
    assert any("/s/ready." in k for k in keys), keys
    assert h.keys("UPLOAD_BUCKET") == [f"originals/{image_id}"]


def reconcile_times_out(h: Harness) -> None:
    """An upload re-driven RECONCILE_ATTEMPTS times in vain is recorded ``failed`` (timeout), its
    original (presigned, and an ``aws s3 cp`` one) tagged to expire."""
    from chalicelib import storage

    image_id, key = h.upload(jpeg(30, 20))
    inbox_id = storage.new_id()  # an ``aws s3 cp`` upload's image, its original already copied
    with h.unenforced():
        h.admin.copy_object(
            Bucket=h.env["UPLOAD_BUCKET"], Key=f"originals/{inbox_id}",
            CopySource={"Bucket": h.env["UPLOAD_BUCKET"], "Key": key},
        )  # fmt: skip
        for marked, source in ((image_id, key), (inbox_id, f"originals/{inbox_id}")):
            body = json.dumps({"source": source, "attempts": 99})
            h.admin.put_object(Bucket=h.env["IMAGES_BUCKET"], Key=f"~todo/{marked}", Body=body)
    h.reconcile()
    for marked, source in ((image_id, key), (inbox_id, f"originals/{inbox_id}")):
        assert any("/s/failed." in k for k in h.keys("IMAGES_BUCKET", f"{marked}/")), marked
        assert h.tags(source) == FAILED_TAGS, source


def reconcile_orphan(h: Harness) -> None:
    """Records and renditions whose original is gone are removed."""
    image_id = h.ready_image()
    with h.unenforced():
        h.admin.delete_object(Bucket=h.env["UPLOAD_BUCKET"], Key=f"uploads/{image_id}")
    h.reconcile()
    assert h.keys("IMAGES_BUCKET", f"{image_id}/") == []


def reconcile_refuses_a_deleted_images_original(h: Harness) -> None:
    """A deleted image's original that came back (a retried copy) is removed, the tombstone kept."""
    from chalicelib import storage

    image_id = storage.new_id()
    with h.unenforced():
        h.admin.put_object(Bucket=h.env["IMAGES_BUCKET"], Key=f"{image_id}/deleted", Body=b"{}")
        h.admin.put_object(Bucket=h.env["UPLOAD_BUCKET"], Key=f"originals/{image_id}", Body=jpeg(30, 20))
    h.reconcile()
    assert h.keys("UPLOAD_BUCKET") == []
    assert h.keys("IMAGES_BUCKET", f"{image_id}/") == [f"{image_id}/deleted"]


def reconcile_drains_dead_letters(h: Harness) -> None:
    """An event Lambda gave up on (the queue holds the event itself) is processed, then deleted."""
    image_id, key = h.upload(jpeg(300, 200))
    with h.unenforced():
        event = s3_event(key, h.env["UPLOAD_BUCKET"])
        h.sqs.send_message(QueueUrl=h.queue_url, MessageBody=json.dumps(event))
    h.reconcile()
    assert any("/s/ready." in k for k in h.keys("IMAGES_BUCKET", f"{image_id}/"))
    with h.unenforced():
        left = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == "0" == left["ApproximateNumberOfMessagesNotVisible"]


PATHS: dict[str, list[Callable[[Harness], None]]] = {
    "api_handler": [
        api_upload_post,
        api_upload_put,
        api_list,
        api_gallery,
        api_get_ready,
        api_get_pending,
        api_get_missing,
        api_delete_ready,
        api_delete_pending,
        api_render_miss,
        api_render_hit,
        api_render_signed,
        api_render_inbox_image,
        api_render_original_gone,
        api_render_lease_takeover,
        api_info,
        api_sample,
        api_delete_rendered,
    ],
    "resize": [resize_ready, resize_failed, resize_duplicate, resize_gone, resize_inbox, resize_inbox_failed],
    "reconcile": [
        reconcile_lost_upload,
        reconcile_lost_inbox_upload,
        reconcile_times_out,
        reconcile_orphan,
        reconcile_refuses_a_deleted_images_original,
        reconcile_drains_dead_letters,
    ],
    "operations": [
        operations_identify,
        operations_render,
        operations_render_hit,
        operations_render_inbox_image,
        operations_render_original_gone,
        operations_lease_takeover,
        operations_sample,
        operations_unknown_image,
    ],
}


def run_paths(
    stage: str,
    function: str,
    document: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    project_dir: Path = ROOT,
) -> dict[str, str]:
    """Run every path of ``function`` as a user holding ``document``; returns the failures by path."""
    from chalice.test import Client

    from app import app
    from chalicelib import auth, storage

    env = stage_environment(stage, project_dir)
    failures: dict[str, str] = {}
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            patch.delenv(name)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        _aws_like_s3(patch)
        auth.reset_cache()  # each run must fetch the token with the policy under test
        with mock_aws():
            admin = boto3.client(
                "s3", region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
            )
            provision(admin, env["UPLOAD_BUCKET"], env["IMAGES_BUCKET"], ["https://gallery.example"])
            # On AWS the stage reads its admin token from SSM (`make admin-token` puts it there).
            boto3.client(
                "ssm", region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
            ).put_parameter(Name=env["ADMIN_TOKEN_PARAMETER"], Value=ADMIN_TOKEN, Type="SecureString")
            if env.get("RENDER_SIGNING_KEY_PARAMETER"):  # `make render-key` puts it there
                boto3.client(
                    "ssm", region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
                ).put_parameter(
                    Name=env["RENDER_SIGNING_KEY_PARAMETER"], Value=RENDER_KEY, Type="SecureString"
                )
            if env.get("UPLOAD_TOKEN_PARAMETER"):  # a stage that opted in (`make upload-token`)
                boto3.client(
                    "ssm", region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
                ).put_parameter(Name=env["UPLOAD_TOKEN_PARAMETER"], Value=UPLOAD_TOKEN, Type="SecureString")
            # On AWS `make deploy` makes the resize function's dead-letter queue, which the
            # reconciler drains (RESIZE_DLQ_URL).
            sqs = boto3.client(
                "sqs", region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
            )
            queue_url = sqs.create_queue(QueueName=f"imageshelf-{stage}-resize-dlq")["QueueUrl"]
            patch.setenv("RESIZE_DLQ_URL", queue_url)
            patch.setenv("RECONCILE_GRACE", "0")  # the paths' uploads are seconds old
            iam = boto3.client(
                "iam", region_name="us-east-1", aws_access_key_id="admin", aws_secret_access_key="admin"
            )
            iam.create_user(UserName=function)
            iam.put_user_policy(UserName=function, PolicyName=function, PolicyDocument=json.dumps(document))
            key = iam.create_access_key(UserName=function)["AccessKey"]
            patch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
            patch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
            storage.reset_clients()
            patch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
            with Client(app, stage_name=stage, project_dir=str(project_dir)) as client:
                harness = Harness(stage, document, client, admin, env, patch, sqs, queue_url)
                for path in PATHS[function]:
                    try:
                        harness.clear()
                        path(harness)
                    except Exception as error:  # a denied call surfaces as many exception types
                        failures[path.__name__] = f"{type(error).__name__}: {error}"[:300]
    storage.reset_clients()
    auth.reset_cache()
    return failures


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_policy_is_sufficient(stage: str, function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_paths(stage, function, policy(stage, function), monkeypatch) == {}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_harness_denies_what_no_policy_grants(function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enforcement is really on: with only the logs statement, every path fails."""
    logs_only = {**policy("dev", function), "Statement": [_logs_statement(policy("dev", function))]}
    failures = run_paths("dev", function, logs_only, monkeypatch)
    assert sorted(failures) == sorted(p.__name__ for p in PATHS[function])


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_statement_is_needed(function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Minimal: dropping any S3 statement breaks a path (prod is dev with other names, below)."""
    document = policy("dev", function)
    unneeded = []
    for index, statement in enumerate(document["Statement"]):
        if statement["Sid"] in ("Logs", "ReportFailedEvents"):  # used by Lambda, not the app's code
            continue
        if not run_paths("dev", function, without(document, index), monkeypatch):
            unneeded.append(statement["Sid"])
    assert unneeded == [], f"no code path needs {unneeded} in policy-dev-{function}.json"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_prod_policy_is_dev_policy_for_prod_names(function: str) -> None:
    """So the minimality proven on dev holds for prod: the same statements, other names."""
    from tools.deploy import function_names

    def generic(stage: str) -> dict[str, Any]:
        text, env = json.dumps(policy(stage, function)), stage_environment(stage)
        for name, placeholder in (
            (env["UPLOAD_BUCKET"], "UPLOAD"),
            (env["IMAGES_BUCKET"], "IMAGES"),
            (f"/aws/lambda/{function_names(stage)[function]}", "LOG_GROUP"),
            (f"parameter{env['ADMIN_TOKEN_PARAMETER']}", "PARAMETER"),
            (f"parameter{env['RENDER_SIGNING_KEY_PARAMETER']}", "RENDER_KEY_PARAMETER"),
            (f"imageshelf-{stage}-resize-dlq", "QUEUE"),
        ):
            text = text.replace(f":{name}", f":{placeholder}")
        return json.loads(text)

    assert generic("prod") == generic("dev")


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _logs_statement(document: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in document["Statement"] if s["Sid"] == "Logs")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_policy_shape(stage: str, function: str) -> None:
    """Only S3 object/bucket actions on this stage's buckets, reading this stage's admin token and
    render key (the API function only), and logs for this function's own log group (Chalice names the API
    function ``imageshelf-<stage>``, the others ``...-<name>``)."""
    from tools.deploy import function_names

    document = policy(stage, function)
    env = stage_environment(stage)
    buckets = (f"arn:aws:s3:::{env['UPLOAD_BUCKET']}", f"arn:aws:s3:::{env['IMAGES_BUCKET']}")
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_names(stage)[function]}"
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(statement)
        actions, resources = _as_list(statement["Action"]), _as_list(statement["Resource"])
        if statement["Sid"] == "Logs":
            assert sorted(actions) == ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
            assert sorted(resources) == [group, f"{group}:*"]
            continue
        if statement["Sid"] == "ReportFailedEvents":  # Lambda's OnFailure destination (tools/monitoring.py)
            assert function == "resize"
            assert actions == ["sqs:SendMessage"]
            assert resources == [f"arn:aws:sqs:*:*:imageshelf-{stage}-resize-dlq"]
            continue
        if statement["Sid"] == "DrainDeadLetters":  # the same queue, drained by the reconciler
            assert function == "reconcile"
            assert sorted(actions) == ["sqs:DeleteMessage", "sqs:ReceiveMessage"]
            assert resources == [f"arn:aws:sqs:*:*:imageshelf-{stage}-resize-dlq"]
            continue
        if statement["Sid"] == "ReadAdminToken":
            assert function == "api_handler"
            assert actions == ["ssm:GetParameter"]
            assert resources == [f"arn:aws:ssm:*:*:parameter{env['ADMIN_TOKEN_PARAMETER']}"]
            continue
        if statement["Sid"] == "ReadRenderKey":  # renders' signatures are checked by the API only
            assert function == "api_handler"
            assert actions == ["ssm:GetParameter"]
            assert resources == [f"arn:aws:ssm:*:*:parameter{env['RENDER_SIGNING_KEY_PARAMETER']}"]
            continue
        if statement["Sid"] == "ReadUploadToken":  # a stage that opted in (docs/deploy.md)
            assert function == "api_handler"
            assert actions == ["ssm:GetParameter"]
            assert resources == [f"arn:aws:ssm:*:*:parameter{env['UPLOAD_TOKEN_PARAMETER']}"]
            continue
        for resource in resources:
            if resource in buckets:  # the bucket itself: listing only
                assert actions == ["s3:ListBucket"], statement
            else:  # objects in one of the two buckets
                assert resource.startswith(tuple(f"{b}/" for b in buckets)), resource
                assert set(actions) <= {
                    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging"
                }, statement  # fmt: skip
        if function == "operations" and {"s3:PutObject", "s3:DeleteObject"} & set(actions):
            # It writes and deletes renders and their leases, nothing else (both ``{id}/x/`` and
            # the sample's ``~sample/x/`` match).
            assert resources == [f"arn:aws:s3:::{env['IMAGES_BUCKET']}/*/x/*"], statement
        if "s3:PutObjectTagging" in actions:  # failed originals, for the lifecycle: those prefixes only
            upload = f"arn:aws:s3:::{env['UPLOAD_BUCKET']}"
            assert function in ("resize", "reconcile") and actions == ["s3:PutObjectTagging"]
            assert sorted(resources) == [f"{upload}/originals/*", f"{upload}/uploads/*"]


@pytest.mark.parametrize("stage", STAGES)
def test_config_points_each_function_at_its_policy(stage: str) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False and config["stages"][stage]["autogen_policy"] is False
    functions = config["stages"][stage]["lambda_functions"]
    for function in FUNCTIONS:
        assert functions[function]["iam_policy_file"] == f"policy-{stage}-{function}.json"


@pytest.mark.parametrize("function", ["resize", "reconcile"])
def test_tagging_failed_originals_needs_both_prefixes(function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """TagFailedOriginals names exactly the prefixes originals live under: without either one, an
    original of that prefix that never became an image is left untagged, and never expires."""
    document = policy("dev", function)
    index = next(i for i, s in enumerate(document["Statement"]) if s["Sid"] == "TagFailedOriginals")
    for prefix in ("uploads/", "originals/"):
        statement = dict(document["Statement"][index])
        statement["Resource"] = [r for r in statement["Resource"] if f"/{prefix}" not in r]
        narrowed = {**document, "Statement": [*without(document, index)["Statement"], statement]}
        failures = run_paths("dev", function, narrowed, monkeypatch)
        assert failures, f"no {function} path tags an original under {prefix}"


@pytest.mark.parametrize("stage", STAGES)
def test_delete_originals_matches_policy(stage: str) -> None:
    """The resize policy may delete the originals ``aws s3 cp`` uploads get (``originals/``) exactly
    when the stage turns DELETE_ORIGINALS on (it always releases ``uploads/`` objects it copied)."""
    enabled = stage_environment(stage).get("DELETE_ORIGINALS", "false").lower() in ("1", "true", "yes", "on")
    upload_objects = f"arn:aws:s3:::{stage_environment(stage)['UPLOAD_BUCKET']}/originals/*"
    granted = any(
        s["Action"] == "s3:DeleteObject" and s["Resource"] == upload_objects
        for s in policy(stage, "resize")["Statement"]
    )
    assert granted == enabled


def test_delete_originals_needs_exactly_the_documented_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DELETE_ORIGINALS=true the resize function deletes each original once it is ready: that
    needs the statement docs/deploy.md tells you to add, and works with it."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["stages"]["dev"]["environment_variables"]["DELETE_ORIGINALS"] = "true"
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    bucket = stage_environment("dev")["UPLOAD_BUCKET"]
    statement = json.loads(json.dumps(DELETE_ORIGINALS_STATEMENT).replace("{upload_bucket}", bucket))
    base = policy("dev", "resize")
    extended = {**base, "Statement": [*base["Statement"], statement]}

    def original_deleted(h: Harness) -> None:
        _, key = h.upload(jpeg(300, 200))  # a presigned upload's original, uploads/{id}
        h.resize(key)
        h.resize(h.raw_upload(jpeg(300, 200)))  # aws s3 cp's, copied to originals/{id}
        assert h.keys("UPLOAD_BUCKET") == []

    monkeypatch.setitem(PATHS, "resize", [original_deleted])
    assert run_paths("dev", "resize", extended, monkeypatch, project_dir=tmp_path) == {}
    assert "original_deleted" in run_paths("dev", "resize", base, monkeypatch, project_dir=tmp_path)
    assert "DeleteOriginals" in (ROOT / "docs" / "deploy.md").read_text()


def test_upload_token_needs_exactly_the_documented_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that opts in to upload authorisation (UPLOAD_TOKEN_PARAMETER) reads its upload token
    from SSM: that needs the ReadUploadToken statement docs/deploy.md gives, on that one parameter,
    and works with it (the upload token and the admin token both upload; another is refused)."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage_env = config["stages"]["dev"]["environment_variables"]
    stage_env["UPLOAD_TOKEN_PARAMETER"] = "/imageshelf/dev/upload-token"
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    statement = json.loads(json.dumps(READ_UPLOAD_TOKEN_STATEMENT).replace("{stage}", "dev"))
    base = policy("dev", "api_handler")
    extended = {**base, "Statement": [*base["Statement"], statement]}

    def upload_with_token(h: Harness) -> None:
        def grant(token: str) -> int:
            return int(
                h.client.http.post(
                    "/uploads",
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                    body=json.dumps({"filename": "a.jpg", "content_type": "image/jpeg"}),
                ).status_code
            )

        assert (grant(UPLOAD_TOKEN), grant(ADMIN_TOKEN), grant("guess")) == (201, 201, 403)

    monkeypatch.setitem(PATHS, "api_handler", [upload_with_token])
    assert run_paths("dev", "api_handler", extended, monkeypatch, project_dir=tmp_path) == {}
    assert "upload_with_token" in run_paths("dev", "api_handler", base, monkeypatch, project_dir=tmp_path)
    # A grant on another parameter (the admin token's, say) is not enough either.
    elsewhere = json.loads(json.dumps(statement).replace("upload-token", "other-token"))
    wrong = {**base, "Statement": [*base["Statement"], elsewhere]}
    assert "upload_with_token" in run_paths("dev", "api_handler", wrong, monkeypatch, project_dir=tmp_path)
    assert '"Sid": "ReadUploadToken"' in (ROOT / "docs" / "deploy.md").read_text()


def test_conditional_requests_are_authorised_as_on_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A render's lease is a conditional PutObject (If-None-Match: *), which S3 authorises as
    ``s3:PutObject`` alone; taking over a stale lease is a conditional DeleteObject (If-Match: its
    ETag), which needs ``s3:GetObject`` on the key besides ``s3:DeleteObject`` (AWS's guide to
    conditional deletes). The harness must hold policies to exactly that."""
    from botocore.exceptions import ClientError

    from chalicelib import storage
    from chalicelib.config import Settings

    def settings_of(h: Harness) -> Settings:
        return Settings(upload_bucket=h.env["UPLOAD_BUCKET"], images_bucket=h.env["IMAGES_BUCKET"])

    def conditional_put(h: Harness) -> None:
        key = storage.render_key(storage.new_id(), "0" * 32)
        assert storage.take_render_lease(key, settings_of(h))
        with pytest.raises(ClientError) as refused:  # the lease is held: 412, not 403
            storage.s3().put_object(
                Bucket=h.env["IMAGES_BUCKET"], Key=f"{key}.lock", Body=b"", IfNoneMatch="*"
            )
        assert refused.value.response["Error"]["Code"] == "PreconditionFailed"

    def conditional_delete(h: Harness) -> None:
        lock = f"{storage.render_key(storage.new_id(), '0' * 32)}.lock"
        with h.unenforced():
            etag = h.admin.put_object(Bucket=h.env["IMAGES_BUCKET"], Key=lock, Body=b"")["ETag"].strip('"')
        assert storage.delete_image_object(lock, settings_of(h), etag=etag)
        assert h.keys("IMAGES_BUCKET", lock) == []

    def grant(*actions: str) -> dict[str, Any]:
        images = f"arn:aws:s3:::{stage_environment('dev')['IMAGES_BUCKET']}/*/x/*"
        statements = [{"Sid": f"S{i}", "Effect": "Allow", "Action": a, "Resource": images} for i, a in
                      enumerate(actions)]  # fmt: skip
        return {"Version": "2012-10-17", "Statement": statements}

    monkeypatch.setitem(PATHS, "operations", [conditional_put, conditional_delete])
    put_only = run_paths("dev", "operations", grant("s3:PutObject"), monkeypatch)
    assert sorted(put_only) == ["conditional_delete"]
    without_get = run_paths("dev", "operations", grant("s3:DeleteObject"), monkeypatch)
    assert sorted(without_get) == ["conditional_delete", "conditional_put"]
    assert "AccessDenied" in without_get["conditional_delete"]
    both = grant("s3:DeleteObject", "s3:GetObject")
    assert sorted(run_paths("dev", "operations", both, monkeypatch)) == ["conditional_put"]
