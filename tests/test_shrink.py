"""Shrink on load: the assumptions its tricks make about the libraries Pillow bundles.

chalicelib/shrink.py calls libwebp through ctypes with structs copied from its header, and
rewrites progressive JPEGs for libjpeg-turbo. A Pillow upgrade that changes any assumption below
must fail here rather than corrupt memory or pictures; each assertion says what to re-check.
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat, features

from chalicelib import shrink
from tests import imaging_corpus as corpus
from tests.imaging_corpus import save

LP64 = ctypes.sizeof(ctypes.c_void_p) == 8


def _photo(size: tuple[int, int]) -> Image.Image:
    """Smooth shapes plus grain: like a photo to the codecs, unlike flat test colours."""
    base = corpus.quadrants(size)
    gradient = Image.linear_gradient("L").resize(size).convert("RGB")
    return Image.blend(Image.blend(base, gradient, 0.4), Image.effect_noise(size, 40).convert("RGB"), 0.25)


def _diff(a: Image.Image, b: Image.Image) -> tuple[int, float]:
    """(largest, mean) absolute difference over all channels."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return max(hi for _, hi in diff.getextrema()), max(ImageStat.Stat(diff).mean)


def _mapped_libwebp(maps: str) -> set[str]:
    """Files named like libwebp (not libwebpdemux/libwebpmux) in a /proc/<pid>/maps listing."""
    paths = {
        line.split(maxsplit=5)[5].strip() for line in maps.splitlines() if len(line.split(maxsplit=5)) == 6
    }
    return {p for p in paths if re.match(r"libwebp(-[0-9a-f]+)?\.so", os.path.basename(p))}


# --- libwebp through ctypes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def libwebp() -> shrink.LibWebP:
    lib = shrink.libwebp()
    assert lib is not None, "the scaled WebP decode is off: Pillow's libwebp was not found or refused"
    return lib


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_libwebp_is_the_library_pillows_webp_extension_loaded(libwebp):
    # In a fresh process that never imports shrink: what Pillow's own _webp extension maps.
    code = "import PIL._webp; print(open('/proc/self/maps').read())"
    maps = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    pillows = _mapped_libwebp(maps)
    assert len(pillows) == 1, pillows
    assert {libwebp.path} == pillows, (libwebp.path, pillows)
    # And ctypes opened that very file, not a second copy: one libwebp is mapped here too.
    assert _mapped_libwebp(Path("/proc/self/maps").read_text()) == pillows
    assert "pillow.libs" in libwebp.path or "PIL" in libwebp.path  # the wheel's bundled copy


def test_libwebp_version_is_the_one_the_structs_were_checked_against(libwebp):
    # The structs in shrink.py are those of libwebp 1.6.0's src/webp/decode.h, whose
    # WEBP_DECODER_ABI_VERSION is 0x0209. A new libwebp: compare its decode.h, then update both.
    assert libwebp.version == 0x010600, f"libwebp {libwebp.version:#08x}: re-check decode.h"
    assert features.version("webp") == "1.6.0"
    assert shrink.WEBP_DECODER_ABI_VERSION == 0x0209


@pytest.mark.skipif(not LP64, reason="sizes are those of a 64-bit build")
def test_struct_layout_matches_decode_h():
    # sizeof/offsetof of decode.h (ABI 0x0209) on LP64, as a C compiler lays them out.
    assert ctypes.sizeof(shrink.WebPBitstreamFeatures) == 40  # 5 ints + uint32_t pad[5]
    assert ctypes.sizeof(shrink.WebPRGBABuffer) == 24
    assert ctypes.sizeof(shrink.WebPYUVABuffer) == 80
    assert ctypes.sizeof(shrink.WebPDecBuffer) == 120  # 4 ints, the union, pad[4], private_memory
    assert ctypes.sizeof(shrink.WebPDecoderOptions) == 76  # 14 ints + pad[5]
    assert ctypes.sizeof(shrink.WebPDecoderConfig) == 240
    config = shrink.WebPDecoderConfig
    assert (config.input.offset, config.output.offset, config.options.offset) == (0, 40, 160)
    assert shrink.WebPDecBuffer.u.offset == 16
    assert shrink.WebPDecoderOptions.use_scaling.offset == 28
    assert shrink.WebPDecoderOptions.scaled_height.offset == 36


def test_the_library_initialises_exactly_our_config(libwebp):
    # WebPInitDecoderConfig memsets sizeof(*config) of *its* struct: with a guard zone after ours,
    # a larger library struct would show as written guard bytes, a smaller one as unzeroed bytes.
    size = ctypes.sizeof(shrink.WebPDecoderConfig)
    raw = (ctypes.c_ubyte * (size + 64))(*([0xAA] * (size + 64)))
    config = shrink.WebPDecoderConfig.from_buffer(raw)
    assert libwebp.init_config(ctypes.byref(config), shrink.WEBP_DECODER_ABI_VERSION) == 1
    assert bytes(raw[size:]) == b"\xaa" * 64
    assert bytes(raw[:size]) == bytes(size)


def test_the_library_refuses_another_abi_major_version(libwebp):
    # Our guard against a future incompatible libwebp is the library's own ABI check.
    config = shrink.WebPDecoderConfig()
    assert libwebp.init_config(ctypes.byref(config), 0x0309) == 0
    assert libwebp.init_config(ctypes.byref(config), 0x0109) == 0


@pytest.mark.parametrize("alpha", [False, True], ids=["RGB", "RGBA"])
def test_scaled_webp_decode_gives_pillows_picture(libwebp, alpha):
    im = _photo((1200, 800))
    if alpha:
        im.putalpha(Image.linear_gradient("L").resize((1200, 800)))
    icc = b"not really a profile, carried as is"
    data = save(im, "WEBP", quality=90, icc_profile=icc)
    opened = Image.open(io.BytesIO(data))
    decoded, box = shrink.shrink_on_load(opened, data, "WEBP", (300.0, 200.0))
    assert decoded is not None
    assert decoded.mode == ("RGBA" if alpha else "RGB") and decoded.size == (300, 200)
    assert box == (0.0, 0.0, 300.0, 200.0)
    assert decoded.info.get("icc_profile") == icc
    # libwebp's rescaler averages areas, premultiplied where there is alpha (as imaging resamples).
    mode = "RGBa" if alpha else "RGB"
    reference = Image.open(io.BytesIO(data)).convert(mode).reduce(4)
    diff = ImageChops.difference(decoded.convert(mode), reference)
    largest, mean = max(hi for _, hi in diff.getextrema()), max(ImageStat.Stat(diff).mean)
    assert mean < 1.0 and largest <= 24, (largest, mean)


def test_webp_is_decoded_whole_when_no_shrink_is_needed_or_possible(monkeypatch):
    data = save(_photo((400, 300)), "WEBP")
    opened = Image.open(io.BytesIO(data))
    assert shrink.shrink_on_load(opened, data, "WEBP", (600.0, 450.0)) == (None, (0.0, 0.0, 400.0, 300.0))
    monkeypatch.setattr(shrink, "libwebp", lambda: None)
    assert shrink.shrink_on_load(opened, data, "WEBP", (100.0, 75.0)) == (None, (0.0, 0.0, 400.0, 300.0))


def test_damaged_webp_raises_for_the_caller_to_refuse(libwebp):
    data = save(_photo((800, 600)), "WEBP", quality=80)
    with pytest.raises(OSError, match="VP8 status"):
        libwebp.decode(data[: len(data) // 2], (200, 150), alpha=False)


# --- JPEG: draft() and the DC-only scan surgery ------------------------------------------------------


def test_pillow_bundles_libjpeg_turbo():
    # The DC-only path's tolerance was measured on libjpeg-turbo's block smoothing (docs/imaging.md).
    assert features.check_feature("libjpeg_turbo")


@pytest.mark.parametrize(
    ("size", "want", "scale"),
    [
        ((1600, 1200), (150, 112), 8),
        ((1601, 1203), (200, 150), 8),
        ((1600, 1200), (300, 225), 4),
        ((1600, 1200), (600, 450), 2),
        ((1600, 1200), (900, 675), 1),
        ((1600, 1200), (2400, 1800), 1),
    ],
)
def test_draft_reports_the_scale_we_expect(size, want, scale):
    data = save(_photo(size), "JPEG", quality=85)
    im = Image.open(io.BytesIO(data))
    drafted = im.draft(None, want)
    assert drafted is not None
    assert drafted[1] == (0, 0, size[0] / scale, size[1] / scale)  # the valid box, in scaled pixels
    assert im.decoderconfig == (scale, 0)
    expected = (-(-size[0] // scale), -(-size[1] // scale))
    assert im.size == expected
    im.load()
    assert im.size == expected  # libjpeg's DCT scaling gives exactly that size
    assert Image.open(io.BytesIO(data)).draft(None, want) == drafted
    assert im.draft(None, want) is None  # one draft per image: _dc_only drafts its own reopened copy


def test_pillow_marks_progressive_jpegs():
    progressive = Image.open(io.BytesIO(save(_photo((64, 64)), "JPEG", progressive=True)))
    baseline = Image.open(io.BytesIO(save(_photo((64, 64)), "JPEG")))
    assert progressive.info.get("progressive") and not baseline.info.get("progressive")


def test_baseline_jpeg_is_drafted_and_left_to_the_caller():
    data = save(_photo((1600, 1200)), "JPEG", quality=85)
    im = Image.open(io.BytesIO(data))
    decoded, box = shrink.shrink_on_load(im, data, "JPEG", (150.0, 112.5))
    assert decoded is None and box == (0.0, 0.0, 200.0, 150.0)
    assert im.decoderconfig == (8, 0) and im.size == (200, 150)


@pytest.mark.parametrize("subsampling", [2, 0], ids=["4:2:0", "4:4:4"])
def test_dc_only_reopen_matches_a_full_decode_at_one_eighth(subsampling):
    data = save(_photo((1600, 1200)), "JPEG", quality=90, progressive=True, subsampling=subsampling)
    im = Image.open(io.BytesIO(data))
    im.draft(None, (150, 112))
    reopened = shrink._dc_only(im, data, (150, 112))
    assert reopened is not None
    assert reopened.size == im.size == (200, 150)
    assert reopened.decoderconfig == im.decoderconfig == (8, 0)
    assert reopened.mode == im.mode
    assert len(reopened.fp.getvalue()) < 0.6 * len(data)  # the AC refinement scans were dropped

    decoded, box = shrink.shrink_on_load(Image.open(io.BytesIO(data)), data, "JPEG", (150.0, 112.5))
    assert decoded is not None and box == (0.0, 0.0, 200.0, 150.0)
    full = Image.open(io.BytesIO(data))
    full.draft(None, (150, 112))
    full.load()
    assert decoded.size == full.size and decoded.mode == full.mode
    largest, mean = _diff(decoded, full)
    assert largest <= 12 and mean < 1.5, (largest, mean)


def test_dc_only_applies_only_to_progressive_jpegs_at_one_eighth():
    baseline = save(_photo((1600, 1200)), "JPEG")
    progressive = save(_photo((1600, 1200)), "JPEG", progressive=True)
    for data, want, expected in ((baseline, (150, 112), None), (progressive, (300, 225), None)):
        im = Image.open(io.BytesIO(data))
        im.draft(None, want)
        assert shrink._dc_only(im, data, want) is expected


def test_a_failing_dc_only_decode_falls_back_to_the_full_scans(monkeypatch):
    data = save(_photo((1600, 1200)), "JPEG", progressive=True)
    cut = save(_photo((800, 600)), "JPEG")[:5000]  # decoding this raises (truncated)
    monkeypatch.setattr(shrink, "_dc_only", lambda *a: Image.open(io.BytesIO(cut)))
    im = Image.open(io.BytesIO(data))
    assert shrink.shrink_on_load(im, data, "JPEG", (150.0, 112.5)) == (None, (0.0, 0.0, 200.0, 150.0))
    assert im.decoderconfig == (8, 0)  # still drafted: the caller decodes it at 1/8


def test_other_formats_are_decoded_whole():
    data = save(_photo((400, 300)), "PNG")
    im = Image.open(io.BytesIO(data))
    assert shrink.shrink_on_load(im, data, "PNG", (60.0, 45.0)) == (None, (0.0, 0.0, 400.0, 300.0))


def test_imaging_uses_only_the_one_entry_point():
    source = (corpus.ROOT / "chalicelib" / "imaging.py").read_text()
    uses = set(re.findall(r"\bshrink\.(\w+)", source)) - {"py"}  # "shrink.py" in prose
    assert uses == {"shrink_on_load"}, uses
    for name in ("boto3", "botocore", "chalice"):
        text = (corpus.ROOT / "chalicelib" / "shrink.py").read_text()
        assert f"import {name}" not in text and f"from {name}" not in text
