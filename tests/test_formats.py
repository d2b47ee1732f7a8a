"""The format registry against what really decodes: every row is true of the installed Pillow, and
every part of imageshelf (uploads, sniffing, storage, the gallery, the client) reads the same rows."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image, features

from chalicelib import formats, imaging, storage
from chalicelib.config import Settings
from imageshelf_client import client as client_module
from tests.support import post_upload

# One small picture per format Pillow can write, to prove each uploadable row decodes end to end.
_SAVE_ARGS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 90}, "AVIF": {"quality": 90}}


def _sample(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buffer, name, **_SAVE_ARGS.get(name, {}))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_every_row_is_true_of_the_installed_pillow(fmt: formats.Format) -> None:
    if fmt.codec:
        assert features.check(fmt.codec), f"{fmt.name} needs Pillow's {fmt.codec} codec, which is missing"
    Image.init()
    assert fmt.name in Image.OPEN, f"Pillow cannot open {fmt.name}"
    if fmt.output:
        assert fmt.name in Image.SAVE, f"renditions are written as {fmt.name}, which Pillow cannot save"
    # Pillow's own MIME and extension tables agree wherever they know the format.
    if fmt.name in Image.MIME:
        assert Image.MIME[fmt.name] == fmt.mime
    known = {ext.lstrip("."): name for ext, name in Image.registered_extensions().items()}
    assert known.get(fmt.extension) in (fmt.name, *fmt.pillow)
    assert fmt.extensions[0] == fmt.extension and len(set(fmt.extensions)) == len(fmt.extensions)


@pytest.mark.parametrize("fmt", formats.UPLOADS, ids=lambda f: f.name)
def test_every_uploadable_format_is_sniffed_and_decoded(fmt: formats.Format) -> None:
    data = _sample(fmt.name)
    assert formats.sniff(data) == (fmt, None)
    info, (out,) = imaging.render(data, [(24, 24)])
    assert (info.format, info.content_type, info.width, info.height) == (fmt.name, fmt.mime, 48, 32)
    assert out.format in formats.OUTPUTS and (out.width, out.height) == (24, 16)


def test_tables_are_unambiguous() -> None:
    names = [f.name for f in formats.FORMATS]
    mimes = [m for f in formats.FORMATS for m in (f.mime, *f.aliases)]
    extensions = [e for f in formats.FORMATS for e in f.extensions]
    for values in (names, mimes, extensions):
        assert len(values) == len(set(values))
    assert {"GIF", "PNG", "WEBP"} == formats.ANIMATED
    assert formats.by_pillow("MPO") is formats.BY_NAME["JPEG"]
    assert formats.labels() == "JPEG, PNG, GIF, WebP, TIFF, BMP or AVIF"


@pytest.mark.parametrize(
    ("head", "refused"),
    [
        (b"%PDF-1.7\n", "PDF"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
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
