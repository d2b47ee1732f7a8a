"""chalicelib/gallery.py without a browser: escaping, the CSP, the page's data, the tile's one markup,
the static allow-list."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from chalicelib import formats, gallery, storage
from chalicelib.config import Settings, get_settings
from chalicelib.errors import IMAGE_ERROR_CODES, ImageshelfError

# What storage.endpoint_urls answers on the local stack with a CDN for images.
ENDPOINTS = {"upload": "http://127.0.0.1:9000/imageshelf-uploads", "image": "https://cdn.example.com/"}
endpoint_urls = storage.endpoint_urls  # the real one, before the autouse fixture replaces it
NASTY = "<img src=x onerror=alert(1)>.jpg"
SCRIPT_BREAK = "</script><script>alert(1)</script>.png"


def image(
    image_id: str = "0" * 20, status: str = "ready", filename: str = "cat.jpg", **extra: Any
) -> dict[str, Any]:
    ready = status == "ready"
    body: dict[str, Any] = {
        "id": image_id,
        "status": status,
        "created_at": "2026-11-23T12:00:00.000Z",
        "original": {
            "filename": filename,
            "content_type": "image/jpeg",
            "bytes": 1234,
            "width": 1200 if ready else None,
            "height": 800 if ready else None,
            "format": "JPEG",
        },
        "renditions": [
            {
                "name": "large",
                "url": "https://cdn.example.com/l.jpg?a=1&b=2",
                "width": 1200,
                "height": 800,
                "content_type": "image/jpeg",
                "bytes": 90000,
            },
            {
                "name": "thumb",
                "url": "https://cdn.example.com/t.jpg?a=1&b=2",
                "width": 400,
                "height": 267,
                "content_type": "image/jpeg",
                "bytes": 9000,
            },
        ]
        if ready
        else [],
    }
    body.update(extra)
    return body


@pytest.fixture(autouse=True)
def endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page asks storage where S3 is; these tests answer without AWS (``aws`` tests ask moto)."""
    monkeypatch.setattr(storage, "endpoint_urls", lambda settings: dict(ENDPOINTS))


def render(*images: dict[str, Any], next_cursor: str | None = None, settings: Settings | None = None) -> Any:
    first_page = {"images": list(images), "next_cursor": next_cursor}
    return gallery.page_response(first_page, settings or Settings())


VOID = ("img", "source", "input", "link", "meta", "path", "rect", "circle", "br")


class Page(HTMLParser):
    """Every start tag with its attributes, the text of each element id'd, and the config block.

    As in a browser, what a ``<template>`` holds is not part of the page: its tags are in
    ``templates`` (by the template's id) instead.
    """

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self.templates: dict[str | None, list[tuple[str, dict[str, str | None]]]] = {}
        self._open: list[str | None] = []
        self._template: str | None = None
        self._in_template = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "template":
            assert not self._in_template, "templates do not nest here"
            self._in_template, self._template = True, attributes.get("id")
            self.templates.setdefault(self._template, [])
            return
        if self._in_template:
            self.templates[self._template].append((tag, attributes))
            return
        self.tags.append((tag, attributes))
        if tag not in VOID:
            self._open.append(attributes.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._in_template = False
        elif not self._in_template and tag not in VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._in_template:
            return
        for element_id in self._open:
            if element_id:
                self.text[element_id] = self.text.get(element_id, "") + data

    def find(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]

    def by_id(self, element_id: str) -> dict[str, str | None]:
        (found,) = [a for _, a in self.tags if a.get("id") == element_id]
        return found


# --- the page -----------------------------------------------------------------------------


def test_page_headers_and_content_security_policy() -> None:
    response = render(image())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' https://cdn.example.com data: blob:; "
        "connect-src 'self' http://127.0.0.1:9000; form-action 'self' http://127.0.0.1:9000; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    assert "unsafe" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "bad", ["http://x; script-src *", "javascript:alert(1)", "http://a b", "'self'", "*"]
)
def test_an_origin_that_would_rewrite_the_policy_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        gallery.content_security_policy({"upload": bad, "image": "http://ok.example"})


def test_the_page_has_no_inline_script_style_or_handlers_the_csp_would_block() -> None:
    page = Page(
        render(
            image(),
            image("1" * 20, status="failed", error={"code": "corrupt_image", "message": "m"}),
            settings=Settings(admin_token="t"),
        ).body
    )
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
    scripts = page.find("script")
    assert [s.get("type") for s in scripts] == ["application/json", None]
    assert scripts[1]["src"].startswith("static/gallery.js?v=") and "defer" in scripts[1]
    assert page.find("link", rel="stylesheet")[0]["href"].startswith("static/gallery.css?v=")


@pytest.mark.parametrize("filename", [NASTY, SCRIPT_BREAK, "\"quoted\" & 'single'.jpg", "ünïcødé 😀.jpg"])
def test_filenames_are_text_in_the_html_and_data_in_the_config(filename: str) -> None:
    html = render(image(filename=filename)).body
    assert "<img src=x" not in html and "<script>alert" not in html
    page = Page(html)
    (tile_image,) = [a for t, a in page.tags if t == "img" and a.get("loading") == "lazy"]
    assert tile_image["alt"] == filename
    assert page.find("p", **{"class": "name"})[0]["title"] == filename
    assert page.find("a", **{"class": "tile"})[0]["title"] == filename  # on hover over the photo too
    # The config block cannot be closed early, and reads back as the exact API data.
    block = re.search(r'<script type="application/json" id="config">(.*?)</script>', html, re.S)
    assert block is not None
    assert "<" not in block.group(1) and ">" not in block.group(1)
    config = json.loads(block.group(1))
    assert config["firstPage"]["images"][0]["original"]["filename"] == filename


def test_a_ready_card_has_a_sized_lazy_thumbnail_with_srcset_over_the_renditions() -> None:
    page = Page(render(image(filename="cat.jpg")).body)
    (tile,) = page.find("a", **{"class": "tile"})
    assert tile["href"] == "https://cdn.example.com/l.jpg?a=1&b=2"  # works without JavaScript too
    (img,) = [a for t, a in page.tags if t == "img" and a.get("loading") == "lazy"]
    assert img["src"] == "https://cdn.example.com/t.jpg?a=1&b=2"  # the smallest rendition
    assert (img["width"], img["height"]) == ("400", "267")
    assert (
        img["srcset"]
        == "https://cdn.example.com/t.jpg?a=1&b=2 400w, https://cdn.example.com/l.jpg?a=1&b=2 1200w"
    )
    assert img["decoding"] == "async"
    # Its width in justified rows (3:2 at the target row height of each screen size), until the
    # script measures it.
    assert img["sizes"] == "(max-width: 480px) 202px, (max-width: 1000px) 255px, 330px"
    assert page.find("li", **{"class": "card"})[0]["data-status"] == "ready"
    assert '<p class="info">1200 × 800</p>' in render(image()).body


def test_pending_images_show_their_state_and_failed_ones_their_reason() -> None:
    html = render(image("1" * 20, status="pending")).body
    assert "Processing…" in html
    statuses = [a["data-status"] for a in Page(html).find("li") if a.get("data-id")]
    assert statuses == ["pending"]
    # A failure's tile (the script draws it for its uploader and the admin) says why, in words.
    failed = image("2" * 20, status="failed", error={"code": "not_an_image", "message": "server words"})
    tile = macro_tile(gallery.card(failed, gallery.error_words(Settings())))
    assert "Couldn't process" in tile
    assert "This file isn&#39;t a photo. Choose a JPEG, PNG, GIF, WebP, TIFF, BMP, AVIF or HEIC image." in (
        tile
    )


def grid_ids(html: str) -> list[str | None]:
    return [a["data-id"] for a in Page(html).find("li") if a.get("data-id")]


def test_the_public_grid_leaves_out_failed_images_but_the_script_gets_them() -> None:
    ready, failed, empty_ready = (
        image("1" * 20),
        image("2" * 20, status="failed", error={"code": "corrupt_image", "message": "m"}),
        image("3" * 20, renditions=[]),  # ready without renditions: shown as a failure
    )
    html = render(ready, failed, empty_ready).body
    assert grid_ids(html) == ["1" * 20]
    assert "Couldn't process" not in html.split('<template id="card-template">')[0]
    config = json.loads(_config_block(html))
    assert [i["id"] for i in config["firstPage"]["images"]] == ["1" * 20, "2" * 20, "3" * 20]


def _config_block(html: str) -> str:
    block = re.search(r'<script type="application/json" id="config">(.*?)</script>', html, re.S)
    assert block is not None
    return block.group(1)


def test_a_first_page_of_only_failures_offers_more_rather_than_an_empty_gallery() -> None:
    failed = image(status="failed", error={"code": "corrupt_image", "message": "m"})
    more = Page(render(failed, next_cursor="0" * 20).body)
    assert "hidden" in more.by_id("empty") and "hidden" not in more.by_id("load-more")
    assert not [a for a in more.find("li") if a.get("data-id")]
    alone = Page(render(failed).body)  # nothing else on the shelf: the public sees an empty gallery
    assert "hidden" not in alone.by_id("empty")


def test_justified_rows_are_the_default_and_the_switch_offers_the_square_grid() -> None:
    page = Page(render(image()).body)
    assert page.by_id("grid")["data-layout"] == "justified"
    switch = page.by_id("layout-switch")
    assert switch is not None and "hidden" in switch  # the script shows it: without it, it would do nothing
    html = render(image()).body
    fieldset = re.search(r'<fieldset class="layout-switch"[^>]*>(.*?)</fieldset>', html, re.S)
    assert fieldset is not None
    assert re.search(r'<legend class="visually-hidden">Layout</legend>', fieldset.group(1))
    radios = [a for t, a in Page(fieldset.group(1)).tags if t == "input"]
    assert [(r["type"], r["name"], r["value"]) for r in radios] == [
        ("radio", "layout", "justified"),
        ("radio", "layout", "grid"),
    ]
    assert "checked" in radios[0] and "checked" not in radios[1]
    labels = re.findall(r"<label[^>]*>.*?<span>(\w+)</span>\s*</label>", fieldset.group(1), re.S)
    assert labels == ["Rows", "Grid"]  # each radio's name, inside its label


@pytest.mark.parametrize(
    ("size", "sizes"),
    [
        ((267, 400), "(max-width: 480px) 90px, (max-width: 1000px) 113px, 147px"),  # portrait
        ((400, 400), "(max-width: 480px) 135px, (max-width: 1000px) 170px, 220px"),
        ((400, 100), "(max-width: 480px) 480px, (max-width: 1000px) 680px, 880px"),  # panorama
        ((400, 40), "(max-width: 480px) 480px, (max-width: 1000px) 1000px, 1320px"),  # wider than any screen
    ],
)
def test_a_tile_asks_for_a_rendition_as_wide_as_its_row_will_show_it(
    size: tuple[int, int], sizes: str
) -> None:
    assert gallery.tile_sizes(*size) == sizes


def test_every_image_error_code_has_words_a_person_understands() -> None:
    words = gallery.error_words(Settings(max_upload_bytes=5 * 1024 * 1024, max_pixels=24_000_000))
    assert set(words) >= IMAGE_ERROR_CODES
    assert {"unsupported_media_type", "invalid_request", "network", "forbidden", "unauthorized"} <= set(words)
    for code, text in words.items():
        assert "_" not in text and text.endswith("."), (code, text)
    assert words["file_too_large"] == "This file is larger than the 5 MB limit."
    assert "24 megapixels" in words["too_many_pixels"]


def test_an_empty_gallery_explains_what_to_do() -> None:
    page = Page(render().body)
    assert "hidden" not in page.by_id("empty")
    assert "No photos yet" in page.text["empty"]
    assert "Drag photos" in page.text["empty"]  # with a mouse (CSS picks the hint, see below)
    assert "take one with the camera" in page.text["empty"]  # on a touch screen
    assert "hidden" in page.by_id("load-more")


def test_each_kind_of_device_gets_its_own_hint_naming_the_button_as_shown() -> None:
    html = render(image()).body
    intro = re.search(r'<p class="intro">(.*?)</p>', html, re.S)
    assert intro is not None
    hints = intro.group(1)
    pointer = re.search(r'<span class="for-pointer">(.*?)</span>\s*<span class="for-touch">', hints, re.S)
    touch = re.search(r'<span class="for-touch">(.*)', hints, re.S)
    assert pointer is not None and touch is not None
    assert "Drop photos" in pointer.group(1) and "Drop" not in touch.group(1) and "Tap" in touch.group(1)
    # Both name the button with its own markup: "Upload photos", shortened to "Upload" where it is.
    label = '<span class="narrow-hidden"> photos</span>'
    button = re.search(r'<label class="button button-primary upload-button"[^>]*>(.*?)</label>', html, re.S)
    assert button is not None and f"<span>Upload{label}</span>" in button.group(1)
    assert f"<strong>Upload{label}</strong>" in pointer.group(1)
    assert f"<strong>Upload{label}</strong>" in touch.group(1)
    css = (gallery.STATIC_DIR / "gallery.css").read_text()
    touch_rules = re.search(r"@media \(hover: none\) and \(pointer: coarse\) \{(.*?)\n\}", css, re.S)
    assert touch_rules is not None
    assert ".for-pointer { display: none; }" in touch_rules.group(1)
    assert ".for-touch { display: inline; }" in touch_rules.group(1)
    assert ".for-touch { display: none; }" in css


def test_load_more_shows_only_when_there_is_a_next_page() -> None:
    assert "hidden" not in Page(render(image(), next_cursor="0" * 20).body).by_id("load-more")
    assert "hidden" in Page(render(image()).body).by_id("empty")


def test_the_config_carries_the_limits_the_client_checks() -> None:
    settings = Settings(max_upload_bytes=3 * 1024 * 1024, admin_token="t")
    config = gallery.page_config({"images": [], "next_cursor": None}, settings)
    assert config["maxUploadBytes"] == 3 * 1024 * 1024 and config["maxUploadLabel"] == "3 MB"
    assert config["deletionEnabled"] is True
    assert "image/jpeg" in config["contentTypes"] and "image/svg+xml" not in config["contentTypes"]
    assert config["pageSize"] == 24
    assert gallery.page_config({"images": [], "next_cursor": None}, Settings())["deletionEnabled"] is False


def test_the_admin_controls_exist_only_when_deletion_is_enabled() -> None:
    assert 'id="admin-dialog"' not in render().body
    assert 'id="admin-dialog"' in render(settings=Settings(admin_token="t")).body
    assert "secret-x" not in render(settings=Settings(admin_token="secret-x")).body


def test_the_jinja_environment_is_built_once_with_autoescape() -> None:
    environment = gallery._environment()
    assert environment is gallery._environment()
    assert environment.autoescape is True


@pytest.mark.parametrize(
    ("size", "words"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1536, "1.5 KB"),
        (20 * 1024 * 1024, "20 MB"),
        (5 * 1024**3, "5 GB"),
    ],
)
def test_human_bytes(size: int, words: str) -> None:
    assert gallery.human_bytes(size) == words


# --- static assets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(gallery.ASSETS))
def test_each_allowed_asset_is_served_with_its_type_and_a_short_cache(name: str) -> None:
    response = gallery.asset_response(name)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == gallery.ASSETS[name]
    assert response.headers["Cache-Control"] == "public, max-age=300"
    text = (gallery.STATIC_DIR / name).read_text(encoding="utf-8")
    assert response.body == text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    assert gallery.asset_url(name) == f"static/{name}?v={digest}"


@pytest.mark.parametrize(
    "name",
    [
        "../app.py",
        "..%2Fapp.py",
        "gallery.css/../../app.py",
        "GALLERY.CSS",
        "",
        ".",
        "..",
        "gallery.css ",
        "templates/gallery.html",
        "/etc/passwd",
        "gallery.css\0",
    ],
)
def test_anything_not_on_the_allow_list_is_not_found(name: str) -> None:
    with pytest.raises(ImageshelfError) as raised:
        gallery.asset_response(name)
    assert raised.value.code == "not_found"


def test_every_file_in_static_is_on_the_allow_list() -> None:
    assert {p.name for p in gallery.STATIC_DIR.iterdir()} == set(gallery.ASSETS)


def test_the_script_never_writes_html_from_strings() -> None:
    script = (gallery.STATIC_DIR / "gallery.js").read_text()
    script = re.sub(r"^\s*//.*$", "", script, flags=re.M)  # comments may name what the code avoids
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


# --- the tile's one markup -----------------------------------------------------------------


class Node:
    """An element of parsed HTML: tag, attributes in order, children (text as ``str``)."""

    def __init__(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tag, self.attrs = tag, [(k, v or "") for k, v in attrs]
        self.children: list[Node | str] = []

    def attr(self, name: str) -> str:
        return dict(self.attrs).get(name, "")

    def find_all(self, test: Any) -> list[Node]:
        found = [self] if test(self) else []
        for child in self.children:
            if isinstance(child, Node):
                found += child.find_all(test)
        return found

    def without(self, test: Any) -> Node:
        """A copy without the descendants ``test`` picks (as the script removes sections)."""
        copy = Node(self.tag, self.attrs)
        copy.children = [
            c if isinstance(c, str) else c.without(test)
            for c in self.children
            if isinstance(c, str) or not test(c)
        ]
        return copy


class Tree(HTMLParser):
    """The page as a tree, ``<template>`` content included (the tests look into it)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", [])
        self._stack = [self.root]
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, attrs)
        self._stack[-1].children.append(node)
        if tag not in VOID:
            self._stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Node(tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            assert self._stack.pop().tag == tag

    def handle_data(self, data: str) -> None:
        if data.strip():
            self._stack[-1].children.append(data.strip())


def macro_tile(view: dict[str, Any]) -> str:
    """One tile drawn by templates/card.html's macro, as the page draws the first page's."""
    return str(gallery._environment().get_template("card.html").module.card(view))


def card_template(html: str) -> Node:
    (template,) = Tree(html).root.find_all(lambda n: n.tag == "template")
    (card,) = [c for c in template.children if isinstance(c, Node)]
    return card


def assert_filled_from(template: Node, tile: Node, path: str = "li") -> None:
    """``tile`` is ``template`` with values in its empty slots: the same elements, the same attributes
    in the same order, the same fixed values and text; only what the template leaves empty differs."""
    assert tile.tag == template.tag, path
    assert [k for k, _ in tile.attrs] == [k for k, _ in template.attrs], path
    for (name, fixed), (_, value) in zip(template.attrs, tile.attrs, strict=True):
        if fixed:
            assert value == fixed, f"{path}[{name}]"
    assert len(tile.children) == len(template.children) or (
        not template.children and all(isinstance(c, str) for c in tile.children)  # text in an empty slot
    ), path
    for i, (want, got) in enumerate(zip(template.children, tile.children, strict=False)):
        if isinstance(want, str):
            assert got == want, path
        else:
            assert isinstance(got, Node), f"{path}/{i}"
            assert_filled_from(want, got, f"{path}/{want.tag}[{i}]")


def test_the_page_holds_exactly_one_card_template_with_a_section_per_state() -> None:
    html = render(image()).body
    assert html.count("<template") == 1
    page = Page(html)
    assert list(page.templates) == ["card-template"]
    tags = page.templates["card-template"]
    assert [a["class"] for t, a in tags if t == "li"] == ["card"]
    assert [a["data-tile"] for _, a in tags if "data-tile" in a] == ["ready", "pending", "failed", "upload"]
    assert [t for t, a in tags if "delete-button" in (a.get("class") or "")] == ["button"]
    # The template is not part of the page: it adds no tile to the grid nor a second lazy image.
    assert len(page.find("li", **{"class": "card"})) == 1


@pytest.mark.parametrize(
    "shown",
    [
        image(),
        image(status="pending"),
        image(status="failed", error={"code": "corrupt_image", "message": "m"}),
        image(status="failed"),  # no error record
        image(renditions=[]),  # ready without renditions: drawn as failed
        image(filename=NASTY),
        image(original={}),  # no original yet: "Untitled"
    ],
    ids=[
        "ready",
        "pending",
        "failed",
        "failed-without-code",
        "ready-without-renditions",
        "markup",
        "untitled",
    ],
)
def test_a_server_rendered_tile_is_the_card_template_filled(shown: dict[str, Any]) -> None:
    html = render(shown).body
    template = card_template(html)
    (grid,) = Tree(html).root.find_all(lambda n: n.attr("id") == "grid")
    tiles = grid.find_all(lambda n: n.tag == "li")
    failed = shown["status"] == "failed" or (shown["status"] == "ready" and not shown["renditions"])
    if failed:
        # Not in the public grid; the same macro draws it (the script clones the template for it).
        assert tiles == []
        tiles = Tree(macro_tile(gallery.card(shown, gallery.error_words(Settings())))).root.find_all(
            lambda n: n.tag == "li"
        )
    (tile,) = tiles
    status = tile.attr("data-status")
    assert status == ("failed" if failed else shown["status"])
    # What the script does to a clone: keep the section of the card's status, drop the admin button.
    pruned = template.without(
        lambda n: n.attr("data-tile") not in ("", status) or "delete-button" in n.attr("class").split()
    )
    assert_filled_from(pruned, tile)
    assert tile.attr("data-id") == shown["id"]


def test_the_tile_markup_is_written_only_in_card_html() -> None:
    for path in gallery.TEMPLATES_DIR.iterdir():
        if path.name != "card.html":
            text = path.read_text()
            assert not re.search(r'class="(card|tile|caption)\b', text), path.name
    script = (gallery.STATIC_DIR / "gallery.js").read_text()
    code = re.sub(r"^\s*//.*$", "", script, flags=re.M)
    # The script makes no element of its own: every tile (and its delete button) is a clone of the template.
    for maker in ("createElement", "createElementNS", "DOMParser", "createContextualFragment", "el("):
        assert maker not in code, maker
    assert '$("card-template")' in code
    build = code[code.index("function buildCard(") :]
    assert "cloneCard(" in build[: build.index("\n  }\n")]


def test_the_script_no_longer_believes_presigned_urls_change_on_every_request() -> None:
    script = (gallery.STATIC_DIR / "gallery.js").read_text()
    assert "change on every request" not in script
    assert "fresher presigned URLs" not in script
    # The signature that decides whether to refill a card includes the rendition URLs.
    signature = script[script.index("function signature(") :]
    assert "r.url" in signature[: signature.index("\n  }\n")]


# --- formats from the registry --------------------------------------------------------------


def test_the_script_previews_exactly_the_registrys_previewable_types() -> None:
    config = gallery.page_config({"images": [], "next_cursor": None}, Settings())
    previewable = [f for f in formats.FORMATS if f.previewable]
    assert config["previewTypes"] == [m for f in previewable for m in (f.mime, *f.aliases)]
    assert "image/tiff" not in config["previewTypes"] and "image/png" in config["previewTypes"]
    assert "image/x-ms-bmp" in config["previewTypes"]  # aliases too: browsers may report them
    script = (gallery.STATIC_DIR / "gallery.js").read_text()
    assert "new Set(config.previewTypes)" in script
    assert not re.search(r"[\"'`]image/", script), "no MIME type is written in the script"


def test_the_upload_types_and_their_names_come_from_the_registry() -> None:
    config = gallery.page_config({"images": [], "next_cursor": None}, Settings())
    assert config["contentTypes"] == list(formats.upload_types())
    page = Page(render().body)
    assert page.by_id("file-input")["accept"] == ",".join(formats.upload_types())
    assert formats.labels() in render().body
    words = gallery.error_words(Settings())
    assert (
        words["unsupported_format"]
        == f"This kind of image isn't supported. Choose a {formats.labels()} image."
    )


# --- origins ------------------------------------------------------------------------------


def test_the_policy_takes_the_origins_of_the_urls_storage_answers() -> None:
    assert gallery.origins(ENDPOINTS) == {
        "upload": "http://127.0.0.1:9000",
        "image": "https://cdn.example.com",
    }
    assert gallery.origins({"upload": "https://up.s3.amazonaws.com/", "image": "http://[::1]:9000/b/"}) == {
        "upload": "https://up.s3.amazonaws.com",
        "image": "http://[::1]:9000",
    }
    assert gallery.origins({"upload": "", "image": "/relative"}) == {"upload": "", "image": ""}


@pytest.mark.usefixtures("aws")
def test_storage_says_where_browsers_reach_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(upload_bucket="up-bucket", images_bucket="img-bucket")
    assert endpoint_urls(settings) == {
        "upload": "https://up-bucket.s3.amazonaws.com/",
        "image": "https://img-bucket.s3.amazonaws.com/",
    }
    cdn = Settings(upload_bucket="up-bucket", public_base_url="https://cdn.example.com/photos")
    assert endpoint_urls(cdn)["image"] == "https://cdn.example.com/photos/"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    storage.reset_clients()
    assert endpoint_urls(settings) == {
        "upload": "http://127.0.0.1:9000/up-bucket",
        "image": "http://127.0.0.1:9000/img-bucket/",
    }


# --- through the app ----------------------------------------------------------------------


def test_routes_serve_the_page_and_assets(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "endpoint_urls", endpoint_urls)  # where moto's S3 is, really
    response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http")
    endpoints = gallery.origins(endpoint_urls(get_settings()))
    assert f"img-src 'self' {endpoints['image']} data: blob:;" in csp
    assert f"connect-src 'self' {endpoints['upload']};" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = response.body.decode()
    script = re.search(r'src="(static/gallery\.js\?v=[0-9a-f]+)"', html)
    assert script is not None
    asset = client.http.get("/" + script.group(1))
    assert asset.status_code == 200
    assert asset.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert asset.headers["Cache-Control"] == "public, max-age=300"
    missing = client.http.get("/static/app.py")
    assert missing.status_code == 404
    assert json.loads(missing.body)["error"]["code"] == "not_found"


def test_a_tile_offers_avif_and_webp_sources_before_its_jpeg() -> None:
    shown = image()
    large, thumb = shown["renditions"]
    for r, name in ((large, "l"), (thumb, "t")):
        r["formats"] = [{"content_type": "image/avif", "url": f"{name}.avif", "bytes": 1}]
    thumb["formats"].append({"content_type": "image/webp", "url": "t.webp", "bytes": 2})
    page = Page(render(shown).body)
    sources = {s["type"]: s["srcset"] for s in page.find("source") if s.get("srcset")}
    assert sources["image/avif"] == "t.avif 400w, l.avif 1200w"
    # the large one has no WebP: that source falls back to its JPEG
    assert sources["image/webp"] == f"t.webp 400w, {large['url']} 1200w"


@pytest.mark.parametrize(
    ("avif", "webp", "first"),
    [(900, 1200, "image/avif"), (1500, 1100, "image/webp"), (1000, 1000, "image/avif")],
)
def test_the_smaller_of_avif_and_webp_is_offered_first(avif: int, webp: int, first: str) -> None:
    """A browser takes the first <source> type it can show: that must be the smaller file for
    this image, which for some pictures is the WebP (AVIF wins a tie)."""
    shown = image()
    large, thumb = shown["renditions"]
    thumb["formats"] = [
        {"content_type": "image/avif", "url": "t.avif", "bytes": avif},
        {"content_type": "image/webp", "url": "t.webp", "bytes": webp},
    ]
    large["formats"] = [{"content_type": "image/avif", "url": "l.avif", "bytes": 5000}]
    types = [s["type"] for s in Page(render(shown).body).find("source") if s.get("srcset")]
    assert types[0] == first and sorted(types) == ["image/avif", "image/webp"]
