"""The format registry against what really decodes: every row is true of the installed Pillow, and
every part of imageshelf (uploads, sniffing, storage, the gallery, the client) reads the same rows."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, features

from chalicelib import formats, imaging, storage
from chalicelib.config import Settings
from imageshelf_client import client as client_module
from tests.support import post_upload

# One small picture per format Pillow can write, to prove each uploadable row decodes end to end.
_SAVE_ARGS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 90}, "AVIF": {"quality": 90}}


# pi-heif only decodes: HEIC is a real iPhone photo (tests/data/README.md says where it is from).
HEIC = Path(__file__).parent / "data" / "iphone-arrow.heic"
_SIZE = {"HEIF": (3024, 4032)}


def _sample(name: str) -> bytes:
    if name == "HEIF":
        return HEIC.read_bytes()
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buffer, name, **_SAVE_ARGS.get(name, {}))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_every_row_is_true_of_the_installed_pillow(fmt: formats.Format) -> None:
    if fmt.codec in imaging._PLUGINS:  # a plugin outside Pillow, registered as imaging does
        imaging._register_plugin(fmt.codec)
    elif fmt.codec:
        assert features.check(fmt.codec), f"{fmt.name} needs Pillow's {fmt.codec} codec, which is missing"
    Image.init()
    assert fmt.name in Image.OPEN, f"Pillow cannot open {fmt.name}"
    if fmt.output:
        assert fmt.name in Image.SAVE, f"renditions are written as {fmt.name}, which Pillow cannot save"
    # Pillow's own MIME and extension tables agree wherever they know the format.
    if fmt.name in Image.MIME:
        assert Image.MIME[fmt.name] in (fmt.mime, *fmt.aliases)
    known = {ext.lstrip("."): name for ext, name in Image.registered_extensions().items()}
    assert known.get(fmt.extension) in (fmt.name, *fmt.pillow)
    assert fmt.extensions[0] == fmt.extension and len(set(fmt.extensions)) == len(fmt.extensions)


@pytest.mark.parametrize("fmt", formats.UPLOADS, ids=lambda f: f.name)
def test_every_uploadable_format_is_sniffed_and_decoded(fmt: formats.Format) -> None:
    data = _sample(fmt.name)
    assert formats.sniff(data) == (fmt, None)
    info, (out,) = imaging.render(data, [(24, 24)])
    size = _SIZE.get(fmt.name, (48, 32))
    assert (info.format, info.content_type, info.width, info.height) == (fmt.name, fmt.mime, *size)
    assert out.format in formats.OUTPUTS and (out.width, out.height) == imaging.fit_size(*size, (24, 24))


def test_renditions_are_written_in_the_formats_the_registry_outputs() -> None:
    assert {f.name for f in formats.OUTPUTS} == {"JPEG", "PNG", "WEBP", "AVIF"}
    photo = Image.effect_mandelbrot((640, 480), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95)
    _, (out,) = imaging.render(buffer.getvalue(), [(320, 320)], alternates=("WEBP", "AVIF"))
    assert [a.format.name for a in out.alternates] == ["WEBP", "AVIF"]
    for encoded in (out, *out.alternates):
        assert encoded.format in formats.OUTPUTS
        with Image.open(io.BytesIO(encoded.data)) as im:  # what the row says is what was written
            assert (im.format, im.size) == (encoded.format.name, (320, 240))


def test_heif_brands_are_heic_unless_they_list_avif() -> None:
    heic, avif = formats.BY_NAME["HEIF"], formats.BY_NAME["AVIF"]
    assert formats.sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64) == (heic, None)
    assert formats.sniff(b"\0\0\0\x18ftypmif1\0\0\0\0mif1heic" + b"\0" * 64) == (heic, None)
    assert formats.sniff(b"\0\0\0\x18ftypmif1\0\0\0\0mif1avif" + b"\0" * 64) == (avif, None)
    assert formats.for_upload("image/heic") is heic


def test_tables_are_unambiguous() -> None:
    names = [f.name for f in formats.FORMATS]
    mimes = [m for f in formats.FORMATS for m in (f.mime, *f.aliases)]
    extensions = [e for f in formats.FORMATS for e in f.extensions]
    for values in (names, mimes, extensions):
        assert len(values) == len(set(values))
    assert {"GIF", "PNG", "WEBP"} == formats.ANIMATED
    assert formats.by_pillow("MPO") is formats.BY_NAME["JPEG"]
    assert formats.labels() == "JPEG, PNG, GIF, WebP, TIFF, BMP, AVIF or HEIC"


@pytest.mark.parametrize(
    ("head", "refused"),
    [
        (b"%PDF-1.7\n", "PDF"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"8BPS\0\1", "PSD"),
    ],
)
def test_refused_formats_are_named(head: bytes, refused: str) -> None:
    assert formats.sniff(head + b"\0" * 64) == (None, refused)


def test_upload_allow_list_is_the_registry(client: Any) -> None:
    for fmt in formats.FORMATS:
        response = post_upload(client, filename=f"x.{fmt.extension}", content_type=fmt.mime.upper())
        assert response.status_code == (201 if fmt.upload else 415), fmt.name
    refused = post_upload(client, filename="x.svg", content_type="image/svg+xml")
    assert refused.status_code == 415
    assert ", ".join(formats.upload_types()) in json.loads(refused.body)["error"]["message"]


def test_storage_names_renditions_by_the_registry() -> None:
    for fmt in formats.OUTPUTS:
        key = storage.rendition_key("0" * storage.ID_LENGTH, "thumb", 4, 3, "0123456789", fmt.extension)
        (state,) = storage.image_state(
            "0" * storage.ID_LENGTH,
            [
                {"Key": key, "Size": 10},
                {"Key": storage.record_key(_ready("0" * storage.ID_LENGTH)), "Size": 10},
            ],
        ).renditions
        assert state.content_type == fmt.mime
    # A key with an extension that names no output format is not a rendition.
    stray = storage.rendition_key("0" * storage.ID_LENGTH, "thumb", 4, 3, "0123456789", "tif")
    assert storage.image_state("0" * storage.ID_LENGTH, [{"Key": stray, "Size": 1}]) is None


def _ready(image_id: str) -> storage.Record:
    return storage.Record(id=image_id, status="ready", filename="a.jpg", bytes=1, version="0123456789")


def test_the_client_sniffs_exactly_the_registrys_upload_types() -> None:
    """The client is a separate package (it cannot import the server), so its own table is checked
    here: it must name every uploadable type, and no other."""
    sniffed = {content_type for _, _, content_type in client_module._SIGNATURES}
    assert sniffed == set(formats.upload_types())
    assert {t: e.lstrip(".") for t, e in client_module._EXTENSIONS.items()} == {
        f.mime: f.extension for f in formats.UPLOADS
    }
    for fmt in formats.UPLOADS:
        assert client_module.sniff_content_type(_sample(fmt.name)) == fmt.mime


def test_the_gallery_gets_its_formats_from_the_registry() -> None:
    from chalicelib import gallery

    config = gallery.page_config({"images": [], "next_cursor": None}, Settings())
    assert set(config["contentTypes"]) == set(formats.upload_types())
    previewable = {m for f in formats.FORMATS if f.previewable for m in (f.mime, *f.aliases)}
    assert set(config["previewTypes"]) == previewable
