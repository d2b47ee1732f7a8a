"""The gallery in real headless Chromium (Debian's, through Playwright) against the local stack.

Every test shares one stack with the other e2e tests, so none assumes an empty gallery: each
uploads what it needs and finds its own images by name or id. Screenshots go to
``test-artifacts/``; the desktop and phone ones are also copied to ``docs/`` for the README.
"""

from __future__ import annotations

import io
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import expect

from tests.support import Stack, jpeg

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
NASTY = "<img src=x onerror=alert(1)>.jpg"

# Records what the page does, for assertions about things that happen between polls: every value
# a progress bar takes and every status a card goes through.
RECORDER = """
window.__progress = {};
window.__statuses = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === "attributes" && r.target.tagName === "PROGRESS") {
      const name = r.target.getAttribute("aria-label");
      (window.__progress[name] = window.__progress[name] || []).push(Number(r.target.value));
    }
    const cards = r.type === "childList" ? Array.from(r.addedNodes) : [r.target];
    for (const card of cards) {
      if (card.classList && card.classList.contains("card")) {
        const name = card.querySelector(".name");
        window.__statuses.push([name ? name.textContent : "", card.dataset.status, performance.now()]);
      }
    }
  }
}).observe(document, {
  subtree: true, childList: true, attributes: true, attributeFilter: ["value", "data-status"],
});
"""


# --- pictures -----------------------------------------------------------------------------

PALETTES = [  # sky top, sky bottom, sun, nearest hills
    ((250, 190, 120), (236, 110, 110), (255, 236, 190), (70, 40, 80)),
    ((120, 190, 240), (210, 235, 250), (255, 255, 235), (40, 90, 70)),
    ((30, 40, 90), (230, 120, 90), (255, 210, 140), (25, 25, 45)),
    ((170, 220, 210), (250, 240, 210), (255, 250, 220), (60, 110, 100)),
    ((90, 70, 160), (240, 150, 170), (255, 225, 200), (45, 35, 80)),
    ((250, 215, 150), (250, 240, 220), (255, 255, 240), (150, 90, 60)),
]


def scene(width: int, height: int, seed: int) -> bytes:
    """A landscape-ish JPEG (sky, sun, layered hills), so screenshots look like a photo gallery."""
    rng = random.Random(seed)
    top, bottom, sun, hills = PALETTES[seed % len(PALETTES)]
    size = (width, height)
    ramp = Image.linear_gradient("L").resize(size)
    image = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), ramp)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.06, 0.12) * min(size)
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.5) * height
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=sun)
    layers = 4
    for layer in range(layers):
        mix = (layer + 1) / layers  # far hills fade into the sky
        colour = tuple(int(b + (h - b) * mix) for b, h in zip(bottom, hills, strict=True))
        base = height * (0.5 + 0.12 * layer)
        points = [(0, height)]
        for step in range(13):
            points.append((width * step / 12, base - rng.uniform(0, 0.16) * height))
        points.append((width, height))
        draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82)
    return buffer.getvalue()


def tag() -> str:
    """A short unique suffix, so a test finds its own images in the shared gallery."""
    return f"{time.time_ns() % 10**9:09d}"


# --- fixtures -----------------------------------------------------------------------------


class Watch:
    """A page's JavaScript errors and dialogs; a test fails if the page had any it did not expect."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_page(
    browser: Any, stack: Stack, viewport: dict[str, int] = DESKTOP, **context: Any
) -> tuple[Any, Watch]:
    ctx = browser.new_context(viewport=viewport, **context)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    page.add_init_script(RECORDER)
    watch = Watch(page)
    page.goto(stack.url + "/")
    return page, watch


@pytest.fixture
def desktop(browser: Any, stack: Stack) -> Iterator[tuple[Any, Watch]]:
    page, watch = open_page(browser, stack)
    yield page, watch
    page.context.close()
    assert not watch.dialogs, f"the page opened dialogs: {watch.dialogs}"
    assert not [e for e in watch.errors if "net::ERR" not in e and "Failed to load" not in e], watch.errors


def card(page: Any, name: str) -> Any:
    """The card whose caption is exactly ``name``."""
    return page.locator("#grid > li.card").filter(has=page.locator(".name", has_text=name))


def wait_ready(page: Any, name: str, timeout: float = 15_000) -> Any:
    found = card(page, name)
    found.and_(page.locator('[data-status="ready"]')).wait_for(timeout=timeout)
    return found


def shot(page: Any, name: str) -> None:
    """A screenshot in test-artifacts/ (the docs' own screenshots are tests/test_docs.py's)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), animations="disabled")


def upload_many(stack: Stack, files: list[tuple[str, bytes]]) -> list[str]:
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda f: stack.upload(f[1], filename=f[0]), files))
    for image_id in ids:
        stack.wait(image_id, timeout=30)
    return ids


# --- uploads ------------------------------------------------------------------------------


def test_several_files_upload_with_progress_then_thumbnails_without_reload(
    desktop: Any, tmp_path: Path
) -> None:
    page, _ = desktop
    suffix = tag()
    paths = []
    for i in range(3):
        path = tmp_path / f"meadow-{i}-{suffix}.jpg"
        path.write_bytes(scene(1200, 800, seed=i))
        paths.append(path)
    page.set_input_files("#file-input", [str(p) for p in paths])

    for path in paths:
        found = wait_ready(page, path.name)
        img = found.locator("img")
        assert img.get_attribute("loading") == "lazy"
        assert (img.get_attribute("width"), img.get_attribute("height")) == ("400", "267")
        assert " 400w" in img.get_attribute("srcset") and " 1200w" in img.get_attribute("srcset")
        assert img.get_attribute("alt") == path.name
        assert found.locator(".info").text_content() == "1200 × 800"
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())

    progress = page.evaluate("window.__progress")
    statuses = page.evaluate("window.__statuses")
    for path in paths:
        values = progress[f"Upload of {path.name}"]
        assert values[-1] == 100 and values == sorted(values), values
        seen = [(status, at) for name, status, at in statuses if name == path.name]
        order = [status for status, _ in seen]
        assert order.index("uploading") < order.index("processing") < order.index("ready"), order
        # The thumbnail follows the end of the upload quickly: polled every 250 ms, not every few seconds.
        processing_at = next(at for status, at in seen if status == "processing")
        ready_at = next(at for status, at in seen if status == "ready")
        assert ready_at - processing_at < 3000, f"ready {ready_at - processing_at:.0f} ms after upload"
    assert page.locator("#announcer").text_content()  # milestones were announced


def test_drag_and_drop_uploads(desktop: Any) -> None:
    page, _ = desktop
    name = f"dropped-{tag()}.jpg"
    data = list(scene(900, 900, seed=7))
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
            return transfer;
        }""",
        [name, data],
    )
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    assert page.locator("#drop-zone").is_visible()
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    assert page.locator("#drop-zone").is_hidden()
    assert wait_ready(page, name).locator(".info").text_content() == "900 × 900"


def grid_names(page: Any, names: list[str]) -> list[str]:
    shown = page.eval_on_selector_all("#grid > li.card .name", "nodes => nodes.map(n => n.textContent)")
    return [name for name in shown if name in names]


def test_photos_picked_together_keep_the_order_they_were_picked_in(desktop: Any, tmp_path: Path) -> None:
    page, _ = desktop
    suffix = tag()
    # Neither alphabetical nor by size: only the pick order explains the grid's order.
    names = [f"{word}-{suffix}.jpg" for word in ("kiwi", "apple", "mango", "fig", "banana")]
    paths = []
    for i, name in enumerate(names):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(scene(900 - 100 * (i % 3), 600, seed=i))
    page.set_input_files("#file-input", [str(p) for p in paths])
    assert grid_names(page, names) == names  # the upload cards, at once
    for name in names:
        wait_ready(page, name)
    assert grid_names(page, names) == names  # ready, without a reload
    ids = [card(page, name).get_attribute("data-id") for name in names]
    assert ids == sorted(ids), "the first picked has the newest id (ids sort newest first)"

    page.reload()
    for name in names:
        wait_ready(page, name)
    assert grid_names(page, names) == names  # the server's order, by id, is the same


def test_refused_files_say_why_and_the_others_carry_on(desktop: Any, tmp_path: Path) -> None:
    page, _ = desktop
    suffix = tag()
    good = tmp_path / f"good-{suffix}.jpg"
    good.write_bytes(jpeg(600, 400))
    text = tmp_path / f"notes-{suffix}.txt"
    text.write_text("not a photo")
    huge = tmp_path / f"huge-{suffix}.jpg"
    with huge.open("wb") as handle:  # a sparse file just over the 20 MB limit
        handle.truncate(20 * 1024 * 1024 + 1)
    # Named .jpg, so the browser calls it image/jpeg and the client-side check lets it through:
    # the server finds out from the bytes.
    fake = tmp_path / f"fake-{suffix}.jpg"
    fake.write_text("this is plain text pretending to be a photo")
    page.set_input_files("#file-input", [str(p) for p in (good, text, huge, fake)])

    refused = card(page, text.name)
    expect(refused).to_have_attribute("data-status", "refused")
    expect(refused.locator(".tile-reason")).to_have_text(
        "This file isn't a photo. Choose a JPEG, PNG, GIF, WebP, TIFF, BMP, AVIF or HEIC image."
    )
    too_big = card(page, huge.name)
    expect(too_big.locator(".tile-reason")).to_have_text("This file is larger than the 20 MB limit.")
    expect(page.locator("#announcer")).to_contain_text("was not uploaded")

    wait_ready(page, good.name)
    failed = card(page, fake.name).and_(page.locator('[data-status="failed"]'))
    failed.wait_for()
    assert failed.locator(".tile-state").text_content() == "Couldn't process"
    assert failed.locator(".tile-reason").text_content().startswith("This file isn't a photo.")

    # The failure is stored: a fresh page renders it from the server the same way.
    page.reload()
    assert card(page, fake.name).locator(".tile-reason").text_content().startswith("This file isn't a photo.")
    assert card(page, text.name).count() == 0  # refused files were never stored

    refused_again = tmp_path / f"again-{suffix}.txt"
    refused_again.write_text("x")
    page.set_input_files("#file-input", [str(refused_again)])
    card(page, refused_again.name).get_by_role("button", name=f"Dismiss {refused_again.name}").click()
    assert card(page, refused_again.name).count() == 0


def test_a_filename_with_markup_is_shown_as_text(desktop: Any) -> None:
    page, watch = desktop
    page.set_input_files("#file-input", [{"name": NASTY, "mimeType": "image/jpeg", "buffer": jpeg(300, 200)}])
    found = wait_ready(page, NASTY)
    assert found.locator(".name").text_content() == NASTY
    assert page.locator('img[src="x"]').count() == 0

    page.reload()  # the server-rendered card, then the lightbox
    found = wait_ready(page, NASTY)
    assert found.locator(".name").text_content() == NASTY
    assert found.locator("img").get_attribute("alt") == NASTY
    found.locator("a.tile").click()
    assert page.locator("#lightbox-title").text_content() == NASTY
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    assert page.locator('img[src="x"]').count() == 0
    assert watch.dialogs == []


# --- failures: the uploader's and the admin's business ---------------------------------------


def refreshed(page: Any) -> None:
    """Run the periodic refresh now, and wait for its answer."""
    with page.expect_response(lambda r: "/images?limit=" in r.url and "cursor" not in r.url):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_timeout(100)  # the answer is merged into the grid


def test_a_failure_shows_to_its_uploader_and_the_admin_only(
    browser: Any, desktop: Any, stack: Stack, tmp_path: Path
) -> None:
    page, _ = desktop
    fake = tmp_path / f"broken-{tag()}.jpg"
    fake.write_text("plain text pretending to be a photo")
    page.set_input_files("#file-input", [str(fake)])
    failed = card(page, fake.name).and_(page.locator('[data-status="failed"]'))
    failed.wait_for()
    expect(failed.locator(".tile-reason")).to_have_text(re.compile(r"^This file isn't a photo\."))
    image_id = failed.get_attribute("data-id")
    assert image_id
    page.reload()  # this browser uploaded it: still shown, with its reason
    failed.wait_for()
    expect(failed.get_by_role("button", name=f"Dismiss {fake.name}")).to_be_visible()
    shot(page, "failure-uploader.png")

    other, watch = open_page(browser, stack)  # someone else's browser
    try:
        assert image_id in other.locator("#config").text_content()  # listed by the API...
        expect(card(other, fake.name)).to_have_count(0)  # ...but not in the public grid
        refreshed(other)
        expect(card(other, fake.name)).to_have_count(0)  # nor after the periodic refresh
        expect(other.locator('#grid > li[data-status="failed"]')).to_have_count(0)

        # The admin sees every failure, with its reason and a delete button (no dismissing).
        other.goto("about:blank")
        other.goto(f"{stack.url}/#token={stack.admin_token}")
        seen = card(other, fake.name)
        expect(seen).to_have_attribute("data-status", "failed")
        expect(seen.locator(".tile-reason")).to_have_text(re.compile(r"^This file isn't a photo\."))
        expect(seen.get_by_role("button", name=f"Dismiss {fake.name}")).to_be_hidden()
        other.get_by_role("button", name="Leave admin").click()
        expect(seen).to_have_count(0)  # the public view again
        other.get_by_role("button", name="Admin").click()
        other.get_by_role("textbox", name="Token").fill(stack.admin_token)
        other.get_by_role("button", name="Use token").click()
        delete = seen.get_by_role("button", name=f"Delete {fake.name}")
        delete.click()
        delete.click()  # the second click confirms
        seen.wait_for(state="detached")
        assert requests.get(f"{stack.url}/images/{image_id}", timeout=10).status_code == 404
        assert not watch.errors and not watch.dialogs
    finally:
        other.context.close()
    refreshed(page)  # deleted elsewhere: the uploader's page lets it go too
    expect(card(page, fake.name)).to_have_count(0)


def test_the_uploader_dismisses_a_failure_for_good(desktop: Any, tmp_path: Path, stack: Stack) -> None:
    page, _ = desktop
    fake = tmp_path / f"dismiss-me-{tag()}.jpg"
    fake.write_text("not a photo either")
    page.set_input_files("#file-input", [str(fake)])
    failed = card(page, fake.name).and_(page.locator('[data-status="failed"]'))
    failed.wait_for()
    image_id = failed.get_attribute("data-id")
    failed.get_by_role("button", name=f"Dismiss {fake.name}").click()
    expect(card(page, fake.name)).to_have_count(0)
    expect(page.locator("#announcer")).to_have_text(f"{fake.name} was dismissed.")
    page.reload()
    refreshed(page)
    expect(card(page, fake.name)).to_have_count(0)  # remembered
    # Dismissing hides it from this browser; only the admin deletes.
    assert requests.get(f"{stack.url}/images/{image_id}", timeout=10).json()["status"] == "failed"


def test_a_page_of_hidden_failures_does_not_stop_the_scrolling(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    total = len(requests.get(f"{stack.url}/images?limit=30", timeout=10).json()["images"])
    if total < 30:
        suffix = tag()
        upload_many(
            stack, [(f"filler-{i:02d}-{suffix}.jpg", scene(160, 120, seed=i)) for i in range(30 - total)]
        )
    asked: list[str] = []

    def first_page_all_failed(route: Any) -> None:
        # The first "more" page answers as if every image on it had failed, and points at itself:
        # the script must go on to the next page by itself, as the user sees nothing new.
        body = route.fetch().json()
        asked.append(route.request.url)
        if len(asked) == 1:
            for image in body["images"]:
                image.update(status="failed", renditions=[], error={"code": "corrupt_image", "message": "m"})
            body["next_cursor"] = route.request.url.split("cursor=", 1)[1].split("&", 1)[0]
        route.fulfill(json=body)

    page.route("**/images?limit=24&cursor=*", first_page_all_failed)
    page.reload()
    before = page.locator("#grid > li.card").count()
    page.mouse.wheel(0, 20_000)  # scrolling to the end loads more
    page.wait_for_function(f"() => document.querySelectorAll('#grid > li.card').length > {before}")
    assert len(asked) >= 2 and asked[0] == asked[1], asked  # the hidden page, then the same one for real
    expect(page.locator('#grid > li[data-status="failed"]')).to_have_count(0)
    page.unroute("**/images?limit=24&cursor=*")


# --- long names ---------------------------------------------------------------------------

VISIBLE_TEXT = r"""el => {
  // The text a person sees: not in display:none, nor in the 1-pixel visually hidden spans.
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let text = "";
  while (walker.nextNode()) {
    const parent = walker.currentNode.parentElement;
    if (parent.getBoundingClientRect().width > 1) text += walker.currentNode.textContent;
  }
  return text.replace(/\s+/g, " ").trim();
}"""


def test_a_long_filename_can_be_read_in_full(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    long = (
        f"Summer holiday in the Dolomites - sunrise over the Tre Cime di Lavaredo seen from the "
        f"Rifugio Locatelli, day 3 of 12 ({tag()}).jpg"
    )
    upload_many(stack, [(long, scene(1200, 800, seed=11))])
    page.reload()
    found = wait_ready(page, long)
    link = found.locator("a.tile")
    # The tile's accessible name and its title (shown on hover) are the whole name.
    expect(page.get_by_role("link", name=long, exact=True)).to_have_count(1)
    assert link.get_attribute("title") == long
    name = found.locator(".name")
    assert name.get_attribute("title") == long
    assert name.evaluate("n => n.scrollWidth > n.clientWidth"), "cut with an ellipsis at rest"
    public_width = name.evaluate("n => n.clientWidth")
    # The name has the card's whole width (but its 2 px insets); see admin mode below.
    room = "n => n.closest('.card').clientWidth - n.clientWidth"
    public_room = name.evaluate(room)
    assert 0 <= public_room <= 4 and public_width > 100
    neighbour = found.locator("xpath=following-sibling::li[1]")
    where = neighbour.bounding_box() if neighbour.count() else None

    # Keyboard focus on the tile draws the whole name over the caption; nothing around it moves.
    link.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('.card')?.dataset.id") == found.get_attribute(
        "data-id"
    )
    assert name.evaluate("n => getComputedStyle(n).whiteSpace") == "normal"
    assert name.evaluate("n => n.scrollWidth <= n.clientWidth && n.scrollHeight <= n.clientHeight + 1")
    assert name.evaluate(VISIBLE_TEXT) == long
    shot(page, "long-name-focus.png")
    if where:
        assert neighbour.bounding_box() == where

    # In the lightbox the name wraps, whole, inside the screen.
    page.keyboard.press("Enter")
    title = page.locator("#lightbox-title")
    expect(title).to_have_text(long)
    assert title.evaluate("t => t.scrollWidth <= t.clientWidth")
    box = title.bounding_box()
    assert box and box["height"] > 30, "wrapped onto more than one line"
    assert box["x"] >= 0 and box["x"] + box["width"] <= DESKTOP["width"]
    shot(page, "long-name-lightbox.png")
    page.keyboard.press("Escape")

    # Admin mode's delete button does not take the name's room: the name has the card's whole width
    # in both. (Justified rows give the card another width when the admin's failures join the rows.)
    page.goto("about:blank")
    page.goto(f"{stack.url}/#token={stack.admin_token}")
    found = wait_ready(page, long)
    expect(found.get_by_role("button", name=f"Delete {long}")).to_be_visible()
    assert found.locator(".name").evaluate(room) == public_room


# --- the tile's one markup ---------------------------------------------------------------

# A card's markup with what may differ between two drawings of the same image left out: the
# whitespace between elements, the entrance animation of cards added later, the presigned
# URLs (storage renews them once half their life is gone), and what the layout sets for the
# card's place (its share of a justified row, the width its photo is shown at).
SHAPE = """card => {
  const copy = card.cloneNode(true);
  copy.classList.remove("is-new");
  copy.removeAttribute("style");
  for (const node of copy.querySelectorAll("[sizes]")) node.setAttribute("sizes", "WIDTH");
  const walker = document.createTreeWalker(copy, NodeFilter.SHOW_TEXT);
  const blank = [];
  while (walker.nextNode()) if (!walker.currentNode.textContent.trim()) blank.push(walker.currentNode);
  blank.forEach((node) => node.remove());
  for (const node of copy.querySelectorAll("[src], [srcset], [href]")) {
    for (const name of ["src", "srcset", "href"]) if (node.hasAttribute(name)) node.setAttribute(name, "URL");
  }
  return copy.outerHTML;
}"""


def image_file(fmt: str, width: int = 320, height: int = 240) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, fmt)
    return buffer.getvalue()


def test_tiles_the_script_draws_are_the_servers_tiles(desktop: Any, tmp_path: Path) -> None:
    page, _ = desktop
    suffix = tag()
    good = tmp_path / f"same-{suffix}.jpg"
    good.write_bytes(scene(800, 600, seed=4))
    fake = tmp_path / f"same-fake-{suffix}.jpg"
    fake.write_text("plain text pretending to be a photo")
    page.set_input_files("#file-input", [str(good), str(fake)])
    # Drawn by the script: upload cards that it replaces by a clone of the card template once settled.
    ready = wait_ready(page, good.name)
    failed = card(page, fake.name).and_(page.locator('[data-status="failed"]'))
    failed.wait_for()
    assert "is-new" in (ready.get_attribute("class") or "")
    drawn = {name: card(page, name).evaluate(SHAPE) for name in (good.name, fake.name)}

    page.reload()  # now drawn by the server, from the same macro (the failure: by the script, for
    # this browser uploaded it; the public page leaves failures out)
    card(page, fake.name).wait_for()
    served = {name: card(page, name).evaluate(SHAPE) for name in (good.name, fake.name)}
    assert "is-new" not in (card(page, good.name).get_attribute("class") or "")
    assert served == drawn
    assert 'data-tile="ready"' in served[good.name] and 'data-tile="failed"' in served[fake.name]
    # The page holds one card template; the grid's tiles never carry the other states' sections.
    assert page.locator("template").count() == 1
    assert page.locator("#grid [data-tile]").count() == page.locator("#grid > li.card").count()


def test_only_types_a_browser_shows_get_a_local_preview(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    suffix = tag()
    png, tiff = f"preview-{suffix}.png", f"preview-{suffix}.tiff"
    # Grants fail for now, so both uploads stay on the page as refused cards with their previews.
    page.route(
        f"{stack.url}/uploads",
        lambda route: route.fulfill(
            status=503, json={"error": {"code": "internal_error", "message": "try again"}}
        ),
    )
    page.set_input_files(
        "#file-input",
        [
            {"name": png, "mimeType": "image/png", "buffer": image_file("PNG")},
            {"name": tiff, "mimeType": "image/tiff", "buffer": image_file("TIFF")},
        ],
    )
    for name in (png, tiff):
        expect(card(page, name)).to_have_attribute("data-status", "refused")
    preview = card(page, png).locator("img.preview")
    expect(preview).to_have_count(1)
    page.wait_for_function("img => img.complete && img.naturalWidth === 320", arg=preview.element_handle())
    expect(card(page, tiff).locator("img.preview")).to_have_count(0)  # image/tiff is not previewable
    # Retry (the template's own button) uploads once grants work again.
    page.unroute(f"{stack.url}/uploads")
    card(page, png).get_by_role("button", name="Retry").click()
    wait_ready(page, png)
    card(page, tiff).get_by_role("button", name=f"Dismiss {tiff}").click()
    expect(card(page, tiff)).to_have_count(0)


def test_a_renewed_url_is_taken_in_place(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    name = f"renewed-{tag()}.jpg"
    (image_id,) = upload_many(stack, [(name, scene(640, 480, seed=8))])
    page.reload()
    found = wait_ready(page, name)
    found.evaluate("card => { card.dataset.marker = 'drawn before'; }")

    def renewed(route: Any) -> None:
        # Storage renews a presigned URL once half its life is gone: a new URL for the same bytes.
        body = route.fetch().json()
        for image in body["images"]:
            for rendition in image["renditions"]:
                rendition["url"] += "#renewed"
        route.fulfill(json=body)

    page.route("**/images?limit=*", renewed)
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # refresh now, not in 5 s
    img = page.locator(f'#grid > li[data-id="{image_id}"] img')
    expect(img).to_have_attribute("src", re.compile(r"#renewed$"))
    assert " 640w" in img.get_attribute("srcset") and "#renewed 640w" in img.get_attribute("srcset")
    assert found.locator("a.tile").get_attribute("href").endswith("#renewed")
    assert found.get_attribute("data-marker") == "drawn before", "refilled, not redrawn"
    page.unroute("**/images?limit=*")


# --- browsing -----------------------------------------------------------------------------


def test_more_pages_load_on_scroll_and_with_the_button(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    total = len(requests.get(f"{stack.url}/images?limit=100", timeout=10).json()["images"])
    if total < 60:
        suffix = tag()
        upload_many(
            stack, [(f"page-{i:02d}-{suffix}.jpg", scene(160, 120, seed=i)) for i in range(60 - total)]
        )
    # What a visitor's grid shows of each page: its images but the failed ones (their uploader's and
    # the admin's business, and this browser uploaded none of them).
    pages: list[list[str]] = []
    cursor = None
    while len(pages) < 3:
        query = f"?limit=24&cursor={cursor}" if cursor else "?limit=24"
        body = requests.get(f"{stack.url}/images{query}", timeout=10).json()
        failed = [
            i["status"] == "failed" or (i["status"] == "ready" and not i["renditions"])
            for i in body["images"]
        ]
        pages.append([i["id"] for i, hidden in zip(body["images"], failed, strict=True) if not hidden])
        cursor = body["next_cursor"]
        if not cursor:
            break
    expected = [image_id for page_ids in pages for image_id in page_ids]

    page.reload()
    ids = page.locator("#grid > li.card")
    assert ids.count() >= len(pages[0])
    page.locator("#load-more").click()  # the button (or the scroll it causes) loads page two
    two = len(pages[0]) + len(pages[1])
    page.wait_for_function(f"() => document.querySelectorAll('#grid > li.card').length >= {two}")
    page.mouse.wheel(0, 20_000)  # scrolling to the end loads page three
    page.wait_for_function(
        f"() => document.querySelectorAll('#grid > li.card').length >= {min(len(expected), 60)}"
    )
    shown = page.eval_on_selector_all("#grid > li.card", "cards => cards.map(c => c.dataset.id)")
    assert len(shown) == len(set(shown)), "no image is shown twice"
    assert shown[: len(expected)] == expected[: len(shown)], "newest first, in the API's order"


def test_network_failure_is_reported_with_a_retry(desktop: Any) -> None:
    page, _ = desktop
    page.route("**/images?*", lambda route: route.abort())
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # refresh now, not in 5 s
    banner = page.locator("#banner")
    banner.wait_for()
    assert "Couldn't reach imageshelf" in banner.text_content()
    page.unroute("**/images?*")
    banner.get_by_role("button", name="Retry").click()
    banner.wait_for(state="hidden")


def test_empty_gallery_explains_what_to_do(desktop: Any) -> None:
    page, _ = desktop
    assert page.locator("#empty").is_hidden()
    page.route("**/images?*", lambda route: route.fulfill(json={"images": [], "next_cursor": None}))
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    empty = page.locator("#empty")
    empty.wait_for()
    assert "No photos yet" in empty.text_content()
    assert page.locator("#grid > li").count() == 0
    assert empty.get_by_text("Choose photos", exact=True).is_visible()


def test_images_from_other_clients_appear_without_reload(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    name = f"from-the-cli-{tag()}.jpg"
    stack.s3().put_object(
        Bucket=stack.upload_bucket,
        Key=f"uploads/cli/{name}",
        Body=scene(800, 600, seed=3),
        ContentType="image/jpeg",
    )
    wait_ready(page, name, timeout=20_000)  # a refresh every 5 s, after processing


def test_lightbox_with_keyboard_navigation_and_focus(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    suffix = tag()
    names = [f"lightbox-{i}-{suffix}.jpg" for i in range(3)]
    ids = upload_many(stack, [(name, scene(1600, 1000, seed=i + 2)) for i, name in enumerate(names)])
    page.reload()
    # Uploaded in parallel: the grid's order is the ids' order (newest first), whatever the names.
    order = sorted(zip(ids, names, strict=True))
    newest = order[0][1]
    tile = card(page, newest).locator("a.tile")
    tile.focus()
    page.keyboard.press("Enter")
    box = page.locator("#lightbox")
    box.wait_for()
    assert page.locator("#lightbox-title").text_content() == newest
    assert page.locator("#lightbox-dims").text_content() == "1600 × 1000 px"
    assert page.locator("#lightbox-time").get_attribute("datetime").endswith("Z")
    image = page.locator("#lightbox-image")
    assert image.get_attribute("width") == "1600"
    page.wait_for_function(
        "() => { const i = document.getElementById('lightbox-image'); "
        "return i.complete && i.naturalWidth === 1600; }"
    )
    assert page.evaluate("document.activeElement.id") == "lightbox-close"
    shot(page, "lightbox-desktop.png")

    title = page.locator("#lightbox-title")
    page.keyboard.press("ArrowLeft")  # already the newest: stays
    assert title.text_content() == newest
    page.keyboard.press("ArrowRight")
    assert title.text_content() == order[1][1]
    page.keyboard.press("ArrowRight")
    assert title.text_content() == order[2][1]
    page.keyboard.press("ArrowLeft")
    assert title.text_content() == order[1][1]
    page.keyboard.press("Escape")
    box.wait_for(state="hidden")
    # Focus returns to the tile of the photo last shown.
    page.wait_for_function(
        "id => document.activeElement.closest('.card')?.dataset.id === id", arg=order[1][0]
    )


# --- deletion -----------------------------------------------------------------------------


def test_delete_needs_the_admin_token(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    name = f"delete-me-{tag()}.jpg"
    (image_id,) = upload_many(stack, [(name, scene(640, 480, seed=5))])
    assert requests.delete(f"{stack.url}/images/{image_id}", timeout=10).status_code == 401
    page.reload()
    found = wait_ready(page, name)
    assert page.locator(".delete-button").count() == 0  # no token, no delete buttons

    def enter_token(token: str) -> None:
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("textbox", name="Token").fill(token)
        page.get_by_role("button", name="Use token").click()

    enter_token("wrong-token")
    delete = found.get_by_role("button", name=f"Delete {name}")
    delete.click()
    delete.click()  # the second click confirms
    expect(page.locator("#toast")).to_have_text("That admin token was refused, so nothing was deleted.")
    expect(found).to_have_count(1)
    expect(page.locator(".delete-button")).to_have_count(0)  # the wrong token is forgotten

    enter_token(stack.admin_token)
    page.reload()  # the token is kept for the session
    found = wait_ready(page, name)
    found.locator("a.tile").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Really delete?").click()
    found.wait_for(state="detached")
    assert requests.get(f"{stack.url}/images/{image_id}", timeout=10).status_code == 404
    expect(page.locator("#announcer")).to_have_text(f"{name} was deleted.")
    expect(page.locator("#lightbox")).to_be_visible()  # on to the next photo, or closed if none
    page.keyboard.press("Escape")

    # "Leave admin" forgets the token; a link with #token=... sets it again and leaves the address bar.
    page.get_by_role("button", name="Leave admin").click()
    expect(page.locator(".delete-button")).to_have_count(0)
    page.goto("about:blank")
    page.goto(f"{stack.url}/#token={stack.admin_token}")
    expect(page.locator(".delete-button").first).to_be_visible()
    assert "token" not in page.url


# --- layout -------------------------------------------------------------------------------


def columns(page: Any) -> int:
    tops = page.eval_on_selector_all(
        "#grid > li.card", "cards => cards.map(c => c.getBoundingClientRect().top)"
    )
    return sum(1 for top in tops if abs(top - tops[0]) < 1)


def test_desktop_and_phone_layouts_with_screenshots(browser: Any, stack: Stack) -> None:
    sizes = [(1200, 800), (800, 1100), (1000, 1000), (1400, 800), (900, 1200), (1200, 900)]
    upload_many(
        stack,
        [
            (f"{word}.jpg", scene(*sizes[i % len(sizes)], seed=i))
            for i, word in enumerate(
                [
                    "dawn",
                    "glacier",
                    "dusk",
                    "meadow",
                    "violet-hour",
                    "dunes",
                    "harbour",
                    "ridge",
                    "sunset",
                    "lagoon",
                    "evening",
                    "sandstone",
                    "aurora",
                    "coastline",
                    "highlands",
                ]
            )
        ],
    )
    for viewport, name, wanted in [
        (DESKTOP, "gallery-desktop.png", range(5, 7)),
        (PHONE, "gallery-phone.png", range(2, 3)),
    ]:
        extra = {"is_mobile": True, "has_touch": True} if viewport is PHONE else {}
        page, watch = open_page(browser, stack, viewport, **extra)
        try:
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('#grid img'))"
                ".slice(0, 12).every(i => i.complete && i.naturalWidth > 0)"
            )
            # Justified rows by default (tests/test_layout.py checks them closely).
            expect(page.get_by_role("radio", name="Rows")).to_be_checked()
            assert columns(page) >= 2, "photos side by side"
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
                "no sideways scroll"
            )
            button = page.locator("label.upload-button").bounding_box()
            assert button and button["x"] + button["width"] <= viewport["width"], "the upload button fits"
            expect(page.get_by_label("Upload photos")).to_have_count(1)  # the short label still reads so
            shot(page, name)
            if viewport is DESKTOP:  # dark mode, for a look at the artifacts
                page.emulate_media(color_scheme="dark")
                shot(page, "gallery-desktop-dark.png")
                page.emulate_media(color_scheme="light")
            # The square grid: five or six columns on a laptop, two on a phone.
            page.get_by_role("radio", name="Grid").check()
            assert columns(page) in wanted, f"{columns(page)} columns at {viewport}"
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            shot(page, name.replace("gallery-", "grid-"))
            assert (ARTIFACTS / name).stat().st_size > 10_000
            assert not watch.errors and not watch.dialogs
        finally:
            page.context.close()


@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_the_hint_fits_the_device_and_names_the_button_as_shown(
    browser: Any, stack: Stack, device: str
) -> None:
    if device == "phone":
        page, watch = open_page(browser, stack, PHONE, is_mobile=True, has_touch=True)
    else:
        page, watch = open_page(browser, stack, {"width": 1280, "height": 900})
    try:
        assert page.evaluate("matchMedia('(hover: none) and (pointer: coarse)').matches") == (
            device == "phone"
        )
        hint = page.locator(".intro").evaluate(VISIBLE_TEXT)
        button = page.locator("label.upload-button").evaluate(VISIBLE_TEXT)
        named = page.locator(".intro strong").evaluate_all(
            f"nodes => nodes.map({VISIBLE_TEXT}).filter(Boolean)"
        )
        assert named == [button], "the hint names the button the way it is shown"
        if device == "phone":
            assert button == "Upload"
            assert hint.startswith(
                "Tap Upload to choose photos from your library or take one with the camera."
            )
            assert "Drop" not in hint and "drag" not in hint.lower()
        else:
            assert button == "Upload photos"
            assert hint.startswith("Drop photos anywhere on this page, or choose them with Upload photos.")
            assert "Tap" not in hint
        # The empty gallery's words follow the same rule.
        page.route("**/images?*", lambda route: route.fulfill(json={"images": [], "next_cursor": None}))
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        empty = page.locator("#empty")
        empty.wait_for()
        words = empty.evaluate(VISIBLE_TEXT)
        assert ("Drag photos" in words) == (device == "desktop")
        assert ("take one with the camera" in words) == (device == "phone")
        shot(page, f"hint-{device}.png")
        assert not watch.errors and not watch.dialogs
    finally:
        page.context.close()


# --- placeholders -------------------------------------------------------------------------


def test_placeholders_are_painted_before_the_thumbnails_load(browser: Any, stack: Stack) -> None:
    """Server-rendered and script-built tiles both show the mean colour and the blurred preview
    while their thumbnail is still on its way (here: held back until the test lets it go)."""
    first, later = f"placeholder-{tag()}.jpg", f"placeholder-later-{tag()}.jpg"
    upload_many(stack, [(first, scene(900, 600, seed=5))])
    expected = requests.get(f"{stack.url}/images?limit=5", timeout=10).json()["images"]
    colour = next(i for i in expected if i["original"]["filename"] == first)["placeholder"]["color"]
    held: list[Any] = []
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    page.route(lambda url: "/r/" in url, lambda route: held.append(route))  # renditions wait
    page.goto(stack.url + "/")

    def painted(name: str) -> dict[str, Any]:
        link = card(page, name).locator("a.tile")
        expect(link).to_have_attribute("data-placeholder", re.compile("^data:image/png;base64,"))
        return dict(link.evaluate(
            """(a) => ({
                background: getComputedStyle(a).backgroundColor,
                preview: getComputedStyle(a, "::before").backgroundImage,
                loaded: a.querySelector("img").naturalWidth,
            })"""
        ))  # fmt: skip

    def rgb(hex_colour: str) -> str:
        return "rgb({}, {}, {})".format(*(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)))

    shown = painted(first)
    assert shown == {"background": rgb(colour), "preview": shown["preview"], "loaded": 0}
    assert shown["preview"].startswith('url("data:image/png;base64,')
    # A tile the script builds (an image uploaded by another client while the page is open).
    upload_many(stack, [(later, scene(600, 900, seed=6))])
    wait_ready(page, later, timeout=20_000)
    shown_later = painted(later)
    assert shown_later["loaded"] == 0 and shown_later["preview"].startswith('url("data:image/png')
    assert shown_later["background"] not in ("", "rgba(0, 0, 0, 0)")
    shot(page, "placeholders.png")
    for route in held:
        route.continue_()
    page.route(lambda url: "/r/" in url, lambda route: route.continue_())
    expect(card(page, first).locator("a.tile")).to_have_class(re.compile(r"\bis-loaded\b"))
    hidden = card(page, first).locator("a.tile").evaluate("(a) => getComputedStyle(a, '::before').display")
    assert hidden == "none"  # a transparent thumbnail does not show the preview through
    ctx.close()


def test_chromium_downloads_the_avif_of_a_thumbnail(desktop: Any, stack: Stack) -> None:
    page, _ = desktop
    name = f"avif-{tag()}.jpg"
    upload_many(stack, [(name, scene(1200, 800, seed=8))])
    page.reload()
    img = wait_ready(page, name).locator("a.tile img")
    expect(card(page, name).locator("a.tile")).to_have_class(re.compile(r"\bis-loaded\b"))
    current = img.evaluate("(i) => i.currentSrc")
    assert current.split("?")[0].endswith(".avif"), current  # not the JPEG of the <img> itself
    image = next(
        i for i in requests.get(f"{stack.url}/images?limit=10", timeout=10).json()["images"]
        if i["original"]["filename"] == name
    )  # fmt: skip
    thumb = image["renditions"][0]
    formats = {f["content_type"]: f["bytes"] for f in thumb["formats"]}
    assert formats["image/avif"] < formats["image/webp"] < formats["image/jpeg"] == thumb["bytes"]


def test_chromium_downloads_the_webp_when_it_is_the_smaller(
    desktop: Any, stack: Stack, tmp_path: Path
) -> None:
    """For a flat picture the WebP thumbnail is smaller than the AVIF: the tile offers it first,
    and Chromium, which shows both, downloads it, in a tile the page drew and in one the script
    drew for an upload from this tab."""
    page, _ = desktop
    flat = jpeg(800, 600)
    drawn_by_page, drawn_by_script = f"flat-{tag()}.jpg", f"flat-{tag()}.jpg"
    upload_many(stack, [(drawn_by_page, flat)])
    page.reload()
    path = tmp_path / drawn_by_script
    path.write_bytes(flat)
    page.set_input_files("#file-input", [str(path)])
    for name in (drawn_by_page, drawn_by_script):
        ready = wait_ready(page, name, timeout=30_000)
        expect(ready.locator("a.tile")).to_have_class(re.compile(r"\bis-loaded\b"))
        current = ready.locator("a.tile img").evaluate("(i) => i.currentSrc")
        assert current.split("?")[0].endswith(".webp"), (name, current)
    image = next(
        i for i in requests.get(f"{stack.url}/images?limit=10", timeout=10).json()["images"]
        if i["original"]["filename"] == drawn_by_page
    )  # fmt: skip
    formats = {f["content_type"]: f["bytes"] for f in image["renditions"][0]["formats"]}
    assert formats["image/webp"] < formats["image/avif"] < formats["image/jpeg"]


def test_an_iphone_heic_uploads_from_the_gallery(desktop: Any, tmp_path: Path) -> None:
    """A real iPhone HEIC (tests/data/README.md) picked in the gallery: granted, uploaded, shown."""
    page, _ = desktop
    assert "image/heic" in (page.get_attribute("#file-input", "accept") or "")
    name = f"IMG_{tag()}.HEIC"
    path = tmp_path / name
    path.write_bytes((ROOT / "tests" / "data" / "iphone-arrow.heic").read_bytes())
    page.set_input_files("#file-input", [str(path)])
    ready = wait_ready(page, name, timeout=30_000)
    assert ready.locator(".info").text_content() == "3024 × 4032"
    expect(ready.locator("a.tile")).to_have_class(re.compile(r"\bis-loaded\b"))
    size = ready.locator("a.tile img").evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    assert abs(size[0] / size[1] - 3 / 4) < 0.01  # upright: portrait, as the phone showed it
