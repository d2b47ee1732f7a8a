"""The lightbox's render, Download menu and details panel in real headless Chromium (issue 10).

The lightbox shows the largest rendition at once, then swaps in ``render?preset=view-<N>``: the
smallest view preset covering the screen at its pixel ratio (never more than the photo warrants),
with ``format=auto``, which Chromium's ``Accept: image/avif,...`` turns into AVIF. Its Download
menu offers the largest rendition and converted copies (the format presets, ``Content-Disposition:
attachment``); its Info panel shows what ``GET /images/{id}/info`` says, never a place.

Runs on the shared local stack (``stack``): the photos are uploaded once for the module and found
by id. ``UPDATE_SCREENSHOTS=1`` copies the lightbox screenshots to ``docs/``.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, TiffImagePlugin
from playwright.sync_api import expect

from chalicelib.operations import VIEW_SIDES
from tests.support import Stack
from tests.test_browser import ARTIFACTS, PHONE, Watch, scene, shot, tag

pytestmark = pytest.mark.browser

# name: (viewport, device pixel ratio, what else the context is)
SCREENS: dict[str, tuple[dict[str, int], float, dict[str, Any]]] = {
    "laptop": ({"width": 1280, "height": 900}, 1, {}),
    "desktop-2x": ({"width": 1920, "height": 1080}, 2, {}),
    "phone-3x": (PHONE, 3, {"is_mobile": True, "has_touch": True}),
}
# name: (width, height) of the photos the lightbox shows; "small" is smaller than any screen's need.
SHAPES = {"landscape": (4800, 3200), "portrait": (2400, 3600), "small": (900, 600)}
DATA = Path(__file__).resolve().parent / "data"
LATITUDE, LONGITUDE = "51.50738", "0.12768"  # where the EXIF photo says it was taken: never shown


def exif_photo() -> bytes:
    """A JPEG with a camera's EXIF (make, model, lens, date, exposure) and a GPS position."""
    rational = TiffImagePlugin.IFDRational
    image = Image.open(io.BytesIO(scene(1600, 1000, seed=4)))
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "Canon EOS 5D Mark IV"  # Model
    sub = exif.get_ifd(0x8769)
    sub[0x829A] = rational(1, 160)  # ExposureTime
    sub[0x829D] = rational(8, 1)  # FNumber
    sub[0x8827] = 100  # ISO
    sub[0x920A] = rational(24, 1)  # FocalLength
    sub[0x9003] = "2024:06:01 14:30:05"  # DateTimeOriginal
    sub[0xA434] = "EF24-70mm f/2.8L II USM"  # LensModel
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (rational(51, 1), rational(30, 1), rational(2657, 100))
    gps[3], gps[4] = "W", (rational(0, 1), rational(7, 1), rational(3965, 100))
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=85)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(stack: Stack) -> dict[str, dict[str, Any]]:
    """The module's photos on the shared stack, by role: each its Image JSON."""
    suffix = tag()
    files = {
        role: (f"lightbox-{role}-{suffix}.jpg", scene(*size, seed=i))
        for i, (role, size) in enumerate(SHAPES.items())
    }
    files["exif"] = (f"IMG_{suffix}.JPG", exif_photo())
    files["plain"] = (f"plain-{suffix}.jpg", scene(1200, 800, seed=9))
    # Real cameras' files (tests/data/README.md): a Canon's JPEG, and a FLIR's TIFF with GPS.
    files["canon"] = (f"flower-{suffix}.jpg", (DATA / "canon-powershot-s40.jpg").read_bytes())
    files["flir"] = (f"thermal-{suffix}.tiff", (DATA / "flir-gps.tiff").read_bytes())

    def upload(file: tuple[str, bytes]) -> str:
        kind = "image/tiff" if file[0].endswith(".tiff") else "image/jpeg"
        return stack.upload(file[1], filename=file[0], content_type=kind)

    with ThreadPoolExecutor(max_workers=3) as pool:
        ids = dict(zip(files, pool.map(upload, files.values()), strict=True))
        shown = dict(zip(ids, pool.map(lambda i: stack.wait(i, timeout=60), ids.values()), strict=True))
    assert all(image["status"] == "ready" for image in shown.values()), shown
    return shown


class Responses:
    """Every response the page received: url, status and headers (read after the fact)."""

    def __init__(self, page: Any) -> None:
        self.seen: list[tuple[str, int, dict[str, str]]] = []
        page.on("response", lambda r: self.seen.append((r.url, r.status, r.headers)))

    def final(self, url: str) -> tuple[str, int, dict[str, str]]:
        """The response a request for ``url`` ended with, following its redirects."""
        for _ in range(5):
            found = [r for r in self.seen if r[0] == url]
            assert found, f"no response for {url}"
            _, status, headers = found[-1]
            if status not in (301, 302, 303, 307, 308):
                return found[-1]
            url = headers["location"]
        raise AssertionError(f"too many redirects from {url}")


@pytest.fixture
def screen(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Responses]]:
    """The gallery on one of SCREENS (parametrised indirectly); fails on any console error."""
    viewport, ratio, extra = SCREENS[request.param]
    context = browser.new_context(viewport=viewport, device_scale_factor=ratio, **extra)
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch = Watch(page)
    responses = Responses(page)
    page.goto(stack.url + "/")
    yield page, responses
    context.close()
    assert not watch.dialogs, watch.dialogs
    assert not watch.errors, f"the console had errors: {watch.errors}"


def open_lightbox(page: Any, image: dict[str, Any]) -> None:
    """Open the lightbox on ``image`` (from its tile, loading more pages if it is not shown yet)."""
    tile = page.locator(f'#grid > li.card[data-id="{image["id"]}"] a.tile')
    for _ in range(20):
        if tile.count():
            break
        page.locator("#load-more").click()
        page.wait_for_timeout(300)
    tile.click()
    expect(page.locator("#lightbox")).to_be_visible()
    expect(page.locator("#lightbox-title")).to_have_text(image["original"]["filename"])


def close_lightbox(page: Any) -> None:
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()


MEASURE = """() => {
  const img = document.getElementById("lightbox-image");
  const stage = document.getElementById("lightbox-stage");
  const style = getComputedStyle(stage);
  const rect = img.getBoundingClientRect();
  return {
    src: img.src, complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
    rect: {left: rect.left, top: rect.top, right: rect.right, bottom: rect.bottom,
           width: rect.width, height: rect.height},
    viewport: {width: innerWidth, height: innerHeight}, ratio: devicePixelRatio,
    visible: {width: document.documentElement.clientWidth, height: document.documentElement.clientHeight},
    stageHeight: stage.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom),
  };
}"""


LOADED = (
    "() => { const i = document.getElementById('lightbox-image'); return i.complete && i.naturalWidth > 0; }"
)


def expected_side(measured: dict[str, Any], width: int, height: int) -> int:
    """The view preset the lightbox must ask for: the smallest covering the viewport's width and
    the stage's height in device pixels, or the original's long side if less; else the largest."""
    need = max(measured["viewport"]["width"], measured["stageHeight"]) * measured["ratio"]
    target = min(need, max(width, height))
    return next((side for side in VIEW_SIDES if side >= target), VIEW_SIDES[-1])


@pytest.mark.parametrize("screen", list(SCREENS), indirect=True)
def test_the_lightbox_shows_a_render_that_fits_the_screen_sharply(
    screen: tuple[Any, Responses], photos: dict[str, dict[str, Any]], stack: Stack
) -> None:
    page, responses = screen
    config = json.loads(page.locator("#config").text_content())
    assert config["viewSides"] == list(VIEW_SIDES)  # from the server, not written in the script
    for role in SHAPES:
        image = photos[role]
        width, height = image["original"]["width"], image["original"]["height"]
        open_lightbox(page, image)
        img = page.locator("#lightbox-image")
        # The rendition at once, then the render swapped in once loaded.
        expect(img).to_have_attribute("src", re.compile(r"render\?preset=view-\d+$"), timeout=30_000)
        page.wait_for_function(LOADED)
        measured = page.evaluate(MEASURE)
        side = expected_side(measured, width, height)
        render = f"{stack.url}/images/{image['id']}/render?preset=view-{side}"
        assert measured["src"] == render, (role, measured)
        # format=auto: Chromium accepts AVIF, so the render is AVIF (WebP where AVIF is not an output).
        _, status, headers = responses.final(measured["src"])
        assert status == 200 and headers["content-type"] in ("image/avif", "image/webp"), (status, headers)
        # Whole inside the viewport (not under a scroll bar either), with the photo's shape.
        rect, viewport, visible = measured["rect"], measured["viewport"], measured["visible"]
        assert rect["left"] >= 0 and rect["top"] >= 0, (role, rect)
        assert rect["right"] <= visible["width"] and rect["bottom"] <= visible["height"], (
            role,
            rect,
            visible,
        )
        assert abs(rect["width"] / rect["height"] - width / height) < 0.01, (role, rect)
        # The render is the photo, never enlarged: as large as the preset allows.
        scale = min(side / width, side / height, 1)
        natural = (measured["naturalWidth"], measured["naturalHeight"])
        assert abs(natural[0] - width * scale) <= 1 and abs(natural[1] - height * scale) <= 1, (role, natural)
        # Sharp: a device pixel for every displayed one, unless the original itself is smaller.
        ratio = measured["ratio"]
        if max(width, height) >= max(rect["width"], rect["height"]) * ratio:
            assert natural[0] >= rect["width"] * ratio - 1 and natural[1] >= rect["height"] * ratio - 1, (
                role,
                natural,
                rect,
                ratio,
            )
        else:
            assert natural == (width, height), (role, natural)  # the original's own pixels, all of them
        # Neither too large: no smaller preset would have covered the need.
        smaller = [s for s in VIEW_SIDES if s < side]
        if smaller:
            need = max(viewport["width"], measured["stageHeight"]) * ratio
            assert smaller[-1] < min(need, max(width, height)), (role, side, need)
        close_lightbox(page)


def test_the_thumbnail_then_the_rendition_show_at_once_and_a_failed_render_changes_nothing(
    browser: Any, stack: Stack, photos: dict[str, dict[str, Any]]
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch = Watch(page)
    try:
        page.goto(stack.url + "/")
        image = photos["landscape"]
        largest = image["renditions"][-1]["url"]
        tile = page.locator(f'#grid > li.card[data-id="{image["id"]}"] a.tile')
        expect(tile).to_have_class(re.compile(r"\bis-loaded\b"))
        # The rendition held back: the lightbox shows the tile's thumbnail in its place meanwhile.
        held: list[Any] = []
        page.route(lambda url: url == largest, lambda route: held.append(route))
        page.route(re.compile(r"/render\?preset=view-"), lambda route: route.fulfill(status=503, body=""))
        open_lightbox(page, image)
        img = page.locator("#lightbox-image")
        assert img.get_attribute("src") == largest
        thumb = tile.locator("img").evaluate("(i) => i.currentSrc")
        expect(img).to_have_css("background-image", f'url("{thumb}")')
        box = img.bounding_box()
        assert box is not None and box["width"] > 600 and abs(box["width"] / box["height"] - 1.5) < 0.01, box
        for _ in range(100):  # the held request reaches the handler as Playwright's events are read
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the rendition was never asked for"
        for route in held:
            route.continue_()
        page.wait_for_function("() => document.getElementById('lightbox-image').naturalWidth === 1600")
        expect(img).to_have_css("background-image", "none")
        # The render failed (503): the rendition stays, and nothing is said.
        page.wait_for_timeout(500)
        assert img.get_attribute("src") == largest
        expect(page.locator("#lightbox-message")).to_have_text("")
    finally:
        context.close()
    unexpected = [e for e in watch.errors if "status of 503" not in e]
    assert not unexpected and not watch.dialogs, (watch.errors, watch.dialogs)


@pytest.fixture
def laptop(browser: Any, stack: Stack) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch = Watch(page)
    page.goto(stack.url + "/")
    yield page, watch
    context.close()
    assert not watch.dialogs, watch.dialogs
    assert not watch.errors, f"the console had errors: {watch.errors}"


def test_the_download_menu_yields_a_webp_and_works_from_the_keyboard(
    laptop: tuple[Any, Watch], photos: dict[str, dict[str, Any]]
) -> None:
    page, _ = laptop
    image = photos["plain"]
    open_lightbox(page, image)
    button = page.get_by_role("button", name="Download")
    menu = page.get_by_role("menu")
    expect(button).to_have_attribute("aria-haspopup", "menu")
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(menu).to_be_hidden()

    # The keyboard: Enter opens it on its first item, the arrows move, Escape closes only the menu.
    button.focus()
    page.keyboard.press("Enter")
    expect(menu).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    items = menu.get_by_role("menuitem")
    expect(items.first).to_be_focused()
    labels = [re.sub(r"\s+", " ", t).strip() for t in items.all_text_contents()]
    assert [label.split(" ")[0] for label in labels] == ["Largest", "JPEG", "PNG", "WebP", "AVIF"], labels
    assert labels[0].startswith("Largest size 1200 × 800"), labels  # what it is: not the original
    largest = image["renditions"][-1]
    assert items.first.get_attribute("href") == largest["url"]
    page.keyboard.press("ArrowDown")
    expect(items.nth(1)).to_be_focused()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # round to the last
    expect(items.last).to_be_focused()
    page.keyboard.press("ArrowRight")  # not the next photo while the menu is open
    expect(page.locator("#lightbox-title")).to_have_text(image["original"]["filename"])
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(button).to_be_focused()
    expect(page.locator("#lightbox")).to_be_visible()  # Escape closed the menu, not the lightbox
    page.keyboard.press("ArrowDown")  # opens it too
    expect(menu).to_be_visible()
    page.keyboard.press("Tab")  # leaving it closes it
    expect(menu).to_be_hidden()

    # A click outside closes it and does nothing else.
    button.click()
    expect(menu).to_be_visible()
    page.mouse.click(5, 5)
    expect(menu).to_be_hidden()
    expect(page.locator("#lightbox")).to_be_visible()

    # Download → WebP saves a WebP named after the photo.
    button.click()
    webp = page.get_by_role("menuitem", name=re.compile(r"^WebP\b"))
    assert webp.get_attribute("href") == f"images/{image['id']}/render?preset=webp"
    with page.expect_download(timeout=30_000) as caught:
        webp.click()
    download = caught.value
    data = download.path().read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", data[:16]
    assert download.suggested_filename.endswith(".webp"), download.suggested_filename
    assert download.suggested_filename == image["original"]["filename"].rsplit(".", 1)[0] + ".webp"
    expect(menu).to_be_hidden()  # a choice closes it
    close_lightbox(page)


def test_the_info_panel_shows_the_camera_and_never_a_place(
    laptop: tuple[Any, Watch], photos: dict[str, dict[str, Any]]
) -> None:
    page, _ = laptop
    image = photos["exif"]
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/info") else None)
    open_lightbox(page, image)
    toggle = page.get_by_role("button", name="Info")
    panel = page.locator("#lightbox-details")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(panel).to_be_hidden()
    assert asked == []  # fetched when the panel opens, not before
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(panel).to_be_visible()

    def fact(name: str) -> Any:
        return panel.locator(f'[data-fact="{name}"] dd')

    expect(fact("camera")).to_have_text("Canon EOS 5D Mark IV")  # not "Canon Canon EOS ..."
    expect(fact("lens")).to_have_text("EF24-70mm f/2.8L II USM")
    expect(fact("exposure")).to_have_text("1/160 s, f/8, ISO 100, 24 mm")
    expect(fact("dimensions")).to_have_text("1600 × 1000 px")
    expect(fact("format")).to_have_text("JPEG")
    expect(panel.locator('[data-fact="taken"] time')).to_have_attribute("datetime", "2024-06-01T14:30:05")
    expect(panel.locator('[data-fact="taken"] time')).to_contain_text("2024")
    expect(panel.locator('[data-fact="location"]')).to_be_visible()
    text = panel.text_content()
    for number in (LATITUDE, LONGITUDE, "51.5", "51°", "30'", "0.12", "39.65", "26.57"):
        assert number not in text, (number, text)
    assert not re.search(r"\d+\.\d{3,}", text), text  # no coordinate of any kind

    # The next photo has no EXIF: no camera rows, its own dimensions; the panel stays open.
    plain = photos["plain"]
    close_lightbox(page)
    open_lightbox(page, plain)
    expect(panel).to_be_visible()
    expect(fact("dimensions")).to_have_text("1200 × 800 px")
    expect(panel.locator('[data-fact="camera"]')).to_be_hidden()
    expect(panel.locator('[data-fact="exposure"]')).to_be_hidden()
    expect(panel.locator('[data-fact="location"]')).to_be_hidden()

    # One request per photo: back to the first, the answer is remembered.
    close_lightbox(page)
    open_lightbox(page, image)
    expect(fact("camera")).to_have_text("Canon EOS 5D Mark IV")
    assert sorted(set(asked)) == sorted(asked), asked
    assert len(asked) == 2, asked

    # The keyboard: I toggles it; the toggle is a button in the tab order.
    page.keyboard.press("i")
    expect(panel).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.focus()
    page.keyboard.press("Enter")
    expect(panel).to_be_visible()
    close_lightbox(page)


def test_the_info_panel_reads_real_cameras_and_never_shows_their_place(
    laptop: tuple[Any, Watch], photos: dict[str, dict[str, Any]]
) -> None:
    page, _ = laptop
    panel = page.locator("#lightbox-details")
    open_lightbox(page, photos["canon"])
    page.get_by_role("button", name="Info").click()
    expect(panel.locator('[data-fact="camera"] dd')).to_have_text("Canon PowerShot S40")
    expect(panel.locator('[data-fact="exposure"] dd')).to_have_text("1/500 s, f/4.9, 21.3 mm")  # no ISO
    expect(panel.locator('[data-fact="taken"] time')).to_have_attribute("datetime", "2003-12-14T12:01:44")
    expect(panel.locator('[data-fact="dimensions"] dd')).to_have_text("480 × 360 px")
    expect(panel.locator('[data-fact="lens"]')).to_be_hidden()
    expect(panel.locator('[data-fact="location"]')).to_be_hidden()
    close_lightbox(page)
    # The FLIR's GPS (35° 35' 59.995" N, 111° 39' 42.578" W) is only "recorded", never shown.
    open_lightbox(page, photos["flir"])
    expect(panel.locator('[data-fact="camera"] dd')).to_have_text("FLIR Duo Pro R")
    expect(panel.locator('[data-fact="format"] dd')).to_have_text("TIFF")
    expect(panel.locator('[data-fact="location"]')).to_be_visible()
    text = page.locator("#lightbox").text_content()
    for part in ("35°", "111", "59.99", "42.57", "35.6", "111.66"):
        assert part not in text, (part, text)
    close_lightbox(page)


def test_the_info_panel_says_why_it_has_no_details(
    laptop: tuple[Any, Watch], photos: dict[str, dict[str, Any]]
) -> None:
    page, watch = laptop
    answers = {
        photos["small"]["id"]: (409, "image_pending", "The details are not ready yet"),
        photos["portrait"]["id"]: (404, "not_found", "This photo no longer exists."),
        photos["landscape"]["id"]: (500, "internal_error", "The details couldn't be loaded"),
    }

    def refuse(route: Any) -> None:
        image_id = route.request.url.split("/images/")[1].split("/")[0]
        status, code, _ = answers[image_id]
        body = {"error": {"code": code, "message": "test"}}
        route.fulfill(status=status, content_type="application/json", body=json.dumps(body))

    for image_id in answers:
        page.route(f"**/images/{image_id}/info", refuse)
    status = page.locator("#lightbox-details-status")
    for role in ("small", "portrait", "landscape"):
        open_lightbox(page, photos[role])
        if page.locator("#lightbox-details").is_hidden():
            page.get_by_role("button", name="Info").click()
        expect(status).to_contain_text(answers[photos[role]["id"]][2])
        expect(page.locator("#lightbox-details [data-fact]:visible")).to_have_count(0)
        close_lightbox(page)
    # The browser logs each refused request itself; the page adds nothing of its own.
    refused = re.compile(r"Failed to load resource: the server responded with a status of (409|404|500)\b")
    assert len([e for e in watch.errors if refused.match(e)]) == 3, watch.errors
    watch.errors[:] = [e for e in watch.errors if not refused.match(e)]


def shot_for_docs(page: Any, name: str) -> None:
    """test-artifacts/, and docs/ (dithered, small) when ``UPDATE_SCREENSHOTS`` is set."""
    from tests.test_docs import save_for_docs

    shot(page, name)
    if os.environ.get("UPDATE_SCREENSHOTS"):
        save_for_docs(ARTIFACTS / name, ARTIFACTS.parent / "docs" / name)


def assert_inside(page: Any, viewport: dict[str, int], selectors: tuple[str, ...]) -> None:
    for selector in selectors:
        box = page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= viewport["width"] + 0.5, (selector, box)
        assert box["y"] + box["height"] <= viewport["height"] + 0.5, (selector, box)


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_screenshots_with_the_details_and_the_menu_open(
    browser: Any, stack: Stack, photos: dict[str, dict[str, Any]], device: str
) -> None:
    viewport, ratio, extra = SCREENS["laptop" if device == "desktop" else "phone-3x"]
    context = browser.new_context(viewport=viewport, device_scale_factor=min(ratio, 2), **extra)
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch = Watch(page)
    try:
        page.goto(stack.url + "/")
        open_lightbox(page, photos["exif"])
        expect(page.locator("#lightbox-image")).to_have_attribute("src", re.compile(r"render\?preset=view-"))
        page.get_by_role("button", name="Info").click()
        expect(page.locator('#lightbox-details [data-fact="camera"] dd')).to_have_text("Canon EOS 5D Mark IV")
        page.wait_for_function(LOADED)
        # The photo, the panel and the bar inside the screen; the panel beside or below the photo.
        assert_inside(page, viewport, ("#lightbox-image", "#lightbox-details", ".lightbox-bar"))
        image = page.locator("#lightbox-image").bounding_box()
        panel = page.locator("#lightbox-details").bounding_box()
        assert image is not None and panel is not None
        apart = (
            image["x"] + image["width"] <= panel["x"] + 0.5
            or image["y"] + image["height"] <= panel["y"] + 0.5
        )
        assert apart, (image, panel)  # the panel never covers the photo
        # The name keeps most of the bar's width: the buttons do not squeeze it.
        title = page.locator("#lightbox-title").bounding_box()
        assert title is not None and title["width"] >= viewport["width"] / 2, title
        if device == "phone":
            shot_for_docs(page, "lightbox-details-phone.png")
        page.get_by_role("button", name="Download").click()
        expect(page.get_by_role("menu")).to_be_visible()
        assert_inside(page, viewport, ("#download-menu",))
        shot_for_docs(page, f"lightbox-{'details' if device == 'desktop' else 'download'}-{device}.png")
    finally:
        context.close()
    assert not watch.errors and not watch.dialogs, (watch.errors, watch.dialogs)


def test_a_stage_that_signs_renders_still_serves_the_lightbox(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With RENDER_SIGNING_KEY only presets are served unsigned: the lightbox and the Download
    menu use nothing else, so they work there as anywhere."""
    signed = Stack(data_dir=tmp_path_factory.mktemp("signed") / "data", env={"RENDER_SIGNING_KEY": "k" * 32})
    signed.start()
    context = None
    try:
        image_id = signed.upload(scene(2000, 1400, seed=6), filename="signed.jpg")
        image = signed.wait(image_id, timeout=60)
        assert requests.get(f"{signed.url}/images/{image_id}/render?w=800", timeout=10).status_code == 403
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        watch = Watch(page)
        page.goto(signed.url + "/")
        open_lightbox(page, image)
        expect(page.locator("#lightbox-image")).to_have_attribute(
            "src", re.compile(r"render\?preset=view-\d+$")
        )
        page.wait_for_function(LOADED)
        for item in page.locator("#download-menu [data-preset]").all():
            href = item.get_attribute("href")
            answer = requests.get(f"{signed.url}/{href}", allow_redirects=False, timeout=30)
            assert answer.status_code == 302, (href, answer.status_code, answer.text)
        assert not watch.errors, watch.errors
    finally:
        if context is not None:
            context.close()
        signed.stop()


# --- what the page offers (no browser needed) ---------------------------------------------------


def test_the_page_offers_the_registrys_outputs_and_the_stages_view_presets() -> None:
    from chalicelib import formats, gallery
    from chalicelib.config import Settings
    from chalicelib.operations import default_presets

    empty: dict[str, Any] = {"images": [], "next_cursor": None}
    config = gallery.page_config(empty, Settings())
    assert config["viewSides"] == list(VIEW_SIDES)
    assert [d["preset"] for d in config["downloads"]] == [f.name.lower() for f in formats.OUTPUTS]
    assert {d["label"] for d in config["downloads"]} == {"JPEG", "PNG", "WebP", "AVIF"}
    assert config["formatLabels"]["WEBP"] == "WebP" and config["formatLabels"]["HEIF"] == "HEIC"
    html = gallery.render_page(empty, Settings())
    assert all(f'data-preset="{d["preset"]}"' in html for d in config["downloads"])
    # A stage whose presets lack one (RENDER_PRESETS may replace them) does not offer it.
    presets = {k: v for k, v in default_presets().items() if k not in ("avif", "view-640")}
    settings = Settings(render_presets=tuple(presets.items()))
    config = gallery.page_config(empty, settings)
    assert 640 not in config["viewSides"] and "avif" not in [d["preset"] for d in config["downloads"]]
    html = gallery.render_page(empty, settings)
    assert 'data-preset="webp"' in html and 'data-preset="avif"' not in html
