"""The image pipeline: refusals, orientation, colour, modes, metadata, animation, damage, memory."""

from __future__ import annotations

import io
import random
import subprocess
import sys
import textwrap

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from chalicelib import imaging, shrink
from chalicelib.errors import ImageshelfError
from chalicelib.imaging import Encoded, Limits, fit, fit_size, inspect, render
from tests import imaging_corpus as corpus
from tests.imaging_corpus import BLUE, CORNERS, GREEN, RED, YELLOW, save


def decode(r: Encoded) -> Image.Image:
    return Image.open(io.BytesIO(r.data))


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 24) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=False))


def corner_colours(im: Image.Image) -> dict[str, tuple[int, ...]]:
    im = im.convert("RGB")
    w, h = im.size
    dx, dy = w // 6, h // 6
    return {
        "top_left": im.getpixel((dx, dy)),
        "top_right": im.getpixel((w - 1 - dx, dy)),
        "bottom_left": im.getpixel((dx, h - 1 - dy)),
        "bottom_right": im.getpixel((w - 1 - dx, h - 1 - dy)),
    }


def refusal(data: bytes, limits: Limits | None = None, box=(400, 400)) -> ImageshelfError:
    with pytest.raises(ImageshelfError) as info:
        fit(data, box, limits or Limits())
    return info.value


# --- refusals -----------------------------------------------------------------------------------


def test_empty_file_is_refused():
    err = refusal(b"")
    assert err.code == "empty_file"
    assert "0 bytes" in err.message


def test_file_over_the_byte_limit_is_refused_before_decoding():
    data = save(corpus.quadrants(), "PNG")
    err = refusal(data, Limits(max_bytes=len(data) - 1))
    assert err.code == "file_too_large"
    assert "limit" in err.message


@pytest.mark.parametrize(
    "data",
    [
        b"Just some text, not a picture.\n" * 20,
        b"<!doctype html><html><head><title>x</title></head><body><img src=a.png></body></html>",
        bytes(random.Random(7).randrange(256) for _ in range(4096)),
        b"BMW is a car brand, not a bitmap" * 10,
    ],
    ids=["text", "html", "random", "starts-with-BM"],
)
def test_non_images_are_not_an_image(data):
    assert refusal(data).code == "not_an_image"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("SVG", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        ("PDF", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n"),
        ("EPS", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
        ("PSD", b"8BPS\x00\x01" + b"\0" * 6 + b"\x00\x03\x00\x00\x00\x10\x00\x00\x00\x10\x00\x08\x00\x03"),
        ("ICO", save(Image.new("RGB", (32, 32), RED), "ICO")),
        ("TGA", save(Image.new("RGB", (32, 32), RED), "TGA")),
        ("PCX", save(Image.new("RGB", (32, 32), RED), "PCX")),
    ],
)
def test_other_formats_are_unsupported_and_named(name, data):
    err = refusal(data)
    assert err.code == "unsupported_format"
    assert "not supported" in err.message


def test_webp_declaring_9000x9000_is_refused_from_its_header():
    data = corpus.webp_header_bomb(9000, 9000)
    assert len(data) < 64
    err = refusal(data)
    assert err.code == "too_many_pixels"
    assert err.message == "The image is 9000x9000 (81.0 MP); the limit is 50.0 MP."


def test_pixels_are_limited_even_where_pillow_only_warns():
    # 8000x7000 = 56 MP: over our 50 MP limit, under Pillow's error threshold (it would only warn).
    err = refusal(corpus.png_header_only(8000, 7000))
    assert err.code == "too_many_pixels"
    assert "8000x7000 (56.0 MP)" in err.message


def test_giant_declared_png_is_refused_not_decoded():
    err = refusal(corpus.png_header_only(100_000, 100_000))
    assert err.code == "too_many_pixels"


def test_frame_limit():
    data = corpus.animation("GIF", [RED, GREEN, BLUE, YELLOW, RED, GREEN], [100] * 6)
    err = refusal(data, Limits(max_frames=5))
    assert err.code == "too_many_frames"
    assert "5" in err.message
    assert inspect(data, Limits(max_frames=6)).frames == 6


def test_animation_pixels_count_every_frame():
    data = corpus.animation("GIF", [RED, GREEN, BLUE], [100] * 3, size=(100, 100))
    err = refusal(data, Limits(max_pixels=25_000))  # one frame fits, three do not
    assert err.code == "too_many_pixels"
    assert "3 frames" in err.message


def test_error_codes_are_all_known():
    from chalicelib.errors import IMAGE_ERROR_CODES

    for data in (b"", b"hello", corpus.webp_header_bomb(), b"%PDF-1.4"):
        with pytest.raises(ImageshelfError) as info:
            fit(data, (10, 10))
        assert info.value.code in IMAGE_ERROR_CODES


# --- inspect / sizes / configuration --------------------------------------------------------------


def test_inspect_reads_the_header_with_orientation_applied():
    info = inspect(corpus.oriented("JPEG", 6))
    assert (info.format, info.content_type, info.width, info.height, info.frames) == (
        "JPEG", "image/jpeg", 120, 80, 1)  # displayed size, though stored 80x120  # fmt: skip


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((4000, 3000), (400, 400), (400, 300)),
        ((3000, 4000), (400, 400), (300, 400)),
        ((1000, 333), (400, 400), (400, 133)),
        ((1000, 335), (400, 400), (400, 134)),  # 133.999 rounds up
        ((100, 50), (400, 400), (100, 50)),  # never enlarged
        ((10000, 10), (400, 400), (400, 1)),  # at least 1
        ((1600, 1600), (400, 300), (300, 300)),
    ],
)
def test_fit_size(size, box, expected):
    assert fit_size(*size, box) == expected


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_every_format_rounds_sizes_the_same_way(fmt):
    data = save(Image.new("RGB", (1000, 335), (90, 120, 150)), fmt)
    r = fit(data, (400, 400))
    assert (r.width, r.height) == (400, 134) == decode(r).size


def test_small_images_are_never_enlarged():
    r = fit(save(corpus.quadrants((100, 50)), "PNG"), (1600, 1600))
    assert (r.width, r.height) == (100, 50) == decode(r).size


def test_render_decodes_once_for_all_boxes(monkeypatch):
    calls = []
    real = imaging._load
    monkeypatch.setattr(imaging, "_load", lambda *a: calls.append(1) or real(*a))
    info, out = render(save(corpus.quadrants((2000, 1000)), "JPEG"), [(400, 400), (1600, 1600), (100, 100)])
    assert len(calls) == 1
    assert [(r.width, r.height) for r in out] == [(400, 200), (1600, 800), (100, 50)]
    assert (info.width, info.height) == (2000, 1000)
    for r in out:
        assert close(corner_colours(decode(r))["top_right"], GREEN)


# --- orientation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_the_pixels(fmt, orientation):
    r = fit(corpus.oriented(fmt, orientation), (60, 60))
    assert (r.width, r.height) == (60, 40)
    got = corner_colours(decode(r))
    for corner, colour in CORNERS.items():
        assert close(got[corner], colour, 40), (corner, got[corner], colour)


@pytest.mark.parametrize("value", [0, 9, 255, 65535])
def test_invalid_orientation_values_are_ignored(value):
    stored = corpus.quadrants()
    exif = Image.Exif()
    exif[0x0112] = value
    r = fit(save(stored, "JPEG", exif=exif.tobytes(), quality=95), (60, 60))
    assert (r.width, r.height) == (60, 40)
    assert close(corner_colours(decode(r))["top_left"], RED, 40)


def test_damaged_exif_block_is_ignored():
    data = save(corpus.quadrants(), "JPEG", exif=b"Exif\0\0II*\0\xff\xff\xff\x7f" + b"\x01" * 40)
    assert close(corner_colours(decode(fit(data, (60, 60))))["bottom_right"], YELLOW, 40)


# --- colour and modes -----------------------------------------------------------------------------------


def _srgb_of(colour, icc: bytes, mode="RGB") -> tuple[int, ...]:
    """What lcms makes of ``colour`` in that profile, independently of the pipeline."""
    patch = Image.new(mode, (8, 8), colour)
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.profileToProfile(patch, src, ImageCms.createProfile("sRGB"), outputMode="RGB").getpixel(
        (4, 4)
    )


@pytest.mark.parametrize("profile", ["display-p3", "adobe-rgb"])
def test_wide_gamut_profiles_are_converted_to_srgb(profile):
    if profile == "display-p3":
        icc = corpus.matrix_profile("Test Display P3", corpus.DISPLAY_P3, 2.2)
    else:
        icc = corpus.ghostscript_profile("a98.icc")
        if icc is None:
            pytest.skip("Adobe RGB profile (Debian libgs-common) not installed and not downloadable")
    colour = (40, 170, 60)  # a green that is far more saturated in these spaces than in sRGB
    r = fit(save(Image.new("RGB", (200, 100), colour), "PNG", icc_profile=icc), (100, 100))
    got = decode(r).convert("RGB").getpixel((50, 25))
    expected = _srgb_of(colour, icc)
    assert close(got, expected, 6), (got, expected)
    assert not close(got, colour, 10)  # ignoring the profile would have left it unchanged
    assert "icc_profile" not in decode(r).info


def test_srgb_profile_is_left_alone_and_not_copied():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    r = fit(save(Image.new("RGB", (64, 64), (10, 120, 240)), "PNG", icc_profile=srgb), (32, 32))
    assert close(decode(r).getpixel((16, 16)), (10, 120, 240), 6)
    assert not decode(r).info.get("icc_profile")


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])  # Pillow writes CMYK JPEGs Adobe-inverted, TIFFs not
def test_cmyk_without_profile(fmt):
    im = Image.new("CMYK", (200, 100), (255, 0, 0, 0))  # cyan
    im.paste((0, 0, 0, 255), (100, 0, 200, 50))  # black
    im.paste((0, 255, 255, 0), (100, 50, 200, 100))  # red
    r = fit(save(im, fmt), (100, 100))
    out = decode(r).convert("RGB")
    assert r.content_type == "image/jpeg"
    assert close(out.getpixel((20, 25)), (0, 255, 255), 30)
    assert close(out.getpixel((80, 10)), (0, 0, 0), 30)
    assert close(out.getpixel((80, 40)), (255, 0, 0), 30)


def test_cmyk_with_profile_uses_the_profile():
    icc = corpus.ghostscript_profile("default_cmyk.icc")
    if icc is None:
        pytest.skip("CMYK profile (Debian libgs-common) not installed and not downloadable")
    colour = (0, 255, 255, 0)  # press red: duller than sRGB red
    r = fit(save(Image.new("CMYK", (64, 64), colour), "JPEG", icc_profile=icc, quality=98), (32, 32))
    got = decode(r).convert("RGB").getpixel((16, 16))
    assert close(got, _srgb_of(colour, icc, "CMYK"), 12)
    assert not close(got, (255, 0, 0), 20)


def test_greyscale_stays_greyscale():
    im = Image.linear_gradient("L").resize((300, 300))
    r = fit(save(im, "JPEG"), (100, 100))
    out = decode(r)
    assert out.mode == "L"
    assert abs(out.getpixel((50, 2)) - 0) < 12 and abs(out.getpixel((50, 97)) - 250) < 12


def test_16bit_grey_is_scaled_not_clipped():
    r = fit(save(Image.new("I;16", (64, 64), 40000), "PNG"), (32, 32))
    assert abs(decode(r).convert("L").getpixel((16, 16)) - 40000 // 257) <= 2


def test_16bit_rgb_png():
    r = fit(corpus.png16_rgb((64, 64), (65535, 32896, 0)), (32, 32))
    assert close(decode(r).convert("RGB").getpixel((16, 16)), (255, 128, 0), 6)


def test_palette_image():
    im = corpus.quadrants().quantize(8)
    out = decode(fit(save(im, "PNG"), (60, 60)))
    assert close(corner_colours(out)["bottom_left"], BLUE, 30)


def test_palette_with_transparency_keeps_alpha():
    im = Image.new("P", (100, 100), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (50, 0, 100, 100))
    r = fit(save(im, "PNG", transparency=0), (50, 50))
    out = decode(r).convert("RGBA")
    assert r.content_type in ("image/png", "image/webp")
    assert out.getpixel((5, 25))[3] == 0
    assert close(out.getpixel((45, 25)), (0, 0, 255, 255), 10)


def test_la_keeps_alpha_and_grey():
    im = Image.new("LA", (100, 100), (200, 255))
    im.paste((50, 0), (0, 0, 50, 100))
    out = decode(fit(save(im, "PNG"), (50, 50))).convert("RGBA")
    assert out.getpixel((5, 25))[3] == 0
    assert close(out.getpixel((45, 25)), (200, 200, 200, 255), 6)


def test_one_bit_image():
    im = Image.new("1", (200, 100), 0)
    im.paste(1, (100, 0, 200, 100))
    out = decode(fit(save(im, "PNG"), (100, 100))).convert("L")
    assert out.getpixel((10, 25)) < 10 and out.getpixel((90, 25)) > 245


def test_alpha_is_resampled_premultiplied():
    # Invisible red next to opaque blue: a non-premultiplied resize bleeds red into the edge.
    im = Image.new("RGBA", (400, 100), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (200, 0, 400, 100))
    out = decode(fit(save(im, "PNG"), (40, 40))).convert("RGBA")
    for x in range(out.width):
        r, _, b, a = out.getpixel((x, 5))
        if a > 16:
            assert r < 20 and b > 200, (x, out.getpixel((x, 5)))


def test_opaque_image_with_alpha_channel_becomes_progressive_jpeg():
    r = fit(save(corpus.quadrants((400, 300)).convert("RGBA"), "PNG"), (200, 200))
    assert (r.content_type, r.extension) == ("image/jpeg", "jpg")
    out = decode(r)
    assert out.info.get("progressive") and out.mode == "RGB"


def test_transparent_output_is_the_smaller_of_png_and_webp():
    im = corpus.quadrants((400, 300)).convert("RGBA")
    im.putalpha(Image.linear_gradient("L").resize((400, 300)))
    r = fit(save(im, "PNG"), (200, 200))
    out = decode(r)
    assert (r.content_type, r.extension) in (("image/png", "png"), ("image/webp", "webp"))
    small = out.convert("RGBA")
    png, webp = save(small, "PNG", compress_level=3), save(small, "WEBP", lossless=True, quality=20, method=1)
    assert len(r.data) <= min(len(png), len(webp)) * 1.02
    assert small.getpixel((100, 2))[3] < 10 and small.getpixel((100, 147))[3] > 240


# --- metadata ---------------------------------------------------------------------------------------


def test_gps_serials_xmp_comments_and_profiles_are_stripped():
    data, secrets = corpus.gps_photo()
    assert all(s in data for s in secrets[:6])  # they were there
    _, out = render(data, [(400, 400), (1600, 1600)])
    for r in out:
        for secret in secrets:
            assert secret not in r.data, secret
        assert not decode(r).getexif()
        assert "icc_profile" not in decode(r).info


def test_png_text_chunks_and_exif_are_stripped():
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret-author")
    info.add_itxt("Comment", "secret-itxt")
    info.add_text("Location", "secret-ztxt", zip=True)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    im = corpus.quadrants().convert("RGBA")
    im.putalpha(128)  # stays PNG/WebP
    r = fit(save(im, "PNG", pnginfo=info, exif=exif.tobytes()), (60, 60))
    for marker in (b"secret", b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"SecretCam", b"EXIF", b"XMP "):
        assert marker not in r.data


def test_webp_metadata_is_stripped():
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    data = save(corpus.quadrants(), "WEBP", exif=exif.tobytes(), xmp=b"<x:xmpmeta>SecretXMP</x:xmpmeta>")
    r = fit(data, (60, 60))
    assert b"SecretCam" not in r.data and b"SecretXMP" not in r.data


# --- animation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_keep_every_frame_durations_and_loop(fmt):
    colours, durations = [RED, GREEN, BLUE], [100, 200, 300]
    data = corpus.animation(fmt, colours, durations, loop=0)
    info, (r,) = render(data, [(100, 100)])
    assert info.frames == 3
    assert r.animated and r.frames == 3 and r.content_type == "image/webp"
    out = decode(r)
    assert out.size == (100, 50) == (r.width, r.height)
    assert out.n_frames == 3 and out.info["loop"] == 0
    for index, (colour, duration) in enumerate(zip(colours, durations, strict=True)):
        out.seek(index)
        out.load()
        assert out.info["duration"] == duration
        assert close(out.convert("RGB").getpixel((50, 25)), colour, 30)


def test_gif_without_loop_block_plays_once():
    r = fit(corpus.animation("GIF", [RED, GREEN], [100, 100], loop=None), (50, 50))
    assert decode(r).info["loop"] == 1


def test_animated_gif_with_transparency():
    frames = [Image.new("RGBA", (80, 80), (0, 0, 0, 0)) for _ in range(2)]
    frames[0].paste((255, 0, 0, 255), (0, 0, 40, 80))
    frames[1].paste((0, 0, 255, 255), (40, 0, 80, 80))
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, disposal=2, loop=0)
    out = decode(fit(data, (40, 40)))
    assert out.n_frames == 2
    first = out.convert("RGBA")
    assert close(first.getpixel((5, 20)), (255, 0, 0, 255), 30) and first.getpixel((35, 20))[3] < 30


def test_multi_page_tiff_renders_the_first_page():
    pages = [Image.new("RGB", (100, 100), c) for c in (RED, GREEN)]
    data = save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    info, (r,) = render(data, [(50, 50)])
    assert info.frames == 2 and not r.animated and r.frames == 1
    assert close(decode(r).getpixel((25, 25)), RED)


def test_avif_input():
    info, (r,) = render(save(corpus.quadrants((240, 160)), "AVIF", quality=90), [(60, 60)])
    assert info.format == "AVIF" and (r.width, r.height) == (60, 40)
    assert close(corner_colours(decode(r))["top_right"], GREEN, 40)


def test_mpo_from_phones_is_a_jpeg_first_frame():
    frames = [corpus.quadrants((200, 100)), Image.new("RGB", (200, 100), BLUE)]
    info, (r,) = render(save(frames[0], "MPO", save_all=True, append_images=frames[1:]), [(100, 100)])
    assert (info.format, info.content_type, info.frames) == ("JPEG", "image/jpeg", 2)
    assert close(corner_colours(decode(r))["top_left"], RED, 40)


def test_progressive_jpeg_fast_path_gives_the_same_picture(monkeypatch):
    big = Image.effect_noise((1600, 1200), 50).convert("RGB")
    big = Image.blend(big, corpus.quadrants((1600, 1200)), 0.7)
    data = save(big, "JPEG", quality=90, progressive=True)
    used = []
    real = shrink._dc_only
    monkeypatch.setattr(shrink, "_dc_only", lambda *a: used.append(real(*a)) or used[-1])
    fast = fit(data, (100, 100))  # 1600 / (100 * 1.5) >= 8: decoded at 1/8 from the DC scans only
    assert used and used[0] is not None
    monkeypatch.setattr(shrink, "_dc_only", lambda *a: None)
    slow = fit(data, (100, 100))
    # Same picture: libjpeg-turbo smooths partly known blocks a little (identical on real photos).
    from PIL import ImageChops, ImageStat

    diff = ImageChops.difference(decode(fast), decode(slow))
    assert max(hi for _, hi in diff.getextrema()) <= 12
    assert max(ImageStat.Stat(diff).mean) < 1.5


def test_encoder_failure_is_an_internal_error(monkeypatch):
    def broken(im):
        raise RuntimeError("boom")

    monkeypatch.setattr(imaging, "_encode_still", broken)
    assert refusal(save(corpus.quadrants(), "PNG")).code == "internal_error"


# --- damaged files -------------------------------------------------------------------------------------


def _photo_jpeg(progressive: bool) -> bytes:
    im = corpus.quadrants((800, 600)).resize((800, 600))
    im = Image.blend(im, Image.effect_noise((800, 600), 40).convert("RGB"), 0.3)
    return save(im, "JPEG", quality=90, progressive=progressive)


def test_jpeg_missing_only_its_end_marker_is_rendered():
    data = _photo_jpeg(False)
    r = fit(data[:-2], (200, 200))
    assert close(corner_colours(decode(r))["bottom_right"], YELLOW, 60)


def test_baseline_jpeg_cut_in_half_is_corrupt():
    data = _photo_jpeg(False)
    err = refusal(data[: len(data) // 2])
    assert err.code == "corrupt_image"
    assert "truncated" in err.message


def test_progressive_jpeg_missing_refinement_scans_is_rendered():
    data = _photo_jpeg(True)
    r = fit(data[: int(len(data) * 0.6)], (200, 200))
    got = corner_colours(decode(r))
    for corner, colour in CORNERS.items():
        assert close(got[corner], colour, 80), corner


def test_png_missing_iend_is_rendered_but_cut_pixel_data_is_corrupt():
    data = save(Image.effect_noise((300, 300), 60).convert("RGB"), "PNG")
    assert fit(data[:-12], (100, 100)).width == 100
    assert refusal(data[: len(data) // 2]).code == "corrupt_image"


def test_gif_cut_in_its_last_frame_keeps_the_complete_frames():
    frames = [Image.effect_noise((120, 120), 50 + 20 * i).convert("P") for i in range(3)]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r = fit(data[:-400], (60, 60))
    assert r.frames in (2, 3) and r.animated


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF", "BMP", "GIF"])
def test_truncated_files_are_corrupt(fmt):
    data = save(Image.effect_noise((200, 200), 60).convert("RGB"), fmt)
    err = refusal(data[: len(data) // 3])
    assert err.code == "corrupt_image"
    assert fmt in err.message or "damaged" in err.message


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_jpeg_declaring_far_more_pixels_than_it_holds_is_corrupt(progressive):
    # A few hundred bytes claiming 7000x7000: libjpeg would decode it as flat grey (issue 11).
    data = corpus.jpeg_claiming(7000, 7000, progressive=progressive)
    assert len(data) < 1000
    err = refusal(data, box=(1600, 1600))
    assert err.code == "corrupt_image"
    assert "7000x7000" in err.message and "damaged or truncated" in err.message
    with pytest.raises(ImageshelfError) as info:  # known from the header: refused before decoding
        inspect(data)
    assert info.value.code == "corrupt_image"


def test_metadata_does_not_count_as_jpeg_image_data():
    # 200 KB of comments before the frame is more than the 7000x7000 floor (~144 KB) but no pixels.
    data = corpus.jpeg_claiming(7000, 7000, padding=200_000)
    assert refusal(data).code == "corrupt_image"


def _flat(mode: str, size: tuple[int, int]) -> Image.Image:
    return Image.new(mode, size, 90 if mode == "L" else (90, 140, 200))


# Flat colour, optimised Huffman tables: 2 bits per 8x8 block (a 1-bit DC code and a 1-bit end of
# block), twice the 1-bit floor that _check_jpeg enforces. Sizes measured with Pillow 12's libjpeg-turbo.
@pytest.mark.parametrize(
    ("mode", "size", "params", "at_most"),
    [
        ("RGB", (1, 1), {}, 1000),
        ("L", (1, 1), {"progressive": True}, 1000),
        ("RGB", (4000, 3000), {}, 190_000),
        ("RGB", (4000, 3000), {"optimize": True}, 72_000),
        ("RGB", (4000, 3000), {"optimize": True, "progressive": True}, 72_000),
        ("RGB", (4000, 3000), {"optimize": True, "progressive": True, "subsampling": 0}, 143_000),
        ("L", (4000, 3000), {"optimize": True, "progressive": True}, 48_000),
    ],
    ids=["1x1", "1x1-grey-progressive", "flat-12MP", "flat-12MP-optimized", "flat-12MP-progressive",
         "flat-12MP-444", "flat-12MP-grey"],
)  # fmt: skip
def test_tiny_but_complete_jpegs_are_rendered(mode, size, params, at_most):
    data = save(_flat(mode, size), "JPEG", **params)
    assert len(data) <= at_most  # they really are that small (a few bits per 8x8 block)
    r = fit(data, (400, 400))
    assert (r.width, r.height) == fit_size(*size, (400, 400))
    assert close(
        decode(r).convert("RGB").getpixel((0, 0)), _flat(mode, (1, 1)).convert("RGB").getpixel((0, 0)), 4
    )


def test_fuzzed_inputs_never_escape_as_bare_exceptions():
    rng = random.Random(1234)
    seeds = [save(corpus.quadrants(), f) for f in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")]
    seeds.append(corpus.animation("GIF", [RED, GREEN], [50, 50]))
    for _ in range(240):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 12)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            r = fit(bytes(data), (50, 50))
        except ImageshelfError as err:
            assert err.code in ("corrupt_image", "not_an_image", "unsupported_format", "too_many_pixels",
                                "too_many_frames", "empty_file")  # fmt: skip
        else:
            assert r.data and 1 <= r.width <= 50


# --- memory --------------------------------------------------------------------------------------------


def _peak_rss_mb(tmp_path, make: str, box=(1600, 1600)) -> tuple[float, str]:
    """Peak RSS (MB) of a fresh process running fit() on the bytes that ``make`` (code) builds.

    The input is built in another process first, so building it does not count.
    """
    path = tmp_path / "input.bin"
    build = (
        f"from PIL import Image\nfrom tests.imaging_corpus import *\nopen({str(path)!r}, 'wb').write({make})"
    )
    subprocess.run([sys.executable, "-c", build], cwd=corpus.ROOT, check=True, timeout=240)
    code = textwrap.dedent(f"""
        from chalicelib import imaging
        from chalicelib.errors import ImageshelfError
        data = open({str(path)!r}, "rb").read()
        try:
            r = imaging.fit(data, {box})
            outcome = "ok %dx%d" % (r.width, r.height)
        except ImageshelfError as e:
            outcome = e.code
        # VmHWM is this process's own peak; ru_maxrss would include the (big) pytest parent's.
        hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
        print(int(hwm.split()[1]) / 1024, outcome)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                         cwd=corpus.ROOT, check=True)  # fmt: skip
    rss, outcome = out.stdout.split(maxsplit=1)
    return float(rss), outcome.strip()


def test_webp_header_bomb_is_refused_without_allocating_its_pixels(tmp_path):
    rss, outcome = _peak_rss_mb(tmp_path, "webp_header_bomb(9000, 9000)")
    assert outcome == "too_many_pixels"
    assert rss < 60, rss  # 9000x9000 RGBA alone would be 324 MB


def test_49mp_rgba_png_renders_within_256mb(tmp_path):
    rss, outcome = _peak_rss_mb(tmp_path, "save(Image.new('RGBA', (7000, 7000), (10, 200, 30, 128)), 'PNG')")
    assert outcome == "ok 1600x1600"
    assert rss < 256, rss


@pytest.mark.parametrize("fmt", ["WEBP", "PNG", "JPEG"])
def test_25mp_images_render_within_150mb(tmp_path, fmt):
    make = f"save(Image.linear_gradient('L').resize((5000, 5000)).convert('RGB'), {fmt!r})"
    rss, outcome = _peak_rss_mb(tmp_path, make)
    assert outcome == "ok 1600x1600"
    assert rss < 150, rss


def test_imaging_has_no_aws_imports():
    source = (corpus.ROOT / "chalicelib" / "imaging.py").read_text()
    for name in ("boto3", "botocore", "chalice"):
        assert f"import {name}" not in source and f"from {name}" not in source


def test_render_reports_where_the_time_goes():
    timings: dict[str, float] = {}
    render(save(corpus.quadrants((2000, 1000)), "JPEG"), [(400, 400), (1600, 1600)], timings=timings)
    assert set(timings) == {"decode", "resize", "encode"}
    assert all(ms > 0 for ms in timings.values())
    refused: dict[str, float] = {}
    with pytest.raises(ImageshelfError):
        render(b"not an image at all", [(400, 400)], timings=refused)
    assert set(refused) == {"decode"}


def _gif_with_stray_byte(frames: int) -> bytes:
    """A GIF with a stray 0x00 after its second frame: Pillow skips it and decodes on."""
    images = [Image.new("RGB", (32, 32), (n * 6 % 256, 255 - n * 6 % 256, 40)) for n in range(frames)]
    buffer = io.BytesIO()
    images[0].save(
        buffer, "GIF", save_all=True, append_images=images[1:], duration=50, loop=0, optimize=False
    )
    data = buffer.getvalue()
    second = data.index(b"\x2c", data.index(b"\x2c") + 1)  # the second image descriptor
    third = data.index(b"\x21\xf9", second)  # the graphic control extension before frame 3
    return data[:third] + b"\x00" + data[third:]


def test_stray_bytes_cannot_hide_gif_frames_from_the_limits():
    evil = _gif_with_stray_byte(40)
    assert Image.open(io.BytesIO(evil)).n_frames == 40  # what the decoder would do
    assert inspect(evil).frames == 40
    assert refusal(evil, Limits(max_frames=10)).code == "too_many_frames"
