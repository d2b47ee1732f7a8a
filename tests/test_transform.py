"""On-demand renders (chalicelib/transform.py): geometry, gravity, filters, formats, metadata, limits.

Every test looks at decoded pixels or sniffed bytes. The inputs are synthetic (made with Pillow):
they test the transforms, not what a camera writes (tests/test_identify.py reads real files).
"""

from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps, ImageStat

from chalicelib import formats, imaging, operations, transform
from chalicelib.errors import ImageshelfError
from chalicelib.imaging import Encoded, Limits
from tests import imaging_corpus as corpus
from tests.imaging_corpus import BLUE, GREEN, RED, YELLOW, save

WHITE = (255, 255, 255)
SAMPLE = Path(transform.__file__).with_name("sample.jpg")  # Adobe RGB (1998), as shot


def spec(query: str, **changes: object) -> operations.Spec:
    """A Spec parsed as a request would be; ``format`` may also be auto-avif/auto-webp."""
    return dataclasses.replace(operations.parse_query(query), **changes)  # type: ignore[arg-type]


def render(source: Image.Image | bytes, query: str, **changes: object) -> Encoded:
    data = source if isinstance(source, bytes) else save(source, "PNG")
    return transform.render(data, spec(query, **changes))


def pixels(out: Encoded) -> Image.Image:
    im = Image.open(io.BytesIO(out.data))
    im.load()
    return im


def sniffed(out: Encoded) -> str:
    fmt, _ = formats.sniff(out.data)
    assert fmt is not None
    return fmt.name


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 24) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=False))


def corners(im: Image.Image) -> dict[str, tuple[int, ...]]:
    im = im.convert("RGB")
    w, h = im.size
    dx, dy = w // 6, h // 6
    return {
        "top_left": im.getpixel((dx, dy)),
        "top_right": im.getpixel((w - 1 - dx, dy)),
        "bottom_left": im.getpixel((dx, h - 1 - dy)),
        "bottom_right": im.getpixel((w - 1 - dx, h - 1 - dy)),
    }


def assert_corners(im: Image.Image, expected: dict[str, tuple[int, int, int]]) -> None:
    got = corners(im)
    assert all(close(got[k], v) for k, v in expected.items()), (got, expected)


def stripes(size: tuple[int, int], colours: list[tuple[int, int, int]], vertical: bool = True) -> Image.Image:
    """Equal bands of colour: left to right (``vertical``) or top to bottom."""
    w, h = size
    im = Image.new("RGB", size)
    n = len(colours)
    for i, c in enumerate(colours):
        if vertical:
            im.paste(c, (w * i // n, 0, w * (i + 1) // n, h))
        else:
            im.paste(c, (0, h * i // n, w, h * (i + 1) // n))
    return im


def edge_energy(im: Image.Image) -> float:
    return ImageStat.Stat(im.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


def textured_half(size: tuple[int, int], textured: str) -> Image.Image:
    """Flat grey, except one half (``left``/``right``/``top``/``bottom``) of random noise."""
    w, h = size
    rng = random.Random(7)
    im = Image.new("L", size, 128)
    noise = Image.frombytes("L", size, bytes(rng.randrange(256) for _ in range(w * h)))
    box = {
        "left": (0, 0, w // 2, h),
        "right": (w // 2, 0, w, h),
        "top": (0, 0, w, h // 2),
        "bottom": (0, h // 2, w, h),
    }[textured]
    im.paste(noise.crop(box), box[:2])
    return im.convert("RGB")


def stddev(im: Image.Image) -> float:
    return ImageStat.Stat(im.convert("L")).stddev[0]


# --- colour filters -----------------------------------------------------------------------------


def test_negate_inverts_a_known_colour_and_keeps_alpha():
    out = pixels(render(Image.new("RGB", (40, 30), (200, 100, 50)), "format=png&filter=negate"))
    assert out.convert("RGB").getpixel((20, 15)) == (55, 155, 205)
    rgba = Image.new("RGBA", (40, 30), (200, 100, 50, 128))
    out = pixels(render(rgba, "format=png&filter=negate"))
    assert out.mode == "RGBA"
    assert close(out.getpixel((20, 15)), (55, 155, 205, 128), tol=2)


def test_sepia_of_a_grey_patch_is_warm():
    out = pixels(render(Image.new("RGB", (40, 30), (128, 128, 128)), "format=png&filter=sepia"))
    r, g, b = out.convert("RGB").getpixel((20, 15))
    assert r > g > b
    assert (r, g, b) == (173, 154, 120)  # the standard matrix: 1.351, 1.203, 0.937 times 128


def test_grayscale_makes_every_pixel_neutral():
    out = pixels(render(corpus.quadrants((120, 80)), "format=png&filter=grayscale"))
    rgb = out.convert("RGB")
    values = rgb.get_flattened_data()
    assert all(p[0] == p[1] == p[2] for p in values)  # type: ignore[index]
    assert len(set(values)) > 1  # the quadrants stay apart


def test_grayscale_jpeg_decodes_neutral():
    out = pixels(render(corpus.quadrants((120, 80)), "format=jpeg&filter=grayscale"))
    r, g, b = out.convert("RGB").getpixel((30, 20))
    assert r == g == b


# --- geometric filters --------------------------------------------------------------------------

QUADRANTS = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": YELLOW}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ("rotate:90", {"top_left": BLUE, "top_right": RED, "bottom_left": YELLOW, "bottom_right": GREEN}),
        ("rotate:180", {"top_left": YELLOW, "top_right": BLUE, "bottom_left": GREEN, "bottom_right": RED}),
        ("rotate:270", {"top_left": GREEN, "top_right": YELLOW, "bottom_left": RED, "bottom_right": BLUE}),
        ("flip:h", {"top_left": GREEN, "top_right": RED, "bottom_left": YELLOW, "bottom_right": BLUE}),
        ("flip:v", {"top_left": BLUE, "top_right": YELLOW, "bottom_left": RED, "bottom_right": GREEN}),
        # in the order given: turn then mirror is not mirror then turn
        (
            "rotate:90,flip:h",
            {"top_left": RED, "top_right": BLUE, "bottom_left": GREEN, "bottom_right": YELLOW},
        ),
        (
            "flip:h,rotate:90",
            {"top_left": YELLOW, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": RED},
        ),
    ],
)
def test_turns_and_flips_move_the_marked_corners(filters: str, expected: dict[str, tuple[int, int, int]]):
    out = render(corpus.quadrants((120, 80)), f"format=png&filter={filters}")
    turned = filters.count("rotate:90") + filters.count("rotate:270")
    assert (out.width, out.height) == ((80, 120) if turned else (120, 80))
    assert_corners(pixels(out), expected)


def test_the_box_applies_to_the_turned_picture():
    src = stripes((2000, 1000), [RED, GREEN])
    out = render(src, "w=800&filter=rotate:90")
    assert (out.width, out.height) == (800, 1600)
    assert pixels(out).size == (800, 1600)
    out = render(src, "h=400&filter=rotate:270,flip:v")
    assert (out.width, out.height) == (200, 400)
    # never enlarged, turned or not
    out = render(stripes((600, 300), [RED, GREEN]), "w=800&filter=rotate:90")
    assert (out.width, out.height) == (300, 600)


def test_blur_lowers_and_sharpen_raises_edge_energy():
    board = Image.new("L", (160, 160), 40)
    draw = ImageDraw.Draw(board)
    for y in range(0, 160, 16):
        for x in range((y // 16) % 2 * 16, 160, 32):
            draw.rectangle((x, y, x + 15, y + 15), fill=215)
    soft = board.filter(ImageFilter.GaussianBlur(1.5)).convert("RGB")
    plain = edge_energy(pixels(render(soft, "format=png")))
    blurred = edge_energy(pixels(render(soft, "format=png&filter=blur:3")))
    sharpened = edge_energy(pixels(render(soft, "format=png&filter=sharpen")))
    assert blurred < 0.6 * plain
    assert sharpened > 1.1 * plain


def test_blur_sigma_is_at_the_output_scale():
    # A 2-pixel line in the output (x 49-50), blurred with sigma 2 output pixels: it spreads about
    # 2 sigma either way (a sigma of 2 source pixels, half an output pixel, would barely touch it).
    im = Image.new("L", (400, 400), 0)
    ImageDraw.Draw(im).rectangle((196, 0, 203, 399), fill=255)  # 8 px wide: 2 px at 100 px
    out = pixels(render(im.convert("RGB"), "w=100&format=png&filter=blur:2")).convert("L")
    row = [out.getpixel((x, 50)) for x in range(100)]
    assert 60 < max(row) < 150
    assert row[45] >= 5 and row[54] >= 5  # 4.5 pixels from the centre
    assert row[38] < 2 and row[61] < 2  # 11.5 pixels away: nothing


def test_filters_apply_to_every_frame_of_an_animation():
    data = corpus.animation("GIF", [RED, GREEN, BLUE], [100, 100, 100])
    out = render(data, "filter=negate,rotate:90")
    assert out.animated and out.frames == 3
    assert (out.width, out.height) == (100, 200)
    im = pixels(out)
    seen = []
    for i in range(im.n_frames):  # type: ignore[attr-defined]
        im.seek(i)
        seen.append(im.convert("RGB").getpixel((50, 100)))
    expected = [(0, 255, 255), (255, 0, 255), (255, 255, 0)]
    assert all(close(a, b, tol=12) for a, b in zip(seen, expected, strict=True)), seen


# --- fit and gravity ----------------------------------------------------------------------------


def test_contain_never_enlarges():
    src = corpus.quadrants((300, 200))
    assert (render(src, "w=800&h=800").width, render(src, "w=800&h=800").height) == (300, 200)
    out = render(src, "w=150")
    assert (out.width, out.height) == (150, 100)
    out = render(src, "h=50")
    assert (out.width, out.height) == (75, 50)
    assert pixels(render(src, "format=png")).size == (300, 200)


def test_fill_gives_the_exact_box_stretched():
    src = stripes((400, 200), [RED, GREEN])
    out = render(src, "w=100&h=150&fit=fill&format=png")
    assert (out.width, out.height) == (100, 150)
    im = pixels(out).convert("RGB")
    assert im.size == (100, 150)
    assert close(im.getpixel((20, 75)), RED) and close(im.getpixel((80, 75)), GREEN)
    # a box larger than the source on a side is scaled down uniformly until it fits
    out = render(src, "w=800&h=100&fit=fill")
    assert (out.width, out.height) == (400, 50)


def test_cover_of_a_two_to_one_image_keeps_the_centre():
    src = stripes((400, 200), [RED, GREEN, GREEN, BLUE])  # red and blue quarters at the sides
    out = render(src, "w=100&h=100&fit=cover&format=png")
    assert (out.width, out.height) == (100, 100)
    im = pixels(out).convert("RGB")
    for x in (3, 50, 96):
        assert close(im.getpixel((x, 50)), GREEN), x


@pytest.mark.parametrize(
    ("size", "vertical", "gravity", "near", "far"),
    [
        ((400, 200), True, "west", RED, GREEN),
        ((400, 200), True, "east", BLUE, GREEN),
        ((200, 400), False, "north", RED, GREEN),
        ((200, 400), False, "south", BLUE, GREEN),
    ],
)
def test_cover_gravity_keeps_that_side(size, vertical, gravity, near, far):
    src = stripes(size, [RED, GREEN, GREEN, BLUE], vertical=vertical)
    out = render(src, f"w=100&h=100&fit=cover&gravity={gravity}&format=png")
    im = pixels(out).convert("RGB")
    edge = {"west": (10, 50), "east": (89, 50), "north": (50, 10), "south": (50, 89)}[gravity]
    middle = {"west": (89, 50), "east": (10, 50), "north": (50, 89), "south": (50, 10)}[gravity]
    assert close(im.getpixel(edge), near)
    assert close(im.getpixel(middle), far)


def test_cover_gravity_names_a_side_of_the_turned_output():
    # rotate:90 puts the source's left (red) on top: gravity=north keeps it.
    src = stripes((400, 200), [RED, GREEN, GREEN, BLUE])
    im = pixels(render(src, "w=100&h=100&fit=cover&gravity=north&filter=rotate:90&format=png")).convert("RGB")
    assert close(im.getpixel((50, 10)), RED)
    im = pixels(render(src, "w=100&h=100&fit=cover&gravity=north&filter=flip:v,rotate:270&format=png"))
    assert close(im.convert("RGB").getpixel((50, 10)), BLUE)


def test_cover_never_enlarges_a_small_source():
    src = stripes((200, 100), [RED, GREEN, GREEN, BLUE])
    out = render(src, "w=400&h=400&fit=cover&format=png")
    assert (out.width, out.height) == (100, 100)  # the box's aspect at the source's scale
    assert close(pixels(out).convert("RGB").getpixel((50, 50)), GREEN)
    out = render(src, "w=400&h=100&fit=cover")
    assert (out.width, out.height) == (200, 50)


@pytest.mark.parametrize(("size", "textured"), [((400, 200), "right"), ((400, 200), "left"),
                                                ((200, 400), "bottom"), ((200, 400), "top")])  # fmt: skip
def test_smart_gravity_keeps_the_textured_half(size, textured):
    out = pixels(render(textured_half(size, textured), "w=100&h=100&fit=cover&gravity=smart&format=png"))
    assert out.size == (100, 100)
    w, h = out.size
    near, far = (out.crop((0, 0, w // 4, h)), out.crop((3 * w // 4, 0, w, h)))
    if size[0] < size[1]:
        near, far = out.crop((0, 0, w, h // 4)), out.crop((0, 3 * h // 4, w, h))
    assert stddev(near) > 30 and stddev(far) > 30  # noise from edge to edge: the textured half


def test_smart_gravity_keeps_the_only_detail_in_the_middle():
    flat = Image.new("RGB", (400, 200), (90, 90, 90))
    flat.paste(GREEN, (150, 0, 250, 200))  # the only edges, both inside the centre window
    im = pixels(render(flat, "w=100&h=100&fit=cover&gravity=smart&format=png")).convert("RGB")
    assert close(im.getpixel((50, 50)), GREEN)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_comes_before_the_crop(orientation: int):
    data = corpus.oriented("JPEG", orientation, corpus.quadrants((240, 160)))
    out = render(data, "w=60&h=80&fit=cover&gravity=west&format=png")
    assert (out.width, out.height) == (60, 80)
    im = pixels(out).convert("RGB")
    assert close(im.getpixel((30, 15)), RED) and close(im.getpixel((30, 65)), BLUE), orientation


def test_exif_orientation_6_is_applied_and_no_exif_leaves():
    data = corpus.oriented("JPEG", 6)
    out = render(data, "w=400")
    assert (out.width, out.height) == (120, 80)
    im = pixels(out)
    assert_corners(im, QUADRANTS)
    assert not im.getexif()


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_crop_of_a_large_jpeg_decoded_at_reduced_scale_matches_the_slow_way(orientation: int):
    """Shrink on load (1/4 scale here) plus a cover crop through an orientation, against a full
    decode, turn, crop and one Lanczos resize."""
    rng = random.Random(3)
    canvas = Image.new("RGB", (3000, 2000), (30, 60, 90))
    draw = ImageDraw.Draw(canvas)
    for _ in range(300):
        x, y = rng.randrange(3000), rng.randrange(2000)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x, y, x + rng.randrange(40, 300), y + rng.randrange(40, 300)), fill=colour)
    data = corpus.oriented("JPEG", orientation, canvas)
    out = pixels(render(data, "w=300&h=300&fit=cover&gravity=east&format=png")).convert("RGB")
    full = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = full.size
    reference = full.crop((w - h, 0, w, h)).resize((300, 300), Image.Resampling.LANCZOS)
    diff = ImageStat.Stat(Image.frombytes("L", (300, 300), bytes(
        abs(a - b) for a, b in zip(out.convert("L").tobytes(), reference.convert("L").tobytes(), strict=True)
    ))).mean[0]  # fmt: skip
    assert diff < 4, diff


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"), [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("avif", "AVIF")]
)
def test_each_explicit_format_gives_that_format(name: str, expected: str):
    out = render(corpus.quadrants((300, 200)), f"w=150&format={name}")
    assert sniffed(out) == expected == out.format.name
    assert pixels(out).size == (out.width, out.height) == (150, 100)
    assert not out.animated and out.frames == 1


def test_auto_formats_for_an_opaque_still():
    src = corpus.quadrants((300, 200))
    assert sniffed(render(src, "w=100")) == "JPEG"
    assert sniffed(render(src, "w=100&format=auto")) == "JPEG"
    assert sniffed(render(src, "w=100", format="auto-webp")) == "WEBP"
    assert sniffed(render(src, "w=100", format="auto-avif")) == "AVIF"


def test_auto_formats_keep_transparency():
    src = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    src.paste((0, 0, 0, 0), (100, 0, 200, 100))
    out = render(src, "format=auto")
    assert sniffed(out) in ("PNG", "WEBP")
    for o in (out, render(src, "w=100", format="auto-webp"), render(src, "w=100", format="auto-avif")):
        im = pixels(o).convert("RGBA")
        assert im.getpixel((im.width // 4, 10))[3] > 240
        assert im.getpixel((3 * im.width // 4, 10))[3] < 15


def test_jpeg_of_a_transparent_image_is_flattened_on_white():
    src = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    src.paste((0, 0, 255, 0), (100, 0, 200, 100))
    im = pixels(render(src, "format=jpeg")).convert("RGB")
    assert close(im.getpixel((50, 50)), RED) and close(im.getpixel((150, 50)), WHITE, tol=4)


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif"])
def test_quality_changes_the_bytes(name: str):
    rng = random.Random(5)
    src = Image.frombytes("RGB", (160, 120), bytes(rng.randrange(256) for _ in range(160 * 120 * 3)))
    low = render(src, f"format={name}&q=20")
    high = render(src, f"format={name}&q=90")
    assert len(low.data) < len(high.data)
    default = render(src, f"format={name}")
    assert len(low.data) < len(default.data) < len(high.data)


@pytest.mark.parametrize("source", ["GIF", "WEBP"])
@pytest.mark.parametrize("fmt", [None, "auto", "auto-webp", "auto-avif", "webp"])
def test_an_animation_stays_an_animated_webp(source, fmt):
    data = corpus.animation(source, [RED, GREEN, BLUE], [100, 200, 300])
    out = transform.render(data, dataclasses.replace(operations.Spec(width=100), format=fmt))
    assert sniffed(out) == "WEBP" and out.animated and out.frames == 3
    im = pixels(out)
    assert im.n_frames == 3  # type: ignore[attr-defined]
    assert im.size == (100, 50)


@pytest.mark.parametrize("source", ["GIF", "WEBP", "PNG"])
@pytest.mark.parametrize(("name", "expected"), [("jpeg", "JPEG"), ("png", "PNG"), ("avif", "AVIF")])
def test_other_formats_of_an_animation_give_its_first_frame(source, name, expected):
    data = corpus.animation(source, [RED, GREEN, BLUE], [100, 200, 300])
    out = render(data, f"w=100&format={name}")
    assert sniffed(out) == expected and not out.animated and out.frames == 1
    im = pixels(out)
    assert getattr(im, "n_frames", 1) == 1
    assert close(im.convert("RGB").getpixel((50, 25)), RED)


def test_cover_of_an_animation_crops_every_frame():
    frames = [stripes((400, 200), [c, GREEN, GREEN, BLUE]) for c in (RED, YELLOW)]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[100, 100], loop=0)
    out = render(data, "w=100&h=100&fit=cover&gravity=west")
    assert out.animated and (out.width, out.height) == (100, 100)
    im = pixels(out)
    im.seek(1)
    assert close(im.convert("RGB").getpixel((10, 50)), YELLOW)


# --- metadata and limits ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "avif", "auto"])
def test_no_metadata_leaves(name: str):
    data, secrets = corpus.gps_photo()
    out = render(data, f"w=200&format={name}")
    for secret in secrets:
        assert secret not in out.data, secret
    im = pixels(out)
    assert not im.getexif()
    assert "icc_profile" not in im.info and "xmp" not in im.info


def test_adobe_rgb_is_converted_to_srgb():
    sample = SAMPLE.read_bytes()
    out = render(sample, "w=400&format=png")
    im = pixels(out)
    assert "icc_profile" not in im.info
    # what imaging's renditions make of the same file, within rounding
    rendition = Image.open(io.BytesIO(imaging.fit(sample, (400, 400)).data)).convert("RGB")
    a, b = ImageStat.Stat(im.convert("RGB")).mean, ImageStat.Stat(rendition).mean
    assert all(abs(x - y) < 2 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("data", "limits", "code"),
    [
        (save(corpus.quadrants((300, 200)), "PNG"), Limits(max_pixels=100), "too_many_pixels"),
        (save(corpus.quadrants((300, 200)), "PNG")[:200], Limits(), "corrupt_image"),
        (b"just some text, not an image at all" * 4, Limits(), "not_an_image"),
        (b"", Limits(), "empty_file"),
        (corpus.jpeg_claiming(7000, 7000), Limits(), "corrupt_image"),
    ],
)
def test_bad_files_raise_stable_codes(data: bytes, limits: Limits, code: str):
    with pytest.raises(ImageshelfError) as info:
        transform.render(data, spec("w=100&fit=cover&h=100&gravity=smart&filter=blur:2"), limits)
    assert info.value.code == code


def test_download_changes_no_pixel():
    src = corpus.quadrants((300, 200))
    assert render(src, "w=100&format=png").data == render(src, "w=100&format=png&dl=1").data


def test_a_large_jpeg_is_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch):
    decoded: list[tuple[int, int]] = []
    real = imaging._decode

    def spy(*args, **kwargs):
        image, box = real(*args, **kwargs)
        decoded.append(image.size)
        return image, box

    monkeypatch.setattr(imaging, "_decode", spy)
    data = save(corpus.quadrants((4000, 3000)), "JPEG", quality=90)
    out = render(data, "w=400&h=400&fit=cover&gravity=east&format=webp")
    assert (out.width, out.height) == (400, 400)
    assert decoded == [(1000, 750)]  # 1/4 scale: the 3000x3000 kept square needs 600 px (1.5x headroom)
    assert close(pixels(out).convert("RGB").getpixel((300, 100)), GREEN)


@pytest.mark.parametrize("work_bytes", [imaging.WORK_BYTES, 1])
def test_a_crop_is_the_same_whether_cut_out_first_or_read_from_the_whole(monkeypatch, work_bytes):
    """Large crops are not copied out of the decode (memory): the result stays the same."""
    monkeypatch.setattr(imaging, "WORK_BYTES", work_bytes)
    src = stripes((900, 300), [RED, GREEN, GREEN, BLUE, BLUE, YELLOW])
    im = pixels(render(src, "w=100&h=100&fit=cover&gravity=east&format=png")).convert("RGB")
    assert close(im.getpixel((10, 50)), BLUE) and close(im.getpixel((90, 50)), YELLOW)
    im = pixels(render(src, "w=100&h=100&fit=cover&gravity=center&format=png")).convert("RGB")
    assert close(im.getpixel((10, 50)), GREEN) and close(im.getpixel((90, 50)), BLUE)
