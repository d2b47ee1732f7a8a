"""Placeholders: each processed image's mean colour and few-pixel preview, in the listing."""

from __future__ import annotations

import base64
import io
import json
import random
from typing import Any

import pytest
from PIL import Image, ImageStat

from chalicelib import imaging, placeholder, storage
from tests.support import jpeg, png_rgba, process


def photo_like(width: int = 1600, height: int = 1200, seed: int = 7) -> bytes:
    """A noisy two-tone JPEG: sky over a field, so the mean is not any single pixel's colour."""
    rng = random.Random(seed)
    im = Image.new("RGB", (width, height), (70, 130, 210))
    im.paste((60, 150, 40), (0, height * 2 // 3, width, height))
    noise = Image.frombytes(
        "L", (width // 8, height // 8), bytes(rng.randrange(256) for _ in range(width * height // 64))
    )
    im = Image.blend(im, Image.merge("RGB", [noise.resize((width, height))] * 3), 0.15)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def mean_rgb(data: bytes) -> tuple[float, ...]:
    with Image.open(io.BytesIO(data)) as im:
        return tuple(ImageStat.Stat(im.convert("RGB")).mean)


def decode_preview(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    im = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    im.load()
    return im


@pytest.mark.parametrize(("data", "size"), [(photo_like(), (1600, 1200)), (jpeg(600, 900), (600, 900))])
def test_the_placeholder_colour_is_the_images_mean_and_the_preview_keeps_its_shape(
    data: bytes, size: tuple[int, int]
) -> None:
    info, _ = imaging.render(data, [(400, 400), (1600, 1600)])
    shown = placeholder.to_json(info.placeholder)
    assert shown is not None
    colour = tuple(int(shown["color"][i : i + 2], 16) for i in (1, 3, 5))
    for got, want in zip(colour, mean_rgb(data), strict=True):
        assert abs(got - want) <= 4, (colour, mean_rgb(data))
    preview = decode_preview(shown["preview"])
    assert max(preview.size) == placeholder.MAX_SIDE
    assert abs(preview.width / preview.height - size[0] / size[1]) < 0.25
    # The preview shows the picture, not a flat colour: its top is sky, its bottom field (or the
    # white quarter of the test JPEG): the mean of the preview is the mean colour too.
    stat = ImageStat.Stat(preview.convert("RGB"))
    assert max(stat.stddev) > 10
    for got_mean, want in zip(stat.mean, colour, strict=True):
        assert abs(got_mean - want) <= 6


def test_transparency_is_previewed_over_white() -> None:
    info, _ = imaging.render(png_rgba(300, 200), [(400, 400)])
    shown = placeholder.to_json(info.placeholder)
    assert shown is not None
    # Left half opaque (0, 128, 255), right half transparent: over white, the mean is halfway.
    colour = tuple(int(shown["color"][i : i + 2], 16) for i in (1, 3, 5))
    assert colour == pytest.approx((128, 192, 255), abs=4)


def test_an_animations_placeholder_is_its_first_frames() -> None:
    frames = [Image.new("RGB", (120, 80), c) for c in [(250, 10, 10), (10, 10, 250)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    info, out = imaging.render(buf.getvalue(), [(400, 400)])
    assert out[0].frames == 2
    shown = placeholder.to_json(info.placeholder)
    assert shown is not None and int(shown["color"][1:3], 16) > 200


@pytest.mark.parametrize(
    "bad", [None, "", "zzzzzz.8x6.AAAA", "ff0000.2x2.AAAA", "ff0000.9x1." + "A" * 36, 42]
)
def test_a_missing_or_damaged_placeholder_is_left_out(bad: Any) -> None:
    assert placeholder.to_json(bad) is None


def test_the_record_key_carries_the_placeholder_within_s3s_key_limit() -> None:
    value = imaging.render(photo_like(), [(400, 400)])[0].placeholder
    record = storage.Record(
        id=storage.new_id(), status="ready", filename="x" * 900 + ".jpg", bytes=1, format="JPEG",
        error_message=None, version="0123456789", placeholder=value,
    )  # fmt: skip
    key = record_key = storage.record_key(record)
    assert len(key.encode()) <= 1024
    parsed = storage.parse_record_key(record.id, record_key[len(record.id) + 1 :])
    assert parsed is not None and parsed.placeholder == value


def test_the_listing_shows_each_images_placeholder_with_no_call_per_image(client: Any, aws: Any) -> None:
    ids = [process(client, aws, photo_like(seed=s), f"p{s}.jpg") for s in range(3)]
    gets: list[str] = []
    storage.s3().meta.events.register("before-call.s3.GetObject", lambda **kw: gets.append("get"))
    images = json.loads(client.http.get("/images").body)["images"]
    assert gets == []
    assert sorted(i["id"] for i in images) == sorted(ids)
    for image in images:
        colour = tuple(int(image["placeholder"]["color"][i : i + 2], 16) for i in (1, 3, 5))
        assert colour == pytest.approx(mean_rgb(photo_like()), abs=6)
        decode_preview(image["placeholder"]["preview"])
    one = json.loads(client.http.get(f"/images/{ids[0]}").body)
    assert one["placeholder"] == next(i for i in images if i["id"] == ids[0])["placeholder"]


def test_the_python_client_exposes_the_placeholder_and_each_format(client: Any, aws: Any) -> None:
    from imageshelf_client.models import Image as ClientImage

    image_id = process(client, aws, photo_like(), "p.jpg")
    shown = ClientImage.from_json(json.loads(client.http.get(f"/images/{image_id}").body))
    assert shown.placeholder is not None and shown.placeholder["color"].startswith("#")
    thumb = shown.rendition("thumb")
    assert thumb is not None and thumb.content_type == "image/jpeg"
    assert thumb.url_for("image/jpeg") == thumb.url
    avif = thumb.url_for("image/avif")
    assert avif is not None and avif.split("?")[0].endswith(".avif")
    # an older server's JSON (no formats, no placeholder) still reads
    old = json.loads(client.http.get(f"/images/{image_id}").body)
    old.pop("placeholder")
    for r in old["renditions"]:
        r.pop("formats")
    legacy = ClientImage.from_json(old)
    assert legacy.placeholder is None and legacy.renditions[0].formats == ()
