"""identify (chalicelib/transform.py): facts and camera EXIF from real files, never GPS coordinates.

The camera values below were read once from each file's raw EXIF with Pillow's ``getexif()`` and
written down here (``tests/data/README.md`` says where each file comes from).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, TiffImagePlugin

from chalicelib import imaging, operations, transform
from chalicelib.errors import ImageshelfError
from tests import imaging_corpus as corpus
from tests.imaging_corpus import BLUE, GREEN, RED, save

DATA = Path(__file__).resolve().parent / "data"
SAMPLE = Path(transform.__file__).with_name("sample.jpg")
KEYS = {
    "format", "content_type", "width", "height", "frames", "animated", "mode", "bit_depth",
    "has_alpha", "color_profile", "orientation", "camera", "has_location", "dominant_color",
}  # fmt: skip
CAMERA_KEYS = {"make", "model", "lens", "taken_at", "exposure_time", "f_number", "iso", "focal_length"}


def identify(data: bytes, **kwargs: Any) -> dict[str, Any]:
    info = transform.identify(data, **kwargs)
    assert set(info) == KEYS
    assert json.loads(json.dumps(info, allow_nan=False)) == info  # plain JSON, nothing else
    if info["camera"] is not None:
        assert set(info["camera"]) == CAMERA_KEYS
    return info


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def distance(a: str, b: str) -> float:
    return sum((x - y) ** 2 for x, y in zip(rgb(a), rgb(b), strict=True)) ** 0.5


# --- real camera files --------------------------------------------------------------------------


def test_a_real_camera_jpeg():
    info = identify((DATA / "canon-powershot-s40.jpg").read_bytes())
    assert info["format"] == "JPEG" and info["content_type"] == "image/jpeg"
    assert (info["width"], info["height"], info["frames"], info["animated"]) == (480, 360, 1, False)
    assert (info["mode"], info["bit_depth"], info["has_alpha"]) == ("RGB", 8, False)
    assert info["orientation"] == 1
    assert info["color_profile"] is None
    assert info["camera"] == {
        "make": "Canon",
        "model": "Canon PowerShot S40",
        "lens": None,  # not recorded by this camera
        "taken_at": "2003-12-14T12:01:44",
        "exposure_time": "1/500",
        "f_number": 4.9,
        "iso": None,  # in Canon's maker note only, not in the EXIF ISO tag
        "focal_length": 21.3,  # 21.3125 mm
    }
    assert info["has_location"] is False
    r, g, b = rgb(info["dominant_color"])
    assert g > r and g > b  # a flower among green leaves


def test_camera_strings_padded_with_nuls_and_spaces_are_trimmed():
    # EXIF as a Ricoh GR writes it: Make "PENTAX RICOH IMAGING\0", Model "GR" and 60 NULs,
    # LensModel "GR LENS" and 36 spaces and 4 NULs.
    info = identify((DATA / "ricoh-gr.jpg").read_bytes())
    assert info["camera"] == {
        "make": "PENTAX RICOH IMAGING",
        "model": "GR",
        "lens": "GR LENS",
        "taken_at": "2013-03-29T10:06:41",
        "exposure_time": "1/500",
        "f_number": 2.8,
        "iso": 100,
        "focal_length": 18.3,
    }


def test_the_bundled_sample_shows_a_camera():
    data = SAMPLE.read_bytes()
    assert len(data) <= 400 * 1024
    info = identify(data)
    assert (info["format"], info["width"], info["height"]) == ("JPEG", 1600, 858)
    assert info["color_profile"] == "Adobe RGB (1998)"
    assert info["camera"] == {
        "make": "Canon",
        "model": "Canon EOS Rebel T6",
        "lens": "EF-S18-55mm f/3.5-5.6 III",
        "taken_at": "2018-10-27T13:27:23",
        "exposure_time": "1/100",
        "f_number": 4.0,
        "iso": 100,
        "focal_length": 25.0,
    }
    assert info["has_location"] is False


def test_gps_becomes_has_location_and_never_coordinates():
    # A FLIR Duo Pro R frame: 16-bit greyscale TIFF, GPS 35° 35' 59.995" N, 111° 39' 42.578" W.
    info = identify((DATA / "flir-gps.tiff").read_bytes())
    assert info["has_location"] is True
    assert (info["format"], info["mode"], info["bit_depth"]) == ("TIFF", "I;16", 16)
    assert info["camera"]["make"] == "FLIR" and info["camera"]["model"] == "Duo Pro R"
    dumped = json.dumps(info)
    for value in ("59.99", "42.57", "35.5", "35.6", "111", "-111", "WGS", "1845"):
        assert value not in dumped, value


def test_gps_of_a_phone_style_jpeg_is_only_a_flag():
    data, _ = corpus.gps_photo()  # GPS 51° 30' 26.7" N, 0° 7' 39.9" W
    info = identify(data)
    assert info["has_location"] is True
    dumped = json.dumps(info)
    for value in ("51.", "26.7", "39.9", "30.0", "7.0", "0.12", "51, 30"):
        assert value not in dumped, value
    assert info["camera"]["make"] == "SecretCam"


def test_a_heic_from_an_iphone():
    info = identify((DATA / "iphone-arrow.heic").read_bytes())
    assert (info["format"], info["content_type"]) == ("HEIF", "image/heic")
    assert (info["width"], info["height"]) == (3024, 4032)  # after the rotation
    assert info["orientation"] == 6
    assert info["color_profile"] == "Display P3"
    assert info["camera"]["make"] == "Apple" and info["camera"]["model"] == "iPhone 8 Plus"
    assert info["camera"]["iso"] == 25 and info["camera"]["exposure_time"] == "1/33"


# --- synthetic files: modes, depth, frames, colour ----------------------------------------------


def test_png_with_alpha_has_alpha():
    info = identify(corpus.save(Image.new("RGBA", (40, 30), (255, 0, 0, 100)), "PNG"))
    assert (info["mode"], info["has_alpha"], info["bit_depth"]) == ("RGBA", True, 8)
    assert info["camera"] is None and info["has_location"] is False
    assert identify(corpus.save(Image.new("RGB", (40, 30), RED), "PNG"))["has_alpha"] is False


def test_sixteen_bit_png_reports_sixteen_bits():
    info = identify(corpus.png16_rgb((40, 30), (65535, 0, 0)))
    assert info["bit_depth"] == 16
    assert info["format"] == "PNG"
    assert distance(info["dominant_color"], "#ff0000") < 10


def test_one_bit_and_palette_depths():
    assert identify(save(Image.new("1", (40, 30), 1), "PNG"))["bit_depth"] == 1
    assert identify(save(Image.new("RGB", (40, 30), RED).convert("P"), "PNG"))["bit_depth"] == 8


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animation(fmt: str):
    info = identify(corpus.animation(fmt, [RED, GREEN, BLUE], [100, 100, 100]))
    assert (info["format"], info["frames"], info["animated"]) == (fmt, 3, True)
    assert (info["width"], info["height"]) == (200, 100)
    assert distance(info["dominant_color"], "#ff0000") < 10  # the first frame


def test_orientation_swaps_the_size():
    info = identify(corpus.oriented("JPEG", 6))
    assert info["orientation"] == 6
    assert (info["width"], info["height"]) == (120, 80)


def test_dominant_colour_of_a_mostly_red_image_is_red():
    im = Image.new("RGB", (300, 200), (220, 20, 30))
    im.paste(BLUE, (0, 0, 60, 200))
    info = identify(save(im, "JPEG", quality=90))
    r, g, b = rgb(info["dominant_color"])
    assert r > 180 and g < 70 and b < 70


def test_dominant_colour_ignores_transparent_pixels():
    im = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    im.paste((20, 200, 40, 255), (0, 0, 100, 200))
    r, g, b = rgb(identify(save(im, "PNG"))["dominant_color"])
    assert g > 150 and r < 60 and b < 80


def test_dominant_colour_from_a_thumbnail_matches_the_original():
    data = SAMPLE.read_bytes()
    thumb = transform.render(data, operations.Spec(width=400, height=400)).data
    assert distance(identify(data, pixels=thumb)["dominant_color"], identify(data)["dominant_color"]) < 12
    im = Image.new("RGB", (600, 400), (200, 40, 40))
    im.paste((40, 40, 200), (0, 0, 150, 400))
    red = save(im, "JPEG", quality=90)
    thumb = imaging.fit(red, (400, 400)).data
    assert distance(identify(red, pixels=thumb)["dominant_color"], identify(red)["dominant_color"]) < 12


def test_unreadable_pixels_fall_back_to_the_original():
    data = save(Image.new("RGB", (60, 40), RED), "JPEG")
    assert distance(identify(data, pixels=b"not an image")["dominant_color"], "#ff0000") < 10


# --- bad EXIF, bad files ------------------------------------------------------------------------


def test_bad_exif_values_become_null():
    exif = Image.Exif()
    exif[0x010F] = "\x00\x00  "  # Make: nothing but padding
    exif[0x0110] = "Model\x01X"  # a control character
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2019:13:45 99:00:00"  # no such date
    sub[0x9011] = "+99:99"  # no such offset
    sub[0x829A] = TiffImagePlugin.IFDRational(1, 0)  # exposure 1/0
    sub[0x829D] = TiffImagePlugin.IFDRational(0, 0)  # f-number 0/0
    sub[0x8827] = 0  # ISO 0
    sub[0x920A] = -5.0  # negative focal length
    sub[0xA434] = 12345  # lens: not text
    info = identify(save(Image.new("RGB", (60, 40), RED), "JPEG", exif=exif.tobytes()))
    assert info["camera"] == {
        "make": None,
        "model": "ModelX",
        "lens": None,
        "taken_at": None,
        "exposure_time": None,
        "f_number": None,
        "iso": None,
        "focal_length": None,
    }


def test_garbage_gps_without_coordinates_is_no_location():
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[0] = b"\x02\x02\x00\x00"  # a version and nothing else
    info = identify(save(Image.new("RGB", (60, 40), RED), "JPEG", exif=exif.tobytes()))
    assert info["has_location"] is False and info["camera"] is None


def test_date_taken_with_its_offset_and_exposure_forms():
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011] = "2024:05:07 09:33:04", "+08:00"
    sub[0x829A] = TiffImagePlugin.IFDRational(5, 2)
    info = identify(save(Image.new("RGB", (60, 40), RED), "JPEG", exif=exif.tobytes()))
    assert info["camera"]["taken_at"] == "2024-05-07T09:33:04+08:00"
    assert info["camera"]["exposure_time"] == "2.5"
    sub[0x829A] = TiffImagePlugin.IFDRational(3, 10)
    info = identify(save(Image.new("RGB", (60, 40), RED), "JPEG", exif=exif.tobytes()))
    assert info["camera"]["exposure_time"] == "0.3"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (save(Image.new("RGB", (300, 200), RED), "PNG")[:300], "corrupt_image"),
        (save(Image.new("RGB", (300, 200), RED), "GIF")[:-40], "corrupt_image"),
        (corpus.jpeg_claiming(7000, 7000), "corrupt_image"),
        (corpus.webp_header_bomb(), "too_many_pixels"),
        (b"<html>not an image</html>" * 3, "not_an_image"),
        (b"", "empty_file"),
    ],
)
def test_bad_files_raise_stable_codes(data: bytes, code: str):
    with pytest.raises(ImageshelfError) as info:
        transform.identify(data)
    assert info.value.code == code


def test_limits_apply():
    data = save(Image.new("RGB", (300, 200), RED), "PNG")
    with pytest.raises(ImageshelfError) as info:
        transform.identify(data, imaging.Limits(max_pixels=1000))
    assert info.value.code == "too_many_pixels"


def test_every_stage_of_a_truncated_jpeg_is_an_answer_or_a_stable_error():
    data = (DATA / "canon-powershot-s40.jpg").read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        try:
            identify(data[:cut])
        except ImageshelfError as error:
            assert error.code in ("empty_file", "not_an_image", "corrupt_image"), (cut, error)


def test_the_thumbnail_path_does_not_decode_the_original_again(monkeypatch: pytest.MonkeyPatch):
    calls: list[object] = []
    real = imaging._decode
    monkeypatch.setattr(imaging, "_decode", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = SAMPLE.read_bytes()
    thumb = io.BytesIO()
    Image.open(io.BytesIO(data)).resize((400, 214)).save(thumb, "JPEG")
    identify(data, pixels=thumb.getvalue())
    assert calls == []
    identify(data)
    assert len(calls) == 1
