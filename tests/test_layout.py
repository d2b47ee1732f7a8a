"""The gallery's two layouts in real headless Chromium, on a local stack of their own.

Justified rows (the default): every photo whole at its own aspect ratio, each row exactly as wide as
the grid, its photos one height. The square grid: the same photos as square crops. The shelf holds
a mix of portraits, landscapes, squares and panoramas: real photographs from the benchmark's corpus
(``bench/corpus.py``), cut to those shapes, or, where the corpus was not fetched, painted scenes of
the same shapes. ``UPDATE_SCREENSHOTS=1`` copies the screenshots of both layouts to ``docs/``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from tests.support import Stack
from tests.test_browser import (
    ARTIFACTS,
    PHONE,
    open_page,
    scene,
    shot,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / ".cache" / "bench" / "corpus"
DOCS = ROOT / "docs"
LAPTOP = {"width": 1280, "height": 900}
VIEWPORTS = {"laptop": (LAPTOP, {}), "phone": (PHONE, {"is_mobile": True, "has_touch": True})}

# Newest first, as the grid shows them: (corpus file, width / height, the name a person gives it).
PHOTOS = [
    ("mate-LadyBird.jpg", 2 / 3, "ladybird.jpg"),
    ("plasma-BytheWater-2560x1600.jpg", 3.2, "jetty-at-sunset-panorama.jpg"),
    ("mate-YellowFlower.jpg", 4 / 5, "yellow-flower.jpg"),
    ("plasma-Path-2560x1600.jpg", 2 / 3, "forest-path.jpg"),
    ("mate-Dune.jpg", 3 / 2, "dune.jpg"),
    ("plasma-ColorfulCups-2560x1600.jpg", 1.0, "cups.jpg"),
    ("plasma-EveningGlow-2560x1600.jpg", 16 / 10, "boats-at-dusk.jpg"),
    ("mate-RainDrops.jpg", 3 / 4, "rain-drops.jpg"),
    ("mate-Storm.jpg", 3.0, "storm-coming-panorama.jpg"),
    ("plasma-Kite-2560x1600.jpg", 4 / 3, "kite.jpg"),
    ("mate-FreshFlower.jpg", 3 / 4, "marigold.jpg"),
    ("plasma-FallenLeaf-2560x1600.jpg", 3 / 2, "fallen-leaf.jpg"),
    ("mate-Aqua.jpg", 1.0, "drop.jpg"),
    ("plasma-Grey-2560x1600.jpg", 2 / 3, "facade.jpg"),
    ("plasma-summer_1am-2560x1600.jpg", 4.0, "summer-night-panorama.jpg"),
    ("mate-Garden.jpg", 4 / 3, "garden.jpg"),
    ("plasma-ColdRipple-2560x1600.jpg", 16 / 9, "jetty.jpg"),
    ("plasma-OneStandsOut-2560x1600.jpg", 4 / 5, "moss.jpg"),
    ("mate-TwoWings.jpg", 3 / 2, "dandelion.jpg"),
    ("mate-GreenMeadow.jpg", 9 / 16, "grass.jpg"),
    ("plasma-DarkestHour-2560x1600.jpg", 16 / 9, "blue-hour.jpg"),
    ("plasma-Volna-5120x2880.jpg", 3.0, "beach-panorama.jpg"),
    ("mate-Wood.jpg", 4 / 3, "wood.jpg"),
]


# Where a photo's subject is, across (0 left, 1 right), when not in the middle.
SUBJECT = {"mate-LadyBird.jpg": 0.8, "mate-Aqua.jpg": 0.6}


def cut(source: Path, aspect: float, longest: int = 1600) -> bytes:
    """A photo cut to ``aspect`` (width / height) around its subject, at most ``longest`` pixels long."""
    with Image.open(source) as opened:
        opened.draft("RGB", (2000, 2000))
        image = opened.convert("RGB")
    width, height = image.size
    if width / height > aspect:
        keep = round(height * aspect)
        left = min(max(0, round(width * SUBJECT.get(source.name, 0.5) - keep / 2)), width - keep)
        image = image.crop((left, 0, left + keep, height))
    else:
        keep = round(width / aspect)
        image = image.crop((0, (height - keep) // 2, width, (height - keep) // 2 + keep))
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=86)
    return buffer.getvalue()


def cut_or_paint(index: int, aspect: float) -> bytes:
    source = CORPUS / PHOTOS[index][0]
    if source.exists():
        return cut(source, aspect)
    width = 1200 if aspect >= 1 else round(1200 * aspect)
    return scene(width, round(width / aspect), seed=index)  # no corpus here: painted, same shape


def photo(index: int) -> bytes:
    return cut_or_paint(index, PHOTOS[index][1])


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack holding only PHOTOS, so the rows (and the screenshots) are the same every run."""
    # As a first run is (no ADMIN_TOKEN), so the screenshots show what a new user sees.
    stack = Stack(data_dir=tmp_path_factory.mktemp("layout") / "data", admin_token="").start()
    try:
        # One at a time, oldest first: ids sort newest first, so the grid lists PHOTOS in order.
        ids = [stack.upload(photo(i), filename=PHOTOS[i][2]) for i in reversed(range(len(PHOTOS)))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(image["status"] == "ready" for image in pool.map(lambda i: stack.wait(i, 60), ids))
        yield stack
    finally:
        stack.stop()


def open_gallery(browser: Any, shelf: Stack, device: str) -> tuple[Any, Any]:
    viewport, extra = VIEWPORTS[device]
    page, watch = open_page(browser, shelf, viewport, **extra)
    settled(page)
    return page, watch


# Every card's tile, photo and `sizes`, relative to the grid.
MEASURE_NOW = """() => {
  const grid = document.getElementById("grid").getBoundingClientRect();
  return Array.from(document.querySelectorAll("#grid > li.card"), (card) => {
    const tile = card.querySelector(".tile").getBoundingClientRect();
    const img = card.querySelector("a.tile img");
    return {
      id: card.dataset.id, status: card.dataset.status, name: card.querySelector(".name").textContent,
      left: tile.left - grid.left, right: tile.right - grid.left, top: tile.top - grid.top,
      width: tile.width, height: tile.height, gridWidth: grid.width,
      natural: img && img.naturalWidth ? img.naturalWidth / img.naturalHeight : null,
      fit: img ? getComputedStyle(img).objectFit : null,
      sizes: img ? img.getAttribute("sizes") : null,
    };
  });
}"""
# The same as the next frame paints it (the script lays out in an animation frame, before painting).
MEASURE = f"""async () => {{
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return ({MEASURE_NOW})();
}}"""


def rows_of(tiles: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    rows: list[list[dict[str, Any]]] = []
    for tile in tiles:
        if rows and abs(rows[-1][0]["top"] - tile["top"]) < 1:
            rows[-1].append(tile)
        else:
            rows.append([tile])
    return rows


def aspects(shelf: Stack) -> dict[str, float]:
    images = requests.get(f"{shelf.url}/images?limit=100", timeout=10).json()["images"]
    return {i["id"]: i["original"]["width"] / i["original"]["height"] for i in images}


def assert_justified(
    page: Any, shelf: Stack, extra: dict[str, float] | None = None, mix: bool = True
) -> list[list[dict[str, Any]]]:
    """Rows that fill the grid, photos whole at their own shapes; returns the rows' tiles.
    ``extra``: the aspect ratios of photos that the shelf does not list."""
    tiles = page.evaluate(MEASURE)
    truth = aspects(shelf) | (extra or {})
    photos = [t for t in tiles if t["status"] == "ready"]
    if mix:
        shapes = [truth[t["id"]] for t in photos]
        assert min(shapes) < 0.7 and max(shapes) > 2.9 and any(1.2 < s < 1.8 for s in shapes), "a real mix"
    rows = rows_of(tiles)
    assert len(rows) >= 3
    assert [row[0]["top"] for row in rows] == sorted(row[0]["top"] for row in rows)
    for number, row in enumerate(rows):
        # Each row reads left to right in the grid's order, so Tab and the lightbox's arrows follow
        # the rows as they are seen.
        assert [t["left"] for t in row] == sorted(t["left"] for t in row)
        heights = [t["height"] for t in row]
        assert max(heights) - min(heights) < 1, f"row {number}: one height, {row}"
        assert abs(row[0]["left"]) < 1, f"row {number} starts at the grid's left edge"
        if number < len(rows) - 1:
            assert abs(row[-1]["right"] - row[-1]["gridWidth"]) <= 1.5, (
                f"row {number} ends {row[-1]['gridWidth'] - row[-1]['right']:.1f} px short of the edge"
            )
        else:
            assert row[-1]["right"] <= row[-1]["gridWidth"] + 1
    for tile in photos:
        shown = tile["width"] / tile["height"]
        assert abs(shown / truth[tile["id"]] - 1) < 0.02, (
            f"{tile['name']}: {shown:.3f} for {truth[tile['id']]:.3f}"
        )
        if tile["natural"]:  # the photo itself fills its box: nothing cut off, nothing squeezed
            assert abs(tile["natural"] / shown - 1) < 0.02, tile
        assert tile["fit"] != "cover" or tile["natural"] is None or abs(tile["natural"] / shown - 1) < 0.01
        # The browser picks a rendition for the width the photo really has.
        assert abs(float(tile["sizes"].removesuffix("px")) - tile["width"]) < 1.01, tile
    return rows


def assert_square_grid(page: Any) -> None:
    tiles = page.evaluate(MEASURE)
    for tile in tiles:
        assert abs(tile["width"] - tile["height"]) < 1, tile  # square crops
        assert tile["fit"] == "cover"
        assert abs(float(tile["sizes"].removesuffix("px")) - tile["width"]) < 1.01, tile
    widths = {round(t["width"]) for t in tiles}
    assert len(widths) == 1 and len(rows_of(tiles)[0]) >= 2, "columns of one width"


def settled(page: Any) -> None:
    """Wait for the thumbnails on screen to load."""
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#grid img'))"
        ".every(i => i.getBoundingClientRect().top > innerHeight || (i.complete && i.naturalWidth > 0))"
    )


# --- the rows --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_justified_rows_show_whole_photos_filling_each_row(
    browser: Any,
    shelf: Stack,
    device: str,
) -> None:
    page, watch = open_gallery(browser, shelf, device)
    try:
        expect(page.get_by_role("radio", name="Rows")).to_be_checked()  # the default
        assert page.locator("#grid").get_attribute("data-layout") == "justified"
        rows = assert_justified(page, shelf)
        shot(page, f"layout-justified-{device}.png")
        target = page.evaluate(
            "parseFloat(getComputedStyle(document.getElementById('grid')).getPropertyValue('--row-h'))"
        )
        heights = [row[0]["height"] for row in rows[:-1]]
        if device == "phone":
            assert 110 <= target <= 150, target
        else:
            assert 200 <= target <= 260, target
        # Near the target: no row blown up, none squashed. (On a phone a 16:9 photo before a
        # panorama may have a row of its own, half as tall again as the target.)
        assert all(0.5 * target < h < 1.6 * target for h in heights), " ".join(f"{h:.0f}" for h in heights)
        assert rows[-1][0]["height"] <= target * 1.1 + 1, "the last row is not blown up"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
            "no sideways scroll"
        )
        assert not watch.errors and not watch.dialogs
    finally:
        page.context.close()


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_the_switch_shows_the_square_grid_and_is_remembered(
    browser: Any,
    shelf: Stack,
    device: str,
) -> None:
    page, watch = open_gallery(browser, shelf, device)
    try:
        switch = page.get_by_role("group", name="Layout")
        rows, square = switch.get_by_role("radio", name="Rows"), switch.get_by_role("radio", name="Grid")
        expect(rows).to_be_checked()
        square.check()
        expect(page.locator("#grid")).to_have_attribute("data-layout", "grid")
        settled(page)
        assert_square_grid(page)
        shot(page, f"layout-grid-{device}.png")
        assert page.evaluate("localStorage.getItem('imageshelf.layout')") == "grid"

        page.reload()  # remembered
        settled(page)
        expect(square).to_be_checked()
        assert_square_grid(page)

        # From the keyboard: Tab reaches the chosen one; an arrow key chooses the other.
        page.locator("#file-input").focus()
        page.keyboard.press("Tab")
        expect(square).to_be_focused()
        page.keyboard.press("ArrowLeft")
        expect(rows).to_be_checked()
        expect(rows).to_be_focused()
        settled(page)
        assert_justified(page, shelf)
        page.reload()
        settled(page)
        expect(rows).to_be_checked()
        assert_justified(page, shelf)
        assert not watch.errors and not watch.dialogs
    finally:
        page.context.close()


def refresh_now(page: Any) -> None:
    """Run the periodic refresh now, and wait for its answer to be merged."""
    with page.expect_response(lambda r: "/images?limit=" in r.url and "cursor" not in r.url):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_timeout(200)


def test_rows_follow_new_and_deleted_photos_and_the_window(browser: Any, shelf: Stack) -> None:
    page, watch = open_gallery(browser, shelf, "laptop")
    try:
        # A refresh that brings nothing new writes nothing: no style, no sizes, no relayout.
        # (A thumbnail that finishes loading meanwhile marks its tile "is-loaded": that is the
        # network, not the refresh, so it does not count.)
        page.evaluate("""() => {
          window.__writes = [];
          const classes = (value) =>
            (value || "").split(/\\s+/).filter((c) => c && c !== "is-loaded").sort().join(" ");
          const counts = (r) =>
            r.attributeName !== "class" || classes(r.oldValue) !== classes(r.target.getAttribute("class"));
          new MutationObserver((records) =>
              window.__writes.push(...records.filter(counts).map((r) => r.attributeName)))
            .observe(document.getElementById("grid"), {subtree: true, attributes: true,
              attributeOldValue: true,
              attributeFilter: ["style", "sizes", "class"]});
        }""")
        refresh_now(page)
        assert page.evaluate("window.__writes") == []

        # A photo from another client arrives with a refresh (here: the storm panorama again, under
        # the newest id, so the shelf stays as the other tests expect it): the rows take it in.
        listing = requests.get(f"{shelf.url}/images?limit=100", timeout=10).json()["images"]
        storm = next(i for i in listing if i["original"]["filename"].startswith("storm"))
        arrival = dict(storm, id=min(i["id"] for i in listing)[:-1])  # a prefix sorts first: newest

        def with_arrival(route: Any) -> None:
            body = route.fetch().json()
            body["images"].insert(0, arrival)
            route.fulfill(json=body)

        page.route("**/images?limit=*", with_arrival)
        refresh_now(page)
        new = page.locator("#grid > li.card").first
        expect(new).to_have_attribute("data-id", arrival["id"])
        settled(page)
        assert page.evaluate("window.__writes")  # laid out again
        truth = {arrival["id"]: storm["original"]["width"] / storm["original"]["height"]}
        rows = assert_justified(page, shelf, truth)
        assert rows[0][0]["id"] == arrival["id"]

        # Another window size: new rows at once, for the new width and its target height.
        page.set_viewport_size({"width": 820, "height": 900})
        settled(page)
        narrow = assert_justified(page, shelf, truth)
        assert narrow[0][0]["gridWidth"] < rows[0][0]["gridWidth"] - 300
        assert len(narrow) > len(rows)

        # Deleted elsewhere: its card goes and the rows close up.
        page.unroute("**/images?limit=*")
        refresh_now(page)
        expect(page.locator(f'#grid > li[data-id="{arrival["id"]}"]')).to_have_count(0)
        expect(page.locator("#grid > li.card")).to_have_count(len(PHOTOS))
        assert_justified(page, shelf)
        assert not watch.errors and not watch.dialogs
    finally:
        page.context.close()


def test_tiles_without_a_photo_yet_have_sensible_shapes(browser: Any, shelf: Stack) -> None:
    page, watch = open_gallery(browser, shelf, "phone")
    held: list[Any] = []

    def grant(route: Any) -> None:  # grants wait (the cards stay "uploading"), then are refused
        if held and held[0] == "refuse":
            route.fulfill(status=503, json={"error": {"code": "internal_error", "message": "later"}})
        else:
            held.append(route)

    try:
        page.route(f"{shelf.url}/uploads", grant)
        wide = Image.new("RGB", (1600, 900), (200, 120, 60))
        buffer = io.BytesIO()
        wide.save(buffer, "PNG")
        tiff = io.BytesIO()
        Image.new("RGB", (300, 400), (60, 120, 200)).save(tiff, "TIFF")
        page.set_input_files(
            "#file-input",
            [
                {"name": "wide-preview.png", "mimeType": "image/png", "buffer": buffer.getvalue()},
                {"name": "no-preview.tiff", "mimeType": "image/tiff", "buffer": tiff.getvalue()},
            ],
        )
        uploads = page.locator('#grid > li[data-status="uploading"]')
        expect(uploads).to_have_count(2)
        # The one with a local preview takes the preview's shape; the other is square.
        page.wait_for_function(
            "() => { const t = document.querySelector('#grid > li .tile'); "
            "const r = t.getBoundingClientRect(); return Math.abs(r.width / r.height - 16 / 9) < 0.03; }"
        )
        tiles = page.evaluate(MEASURE)
        shapes = {t["name"]: t["width"] / t["height"] for t in tiles[:2]}
        assert abs(shapes["no-preview.tiff"] - 1) < 0.02, shapes
        assert_justified(page, shelf, mix=False)

        waiting = held[:]
        held[:] = ["refuse"]
        for route in waiting:  # refused cards, with words and buttons
            grant(route)
        refused = page.locator('#grid > li[data-status="refused"]')
        expect(refused).to_have_count(2)
        page.wait_for_timeout(100)  # laid out in the next frame
        assert_justified(page, shelf, mix=False)
        for i in range(2):
            tile = refused.nth(i).locator(".tile").bounding_box()
            assert tile and tile["width"] >= 1.5 * tile["height"] - 1, tile
            for button in ("Retry", "Dismiss"):
                box = refused.nth(i).get_by_role("button", name=re.compile(button)).bounding_box()
                assert box and box["y"] + box["height"] <= tile["y"] + tile["height"], f"{button} is cut off"
                assert box["x"] + box["width"] <= tile["x"] + tile["width"], f"{button} is cut off"
        shot(page, "layout-refused-phone.png")
        for name in ("wide-preview.png", "no-preview.tiff"):
            page.get_by_role("button", name=f"Dismiss {name}").click()
        expect(page.locator("#grid > li.card")).to_have_count(len(PHOTOS))
        assert_justified(page, shelf)
        assert not [e for e in watch.errors if "503" not in e] and not watch.dialogs  # but the refusals
    finally:
        page.context.close()


def test_without_javascript_the_photos_are_whole_in_rows(browser: Any, shelf: Stack) -> None:
    context = browser.new_context(viewport=LAPTOP, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(shelf.url + "/")
        expect(page.locator("#layout-switch")).to_be_hidden()
        tiles = page.evaluate(MEASURE_NOW)
        assert len(tiles) == len(PHOTOS)
        truth = aspects(shelf)
        for tile in tiles:
            assert abs(tile["width"] / tile["height"] / truth[tile["id"]] - 1) < 0.02, tile
            assert tile["right"] <= tile["gridWidth"] + 1
        heights = {round(t["height"]) for t in tiles if t["width"] < t["gridWidth"] - 1}
        assert len(heights) == 1, heights  # one row height, but for a panorama wider than the page
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shot(page, "layout-no-javascript.png")
    finally:
        context.close()


# --- screenshots -----------------------------------------------------------------------------


def shot_for_docs(page: Any, name: str) -> None:
    """A screenshot in test-artifacts/, copied to docs/ (dithered, under 280 KB) only when
    ``UPDATE_SCREENSHOTS`` is set, so a test run leaves the checkout clean. The docs' copy must
    still show the top of today's page (bar, hint, layout switch), as tests/test_docs.py checks
    for docs/gallery.png."""
    from PIL import Image

    from tests.test_docs import TOLERANCE, changed_pixels, save_for_docs

    shot(page, name)
    if os.environ.get("UPDATE_SCREENSHOTS"):
        save_for_docs(ARTIFACTS / name, DOCS / name)
    grid = page.locator("#grid").bounding_box()
    assert grid is not None
    with Image.open(ARTIFACTS / name) as now, Image.open(DOCS / name) as shown:
        assert shown.size == now.size, f"docs/{name} is {shown.size}, the page {now.size}"
        changed, where = changed_pixels(now, shown, int(grid["y"]))
    assert changed <= TOLERANCE, (
        f"docs/{name} no longer shows the top of the page as it is: {changed} pixels differ, within "
        f"{where} (today's: {ARTIFACTS / name}). Retake it: UPDATE_SCREENSHOTS=1 .venv/bin/python -m "
        "pytest tests/test_layout.py -k screenshots"
    )


def test_screenshots_of_both_layouts(browser: Any, shelf: Stack) -> None:
    page, watch = open_gallery(browser, shelf, "laptop")
    try:
        assert_justified(page, shelf)
        shot_for_docs(page, "gallery-justified.png")
        page.get_by_role("radio", name="Grid").check()
        settled(page)
        assert_square_grid(page)
        shot_for_docs(page, "gallery-grid.png")
        for name in ("gallery-justified.png", "gallery-grid.png"):  # the README's copies
            assert (DOCS / name).stat().st_size < 300_000, f"docs/{name} is too large for the README"
        assert not watch.errors and not watch.dialogs
    finally:
        page.context.close()
