"""Renders and details from the client and the command: ``Client.render_url`` writes what the
server reads (its normal form, and the signature it checks), then ``render``, ``info`` and
``imageshelf render``/``imageshelf info`` end to end against a local stack that signs renders."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from chalicelib import operations
from chalicelib.errors import ImageshelfError as ServerError
from imageshelf_client import Client, ImageInfo, ImageshelfError, Rendered, render_signature
from imageshelf_client.cli import main
from tests.support import Stack, jpeg

ROOT = Path(__file__).resolve().parent.parent
KEY = "render-key-for-tests"
API = "http://api.test"
ID = "0123456789abcdefghjk"
PRESETS = operations.default_presets()


def server_spec(url: str, key: str = KEY) -> operations.Spec:
    """What the server makes of a render URL: the image or sample it names, its parameters
    authorised with ``key`` exactly as the route does (``forbidden`` if the signature is wrong)."""
    parts = urlsplit(url)
    path = parts.path.split("/")
    subject = "sample" if path[1] == "sample" else path[2]
    params = parse_qs(parts.query, keep_blank_values=True)
    return operations.request_spec(params, subject, PRESETS, key)


def query_of(url: str) -> str:
    return urlsplit(url).query


# --- render_url: the normal form and the signature -----------------------------------------------


def test_render_url_writes_the_parameters_in_the_servers_normal_form() -> None:
    shelf = Client(API, signing_key="")
    url = shelf.render_url(
        ID, filters=["sepia", "blur:02.50"], quality=80, format="webp", fit="cover", height=600, width=800
    )
    assert url == f"{API}/images/{ID}/render?w=800&h=600&fit=cover&format=webp&q=80&filter=sepia,blur:2.5"
    assert server_spec(url, key="").canonical == query_of(url)  # nothing left for the server to change
    # Defaults are left out, so every way of asking for the same render is the same URL.
    same = shelf.render_url(ID, width=800, fit="contain", gravity="center", download=False, filters=())
    assert same == shelf.render_url(ID, width=800) == f"{API}/images/{ID}/render?w=800"
    # Filters as one comma-separated string, spaces and all, are the same list.
    assert shelf.render_url(ID, filters=" negate , rotate:90") == shelf.render_url(
        ID, filters=["negate", "rotate:90"]
    )
    assert shelf.render_url("sample", download=True) == f"{API}/sample/render?dl=1"
    assert shelf.render_url("sample") == f"{API}/sample/render"
    assert shelf.render_url("a/b", width=5) == f"{API}/images/a%2Fb/render?w=5"
    assert shelf.render_url(ID, preset="square") == f"{API}/images/{ID}/render?preset=square"


sides = st.none() | st.integers(1, operations.MAX_SIDE)
single_filters = st.sampled_from(["grayscale", "sepia", "negate", "sharpen", "rotate:90", "rotate:180",
                                  "rotate:270", "flip:h", "flip:v"])  # fmt: skip
blurs = st.builds(
    lambda whole, fraction: f"blur:{whole}{fraction}",
    st.sampled_from(["0", "00", "1", "01", "7", "12", "49", "50"]),
    st.sampled_from(["", ".5", ".05", ".50", ".25", ".0"]),
).filter(lambda f: 0 < float(f[5:]) <= operations.MAX_BLUR)
parameter_sets = st.fixed_dictionaries(
    {},
    optional={
        "width": st.integers(1, operations.MAX_SIDE),
        "height": st.integers(1, operations.MAX_SIDE),
        "fit": st.sampled_from(operations.FITS),
        "gravity": st.sampled_from(operations.GRAVITIES),
        "format": st.sampled_from(operations.FORMATS),
        "quality": st.integers(1, 100),
        "filters": st.lists(single_filters | blurs, max_size=operations.MAX_FILTERS)
        | st.lists(single_filters, min_size=1, max_size=4).map(", ".join),
        "download": st.booleans(),
    },
).filter(
    lambda p: (
        (p.get("fit", "contain") == "contain" or ("width" in p and "height" in p))
        and not (p.get("format") == "png" and "quality" in p)
    )
)
subjects = st.sampled_from(["sample", ID, "ybqvqv0176g13t2gkef2"])


@settings(max_examples=400, deadline=None, database=None)
@given(parameters=parameter_sets, subject=subjects, key=st.text(min_size=1, max_size=40))
def test_the_server_accepts_every_signature_the_client_makes(
    parameters: dict[str, Any], subject: str, key: str
) -> None:
    url = Client(API, signing_key=key).render_url(subject, **parameters)
    spec = server_spec(url, key)  # raises forbidden if the client signed anything else
    signature = parse_qs(query_of(url))["sig"][0]
    assert signature == operations.sign(spec, key, subject)
    unsigned = Client(API, signing_key="").render_url(subject, **parameters)
    assert url.startswith(unsigned) and server_spec(unsigned, key="") == spec
    # The signature is for these parameters, this image and this key only.
    with pytest.raises(ServerError) as refused:
        server_spec(url.replace(f"/{subject}/", "/ybqvpd1q3m0s0c9w7r2k/"), key)
    assert refused.value.code == "forbidden"
    with pytest.raises(ServerError) as refused:
        server_spec(url, key + "x")
    assert refused.value.code == "forbidden"


def test_a_tampered_url_is_refused_by_the_server() -> None:
    url = Client(API, signing_key=KEY).render_url(ID, width=400, format="webp")
    assert server_spec(url).width == 400
    for tampered in (url.replace("w=400", "w=4000"), url.replace("format=webp", "format=avif")):
        with pytest.raises(ServerError) as refused:
            server_spec(tampered)
        assert refused.value.code == "forbidden"


def test_presets_are_never_signed_and_stand_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESHELF_RENDER_KEY", KEY)
    shelf = Client(API)  # the key from the environment, as the command has it
    assert shelf.signing_key == KEY and "sig=" in shelf.render_url(ID, width=10)
    url = shelf.render_url(ID, preset="square")
    assert url == f"{API}/images/{ID}/render?preset=square"
    assert server_spec(url) == PRESETS["square"]
    with pytest.raises(ImageshelfError) as refused:
        shelf.render_url(ID, preset="square", width=100)
    assert refused.value.code == "invalid_request" and "preset" in refused.value.message


def test_the_signature_is_the_documented_hmac() -> None:
    """docs/api.md tells how to compute ``sig`` by hand; the client's is that one."""
    import base64
    import hashlib
    import hmac

    mac = hmac.new(KEY.encode(), b"sample/w=800&format=webp&filter=sepia", hashlib.sha256).digest()
    by_hand = base64.urlsafe_b64encode(mac).decode()[:32]
    assert render_signature(KEY, "sample", "w=800&format=webp&filter=sepia") == by_hand
    url = Client(API, signing_key=KEY).render_url("sample", width=800, format="webp", filters="sepia")
    assert url.endswith(f"&sig={by_hand}")


def test_details_from_a_newer_server_keep_what_the_client_knows() -> None:
    data = {
        "id": "sample", "filename": "sample.jpg", "format": "JPEG", "content_type": "image/jpeg",
        "width": 1600, "height": 858, "frames": 1, "animated": False, "mode": "RGB", "bit_depth": 8,
        "has_alpha": False, "color_profile": "Adobe RGB (1998)", "orientation": 1,
        "camera": {"make": "Canon", "model": "EOS", "lens": None, "taken_at": None, "exposure_time": "1/100",
                   "f_number": 4.0, "iso": 100, "focal_length": 25.0, "shutter_count": 3},
        "has_location": False, "dominant_color": "#8f8c8a", "histogram": [1, 2],
    }  # fmt: skip
    info = ImageInfo.from_json(data)
    assert info.camera is not None and info.camera.exposure_time == "1/100" and info.camera.iso == 100
    assert info.to_json() == data
    basics = ImageInfo.from_json({"id": ID, "filename": "a.jpg", "width": 4, "height": 3, "camera": None})
    assert basics.camera is None and basics.mode is None and basics.width == 4


def test_a_render_is_bytes_with_its_type() -> None:
    rendered = Rendered(b"RIFF\0\0\0\0WEBPVP8 ", "image/webp", "http://s3.test/x")
    assert isinstance(rendered, bytes) and rendered[8:12] == b"WEBP"
    assert (rendered.content_type, rendered.extension) == ("image/webp", ".webp")
    for twin in (copy.copy(rendered), pickle.loads(pickle.dumps(rendered))):
        assert twin == rendered and twin.content_type == "image/webp" and twin.url == rendered.url
    assert Rendered(b"", "application/octet-stream", "").extension == ""


# --- against a stack that signs renders -------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A local stack with a render signing key (the shared one signs nothing)."""
    running = Stack(
        data_dir=tmp_path_factory.mktemp("signed-stack") / "data", env={"RENDER_SIGNING_KEY": KEY}
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def photo(signed: Stack) -> str:
    image_id = signed.upload(jpeg(1200, 800), "beach.jpg")
    assert signed.wait(image_id, timeout=60)["status"] == "ready"
    return image_id


@pytest.fixture
def shelf(signed: Stack) -> Iterator[Client]:
    with Client(signed.url, signing_key=KEY, backoff=0.1) as client:
        yield client


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.e2e
def test_render_returns_webp_bytes_of_an_uploaded_image(shelf: Client, photo: str) -> None:
    rendered = shelf.render(photo, width=600, format="webp", filters=["grayscale"])
    assert rendered.content_type == "image/webp" and rendered[:4] == b"RIFF" and rendered[8:12] == b"WEBP"
    image = opened(rendered)
    assert image.format == "WEBP" and image.size == (600, 400)
    r, g, b = image.convert("RGB").getpixel((500, 300))  # the red part of the photo, greyed
    assert r == g == b
    cover = opened(shelf.render(photo, width=200, height=200, fit="cover", format="png"))
    assert cover.format == "PNG" and cover.size == (200, 200)


@pytest.mark.e2e
def test_render_of_the_sample(shelf: Client, signed: Stack) -> None:
    rendered = shelf.render("sample", width=320, format="webp", filters="sepia")
    image = opened(rendered)
    assert image.format == "WEBP" and image.width == 320
    assert rendered.url.startswith(signed.s3_url)  # fetched from storage, not through the API
    # format=auto follows Accept: AVIF where it is named, else what renditions use (JPEG).
    assert shelf.render("sample", width=64, format="auto", accept="image/avif,image/webp,*/*").extension == (
        ".avif"
    )
    assert shelf.render("sample", width=64, format="auto").content_type == "image/jpeg"


@pytest.mark.e2e
def test_presets_need_no_key(signed: Stack) -> None:
    with Client(signed.url, signing_key="") as anyone:
        thumb = opened(anyone.render("sample", preset="thumb"))
    assert thumb.format == "JPEG" and max(thumb.size) == 400


@pytest.mark.e2e
def test_info_of_the_sample(shelf: Client) -> None:
    info = shelf.info("sample")
    assert (info.id, info.filename, info.format, info.content_type) == (
        "sample",
        "sample.jpg",
        "JPEG",
        "image/jpeg",
    )
    assert (info.width, info.height, info.frames, info.animated) == (1600, 858, 1, False)
    assert (info.mode, info.bit_depth, info.has_alpha, info.orientation) == ("RGB", 8, False, 1)
    assert info.color_profile == "Adobe RGB (1998)" and info.has_location is False
    assert info.dominant_color is not None and len(info.dominant_color) == 7
    assert info.camera is not None
    assert (info.camera.make, info.camera.model) == ("Canon", "Canon EOS Rebel T6")
    assert (info.camera.exposure_time, info.camera.f_number, info.camera.iso) == ("1/100", 4.0, 100)
    assert info.camera.taken_at == "2018-10-27T13:27:23" and info.camera.lens


@pytest.mark.e2e
def test_info_of_an_uploaded_image(shelf: Client, photo: str) -> None:
    info = shelf.info(photo)
    assert (info.id, info.filename, info.width, info.height, info.format) == (
        photo,
        "beach.jpg",
        1200,
        800,
        "JPEG",
    )
    assert info.camera is None and info.has_location is False  # made with Pillow: no EXIF


@pytest.mark.e2e
def test_errors_come_with_the_servers_codes(shelf: Client, signed: Stack, photo: str) -> None:
    def refusal(call: Any, *args: Any, **kwargs: Any) -> ImageshelfError:
        with pytest.raises(ImageshelfError) as raised:
            call(*args, **kwargs)
        return raised.value

    for call in (shelf.render, shelf.info):
        error = refusal(call, ID)
        assert (error.code, error.status) == ("not_found", 404)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"width": 0}, "'w'"),
        ({"quality": 101}, "'q'"),
        ({"fit": "crop"}, "'fit'"),
        ({"filters": "blur:99"}, "blur"),
        ({"fit": "cover", "width": 10}, "'h'"),
    ]
    for parameters, named in bad:
        error = refusal(shelf.render, photo, **parameters)
        assert (error.code, error.status) == ("invalid_request", 400) and named in error.message, error
    with Client(signed.url, signing_key="") as unsigned:
        error = refusal(unsigned.render, photo, width=100)
    assert (error.code, error.status) == ("forbidden", 403) and "sig" in error.message
    with Client(signed.url, signing_key="another key") as wrong:
        error = refusal(wrong.render, "sample", width=100)
    assert (error.code, error.status) == ("forbidden", 403)


# --- the command -------------------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.e2e
def test_cli_render_writes_a_file_of_the_asked_format(signed: Stack, photo: str, tmp_path: Path) -> None:
    path = tmp_path / "out.webp"
    code, out, err = run(
        "render", photo, "--width", "800", "--format", "webp", "--filter", "sepia", "--filter", "rotate:90",
        "-o", str(path), "--url", signed.url, "--render-key", KEY,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {path}: image/webp, ")
    image = opened(path.read_bytes())
    assert image.format == "WEBP" and image.size == (800, 1200)  # turned upright, then at most 800 wide


@pytest.mark.e2e
def test_cli_render_names_the_file_after_the_id_and_type(
    signed: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGESHELF_RENDER_KEY", KEY)
    code, out, _ = run("--url", signed.url, "render", "sample", "--width", "100", "--format", "png", "--json")
    assert code == 0
    written = json.loads(out)
    assert written["path"] == "sample.png" and written["content_type"] == "image/png"
    assert opened((tmp_path / "sample.png").read_bytes()).size == (100, 54)
    code, _, _ = run("--url", signed.url, "render", "sample", "--preset", "square")
    assert code == 0 and opened((tmp_path / "sample.jpg").read_bytes()).size == (400, 400)


@pytest.mark.e2e
def test_cli_render_to_stdout_only_when_it_is_not_a_terminal(signed: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "imageshelf_client", "render", "sample", "--width", "64", "--format", "png",
         "-o", "-"],
        cwd=ROOT, env={**os.environ, "IMAGESHELF_URL": signed.url, "IMAGESHELF_RENDER_KEY": KEY},
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert opened(done.stdout).format == "PNG" and b"wrote stdout: image/png" in done.stderr

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out, err = Terminal(), io.StringIO()
    code = main(["render", "sample", "-o", "-", "--url", signed.url], stdout=out, stderr=err)
    assert code == 1 and out.getvalue() == ""
    assert "Not writing image bytes to a terminal" in err.getvalue() and "-o FILE" in err.getvalue()


@pytest.mark.e2e
def test_cli_print_url_is_a_signed_url_the_server_takes(signed: Stack) -> None:
    code, out, _ = run(
        "render", "sample", "--width", "90", "--print-url", "--url", signed.url, "--render-key", KEY
    )
    url = out.strip()
    assert code == 0 and url.startswith(f"{signed.url}/sample/render?w=90&sig=")
    answer = requests.get(url, allow_redirects=False, timeout=30)
    assert answer.status_code == 302 and answer.headers["Location"].startswith(signed.s3_url)


@pytest.mark.e2e
def test_cli_info_shows_the_camera_and_dimensions(signed: Stack, photo: str) -> None:
    code, out, _ = run("info", "sample", "--url", signed.url)
    assert code == 0
    lines = dict(line.split(":", 1) for line in out.splitlines())
    shown = {name: value.strip() for name, value in lines.items()}
    assert shown["size"] == "1600x858" and shown["format"] == "JPEG (image/jpeg)"
    assert shown["camera"] == "Canon EOS Rebel T6" and shown["lens"].startswith("EF-S18-55mm")
    assert shown["exposure"] == "1/100 s, f/4, ISO 100, 25 mm" and shown["taken"] == "2018-10-27T13:27:23"
    assert shown["location"] == "no" and shown["profile"] == "Adobe RGB (1998)"
    code, out, _ = run("info", photo, "--json", "--url", signed.url)
    assert code == 0 and json.loads(out)["width"] == 1200 and json.loads(out)["camera"] is None


@pytest.mark.e2e
def test_cli_errors_exit_1_with_the_message(signed: Stack, photo: str) -> None:
    code, out, err = run("info", ID, "--url", signed.url)
    assert (code, out) == (1, "") and f"error: No image has the id '{ID}'" in err and "(not_found)" in err
    code, _, err = run("render", photo, "--width", "0", "--url", signed.url, "--render-key", KEY)
    assert code == 1 and "'w'" in err and "(invalid_request)" in err
    code, _, err = run("render", photo, "--width", "10", "--url", signed.url)
    assert code == 1 and "(forbidden)" in err and "--render-key or set IMAGESHELF_RENDER_KEY" in err
    code, out, _ = run("render", photo, "--quality", "0", "--json", "--url", signed.url, "--render-key", KEY)
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid_request"
    code, _, err = run("render", photo, "--width", "10", "-o", "/nonexistent/x.jpg", "--url", signed.url,
                       "--render-key", KEY)  # fmt: skip
    assert code == 1 and "Could not write /nonexistent/x.jpg" in err


@pytest.mark.e2e
def test_answers_the_fuzzer_cannot_reach_match_the_document(signed: Stack, photo: str) -> None:
    """openapi.yaml describes what the fuzzed stack never answers: refused signatures, an image
    that failed, the redirect of ``format=auto`` with its ``Vary``, an upload's details."""
    import schemathesis

    document = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
    render, info = document["/images/{image_id}/render"]["GET"], document["/images/{image_id}/info"]["GET"]
    sample = document["/sample/render"]["GET"]
    broken = signed.upload(b"GIF89a but not really", "broken.gif", "image/gif")
    assert signed.wait(broken)["status"] == "failed"

    def get(url: str, **headers: str) -> requests.Response:
        return requests.get(url, headers=headers, allow_redirects=False, timeout=30)

    shelf = Client(signed.url, signing_key=KEY)
    answer = get(shelf.render_url(photo, width=300, format="auto"), Accept="image/webp,*/*")
    assert answer.status_code == 302 and "Accept" in answer.headers["Vary"]
    render.validate_response(answer)
    answer = get(f"{signed.url}/images/{photo}/render?w=300")
    assert answer.status_code == 403
    render.validate_response(answer)
    answer = get(f"{signed.url}/sample/render?w=300&sig=AAAA")
    assert answer.status_code == 403
    sample.validate_response(answer)
    answer = get(shelf.render_url(broken, width=300))
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "image_failed"
    render.validate_response(answer)
    for image_id in (photo, broken):
        answer = get(f"{signed.url}/images/{image_id}/info")
        assert answer.status_code == (200 if image_id == photo else 409)
        info.validate_response(answer)
