"""Helpers shared by the tests: images, S3 events, and the local stack in a subprocess."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import quote_plus

from PIL import Image

from tools.stack import IMAGES_BUCKET, UPLOAD_BUCKET, Stack, free_port

__all__ = [
    "IMAGES_BUCKET",
    "UPLOAD_BUCKET",
    "Stack",
    "free_port",
    "jpeg",
    "png_rgba",
    "post_upload",
    "process",
    "s3_event",
]


def jpeg(
    width: int = 1200, height: int = 800, color: tuple[int, int, int] = (200, 40, 40), **save: Any
) -> bytes:
    """A JPEG whose top-left quarter is white, so orientation and cropping are visible."""
    image = Image.new("RGB", (width, height), color)
    image.paste((255, 255, 255), (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def png_rgba(width: int = 300, height: int = 200) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 255, 0))
    image.paste((0, 128, 255, 255), (0, 0, width // 2, height))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def s3_event(key: str, bucket: str = UPLOAD_BUCKET, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 notification as Lambda receives it: the key URL-encoded, as S3 sends it
    (Chalice's test client does not encode keys; real S3 does)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-23T12:00:00.000Z",
                "eventName": event,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "resize",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": 1, "eTag": "x", "sequencer": "0"},
                },
            }
        ]
    }


def post_upload(client: Any, **body: Any) -> Any:
    """``POST /uploads`` through Chalice's test client."""
    return client.http.post("/uploads", headers={"Content-Type": "application/json"}, body=json.dumps(body))


def process(client: Any, aws: Any, data: bytes, filename: str = "photo.jpg") -> str:
    """Upload through a presigned grant's key and deliver the S3 event; returns the id."""
    grant = json.loads(post_upload(client, filename=filename, content_type="image/jpeg").body)
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=grant["fields"]["key"],
        Body=data,
        Metadata={"filename": grant["fields"]["x-amz-meta-filename"]},
    )
    client.lambda_.invoke("resize", s3_event(grant["fields"]["key"]))
    return grant["id"]
