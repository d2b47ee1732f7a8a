"""iPhone HEIC photos, end to end: a real one (tests/data/README.md), not one encoded here."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chalicelib import formats, imaging
from chalicelib.errors import ImageshelfError
from imageshelf_client.client import sniff_content_type
from tests.support import IMAGES_BUCKET, UPLOAD_BUCKET, post_upload, s3_event

HEIC = Path(__file__).parent / "data" / "iphone-arrow.heic"


def arrow_points_up(im: Image.Image) -> bool:
    """The photo is a hand-drawn arrow: shown the right way, its tip is at the top centre."""
    grey = im.convert("L")
    w, h = grey.size

    def darkest(box: tuple[float, float, float, float]) -> int:
        x0, y0, x1, y1 = (round(v) for v in (box[0] * w, box[1] * h, box[2] * w, box[3] * h))
        return int(imaging._extrema(grey.crop((x0, y0, x1, y1)))[0])

    # ink near the top centre (the tip), none in the top corners, none at the bottom centre
    return (
        darkest((0.4, 0.05, 0.6, 0.15)) < 90
        and darkest((0.0, 0.0, 0.2, 0.1)) > 90 < darkest((0.8, 0.0, 1.0, 0.1))
        and darkest((0.4, 0.9, 0.6, 1.0)) > 90
    )


def test_an_iphone_heic_is_sniffed_and_read_from_its_header() -> None:
    data = HEIC.read_bytes()
    assert formats.sniff(data) == (formats.BY_NAME["HEIF"], None)
    assert sniff_content_type(data) == "image/heic"
    info = imaging.inspect(data)
    # 4032x3024 as stored, turned upright by its irot box (EXIF orientation 6)
    assert (info.format, info.content_type, info.width, info.height) == ("HEIF", "image/heic", 3024, 4032)


def test_an_iphone_heic_renders_upright_in_srgb_without_metadata() -> None:
    info, (thumb, large) = imaging.render(HEIC.read_bytes(), [(400, 400), (1600, 1600)], alternates=("WEBP",))
    assert (thumb.width, thumb.height, large.width, large.height) == (300, 400, 1200, 1600)
    for encoded in (thumb, *thumb.alternates, large):
        with Image.open(io.BytesIO(encoded.data)) as im:
            assert im.size == (encoded.width, encoded.height)
            assert not im.info.get("exif") and not im.info.get("icc_profile") and not im.getexif()
            assert arrow_points_up(im)
    assert info.placeholder  # and a placeholder like any photo


@pytest.mark.parametrize("kept", [0.999, 0.5, 0.1])
def test_a_truncated_heic_is_refused_not_filled_in_grey(kept: float) -> None:
    data = HEIC.read_bytes()
    with pytest.raises(ImageshelfError) as refused:
        imaging.render(data[: int(len(data) * kept)], [(400, 400)])
    assert refused.value.code == "corrupt_image" and "truncated" in str(refused.value)


def test_the_pixel_limit_refuses_a_heic_before_decoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pi_heif.as_plugin import HeifImageFile  # type: ignore[import-untyped]

    def no_decode(self: Any) -> Any:
        raise AssertionError("decoded despite the limit")

    monkeypatch.setattr(HeifImageFile, "load", no_decode)
    with pytest.raises(ImageshelfError) as refused:
        imaging.render(HEIC.read_bytes(), [(400, 400)], imaging.Limits(max_pixels=12_000_000))
    assert refused.value.code == "too_many_pixels" and "3024x4032" in str(refused.value)


@pytest.mark.parametrize("declared", ["image/heic", "image/heif", "IMAGE/HEIF"])
def test_a_heic_upload_is_granted_and_processed(client: Any, aws: Any, declared: str) -> None:
    # image/heif is what many tools (and Android) name the same files: granted as declared, since
    # the browser sends the Content-Type it declared and S3 holds it to the signed one.
    grant = post_upload(client, filename="IMG_0001.HEIC", content_type=declared)
    assert grant.status_code == 201, grant.body
    body = json.loads(grant.body)
    assert body["fields"]["Content-Type"].lower() == declared.lower()
    aws.put_object(
        Bucket=UPLOAD_BUCKET,
        Key=body["fields"]["key"],
        Body=HEIC.read_bytes(),
        Metadata={"filename": body["fields"]["x-amz-meta-filename"]},
    )
    client.lambda_.invoke("resize", s3_event(body["fields"]["key"]))
    image = json.loads(client.http.get(f"/images/{body['id']}").body)
    assert image["status"] == "ready", image
    original = image["original"]
    assert (original["format"], original["content_type"], original["width"], original["height"]) == (
        "HEIF", "image/heic", 3024, 4032,
    )  # fmt: skip
    thumb = next(r for r in image["renditions"] if r["name"] == "thumb")
    assert (thumb["content_type"], thumb["width"], thumb["height"]) == ("image/jpeg", 300, 400)
    key = thumb["url"].split("?")[0].split(f"/{IMAGES_BUCKET}/")[-1].split(".amazonaws.com/")[-1]
    with Image.open(io.BytesIO(aws.get_object(Bucket=IMAGES_BUCKET, Key=key)["Body"].read())) as im:
        assert im.format == "JPEG" and arrow_points_up(im)


def test_a_heic_put_by_any_s3_client_is_processed(client: Any, aws: Any) -> None:
    """``aws s3 cp IMG_0001.HEIC s3://<upload bucket>/uploads/``: no grant, any key."""
    aws.put_object(Bucket=UPLOAD_BUCKET, Key="uploads/IMG_0001.HEIC", Body=HEIC.read_bytes())
    client.lambda_.invoke("resize", s3_event("uploads/IMG_0001.HEIC"))
    (image,) = json.loads(client.http.get("/images").body)["images"]
    assert image["status"] == "ready" and image["original"]["format"] == "HEIF"
