"""Every example in README.md and docs/*.md that a user would run, run as printed, against a live stack.

The blocks are read from the Markdown when the tests are collected (``tests/docblocks.py``),
never copied here, so an example that is wrong in the docs fails here.

**What a block is** comes from its fence's info string:

- ```` ```sh ````, ```` ```bash ````: run with ``bash -euo pipefail`` (a failing line, an unset
  variable or a failing command in a pipe fails the block);
- ```` ```python ````: run with the ``.venv``'s Python, where ``make run`` installs ``imageshelf_client``;
- ```` ```json ````: parsed (a JSON value, or the members of an object: a fragment to paste);
- ```` ``` ```` (no language) or ```` ```text ````: read, not run: printed output, diagrams,
  layouts. Such a block must not read like a command (``make …``, ``curl …``, ``$ …``); tag it;
- any other language fails until this module learns what to do with it.

**Markers**, an HTML comment on the line before the fence (the reader never sees it), for the
blocks that do not run here; each shows up as a skipped test with its reason:

- ``<!-- docs-test: needs-aws -->``: needs an AWS account (deploy, destroy, the SSM secrets, the
  operations function): ``tests/test_docs_aws.py`` runs these as printed against moto's server,
  in the deploy rehearsal's harness;
- ``<!-- docs-test: skip <reason> -->``: anything else, with the reason (e.g. ``make run`` is the
  stack every e2e test runs; ``make test`` is this suite).

Nothing else escapes: ``test_every_block_is_run_checked_or_marked`` fails on any block that is
none of these.

**How blocks run.** One stack (``tools/devserver.py``, started as the e2e tests start it, with
``ADMIN_TOKEN=change-me`` as the README says to run it) serves every block. Before the examples,
three photos are already on the shelf; no example may delete them. The blocks of one file run in
order in one folder (state carries over, as when a reader follows along): the reader's clone
(this checkout's top-level files linked in, ``.venv`` included, but not ``.git``, ``.data`` or
build output), plus what the examples name: ``cat.jpg``, ``dog.png`` and ``my photo+1.jpg``
(real images made with Pillow), and a home folder with ``~/Pictures/holiday``. Python blocks are
fed to ``.venv/bin/python`` on stdin, as if pasted, so the folder is on ``sys.path``. ``PATH`` is
the system's plus the tools a reader is assumed to have installed: ``aws`` (awscli, pinned in
requirements-dev.txt) and ``imageshelf`` (``pip install -e .``). No ``AWS_*`` variables (but
``AWS_EC2_METADATA_DISABLED``, so nothing reaches for the network) and no ``~/.aws``.

The stack listens on free ports, not the documented 8000 and 9000, so that tests and a
reader's own ``make run`` never collide. One function, ``docblocks.localize``, rewrites
``127.0.0.1:8000`` and ``127.0.0.1:9000`` in a block's text before it runs; for the tools that
find the stack by default, the variables the README names point there (``IMAGESHELF_URL`` for
the client, ``PORT`` and ``S3_PORT`` for the local tools). The rest of each block runs exactly
as printed.

**What a block must do:** exit 0; print no line that starts like JSON without parsing; print no
API error (``{"error": {...}}``) and no S3 error (``<Error><Code>``); send the embedded S3 only
presigned requests that real S3 would accept (moto checks neither signatures nor POST policies:
``docblocks.S3Referee`` recomputes them from moto's request recording, so a PUT whose signed
``Content-Length`` differs from the file fails here as it would on AWS); and leave the photos
that were already on the shelf alone.

**Screenshots.** ``test_the_docs_screenshots_show_a_first_run`` opens a first run (no
``ADMIN_TOKEN``) in Chromium and checks that docs/gallery.png and docs/gallery-phone.png show its
top of the page (bar, buttons, hint) as it is now. ``UPDATE_SCREENSHOTS=1`` retakes them, with
real photos from the benchmark's corpus (``.venv/bin/python -m bench.corpus`` fetches it).
"""

from __future__ import annotations

import io
import os
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from tests.docblocks import (
    LOOKS_LIKE_A_COMMAND,
    Block,
    MarkdownError,
    S3Referee,
    api_errors,
    collect,
    extract,
    json_values,
    localize,
    parse_json_block,
    s3_errors,
)
from tests.support import Stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ARTIFACTS = ROOT / "test-artifacts"
VENV = ROOT / ".venv"
ADMIN_TOKEN = "change-me"  # the README's `ADMIN_TOKEN=change-me make run`
BLOCK_TIMEOUT = 180  # seconds; `make package` with no cached wheels fetches them from PyPI


BLOCKS, PROBLEMS = collect(ROOT)


# --- what the examples assume exists ------------------------------------------------------------


def photo(width: int, height: int, seed: int, kind: str = "JPEG") -> bytes:
    """A photo-like picture (sky, sun, hills, grain): real image bytes, as a camera's would be."""
    rng = random.Random(seed)
    sky = tuple(rng.randrange(90, 250) for _ in range(3))
    ground = tuple(rng.randrange(20, 120) for _ in range(3))
    ramp = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), ground), Image.new("RGB", (width, height), sky), ramp
    )
    draw = ImageDraw.Draw(image)
    r = min(width, height) // 10
    x, y = rng.randrange(r, width - r), rng.randrange(r, height // 2)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 240, 200))
    hills = [(0, height)] + [(width * i // 8, int(height * rng.uniform(0.55, 0.75))) for i in range(9)]
    draw.polygon([*hills, (width, height)], fill=ground)
    grain = Image.effect_noise((width, height), 12).convert("RGB")
    image = Image.blend(image, grain, 0.06).filter(ImageFilter.GaussianBlur(0.6))
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": 85} if kind == "JPEG" else {}))
    return buffer.getvalue()


# Not linked into the example folder: state and output of this checkout, which examples must not
# read or write.
NOT_LINKED = {
    ".git",
    ".data",
    ".cache",
    "build",
    "test-artifacts",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
}


def make_workspace(folder: Path) -> Path:
    """The folder a reader runs the examples in: their clone (the checkout's files, linked), with
    the pictures the examples name; and a home folder beside it."""
    work = folder / "work"
    home = folder / "home"
    tools = folder / "bin"
    for path in (work, home / "Pictures" / "holiday", tools):
        path.mkdir(parents=True)
    (work / "cat.jpg").write_bytes(photo(1200, 800, seed=1))
    (work / "dog.png").write_bytes(photo(640, 480, seed=2, kind="PNG"))
    (work / "my photo+1.jpg").write_bytes(photo(900, 600, seed=3))
    for index, name in enumerate(["beach.jpg", "harbour.jpg", "old town.jpeg", "sunset.png"]):
        kind = "PNG" if name.endswith(".png") else "JPEG"
        (home / "Pictures" / "holiday" / name).write_bytes(photo(800, 600, seed=10 + index, kind=kind))
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED and not (work / entry.name).exists():
            (work / entry.name).symlink_to(entry)
    # What a reader has installed: the AWS CLI, and the `imageshelf` command (`pip install -e .`).
    for name in ("aws", "imageshelf"):
        found = VENV / "bin" / name
        if found.exists():
            (tools / name).symlink_to(found)
    return work


@dataclass
class Shelf:
    """The stack the examples run against, the photos already on it, and the S3 referee."""

    stack: Stack
    referee: S3Referee
    tmp: Path
    earlier: dict[str, str] = field(default_factory=dict)  # id -> filename
    workspaces: dict[Path, Path] = field(default_factory=dict)

    def workspace(self, doc: Path) -> Path:
        if doc not in self.workspaces:
            self.workspaces[doc] = make_workspace(self.tmp / str(doc).replace("/", "_"))
        return self.workspaces[doc]

    def env(self, work: Path) -> dict[str, str]:
        tools = work.parent / "bin"
        return {
            "HOME": str(work.parent / "home"),
            "PATH": f"{tools}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": str(self.tmp),
            "TERM": "dumb",
            # The addresses the docs leave to defaults, through the variables the README names
            # for them (see the module docstring).
            "IMAGESHELF_URL": self.stack.url,
            "PORT": str(self.stack.port),
            "S3_PORT": str(self.stack.s3_port),
            # Without credentials, awscli would ask the EC2 metadata service: no network here.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def missing_earlier_photos(self) -> list[str]:
        return [
            f"{name} ({image_id})"
            for image_id, name in self.earlier.items()
            if requests.get(f"{self.stack.url}/images/{image_id}", timeout=10).status_code != 200
        ]


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shelf]:
    tmp = tmp_path_factory.mktemp("docs")
    recording = tmp / "s3-requests.jsonl"
    stack = Stack(
        data_dir=tmp / "data",
        admin_token=ADMIN_TOKEN,
        env={"MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(recording)},
    ).start()
    try:
        running = Shelf(stack=stack, referee=S3Referee(recording), tmp=tmp)
        running.referee.skip_to_end()
        for index in range(3):
            name = f"earlier-{index + 1}.jpg"
            image_id = stack.upload(photo(600, 400, seed=100 + index), name)
            assert stack.wait(image_id)["status"] == "ready"
            running.earlier[image_id] = name
        # The referee passes the browser-style uploads the stack's own helper just made.
        assert running.referee.judge() == [] and running.referee.checked >= 3
        yield running
    finally:
        stack.stop()


# --- the blocks ---------------------------------------------------------------------------------


def run_block(block: Block, shelf: Shelf) -> tuple[str, subprocess.CompletedProcess[str]]:
    work = shelf.workspace(block.path)
    script = localize(block.text, shelf.stack.url, shelf.stack.s3_url)
    scripts = shelf.tmp / "scripts"
    scripts.mkdir(exist_ok=True)
    name = f"{str(block.path).replace('/', '_')}_line{block.line}"
    if block.kind == "shell":
        file = scripts / f"{name}.sh"
        file.write_text(script, encoding="utf-8")
        command, given = ["bash", "-e", "-u", "-o", "pipefail", str(file)], ""
    else:  # from stdin, as if pasted: the folder it runs in is on sys.path, as in a REPL
        command, given = [str(VENV / "bin" / "python"), "-"], script
    try:
        result = subprocess.run(
            command,
            cwd=work,
            env=shelf.env(work),
            input=given,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired as expired:
        output = [
            (o.decode("utf-8", "replace") if isinstance(o, bytes) else o or "")[-2000:]
            for o in (expired.stdout, expired.stderr)
        ]
        pytest.fail(
            f"{block.where}: still running after {BLOCK_TIMEOUT}s (a command that runs until Ctrl-C "
            f"is marked skip, or shown with its run-once option)\n--- the block, as run\n{script}"
            f"--- stdout\n{output[0]}\n--- stderr\n{output[1]}",
            pytrace=False,
        )
    return script, result


def report(block: Block, script: str, result: subprocess.CompletedProcess[str], problem: str) -> str:
    return (
        f"{block.where}: {problem}\n"
        f"--- the block, as run (in {block.path}'s example folder)\n{script}"
        f"--- exit status {result.returncode}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


def answer_schema(value: Any) -> str | None:
    """The openapi.yaml schema a ```json example shows an answer of, by its shape (None for the
    other examples: requests, IAM statements, configuration)."""
    if not isinstance(value, dict):
        return None
    keys = set(value)
    if keys == {"error"}:
        return "Error"
    if {"id", "method", "expires_at"} <= keys:
        return "UploadGrant"
    if {"images", "next_cursor"} <= keys:
        return "ImagePage"
    if {"id", "status", "original"} <= keys:
        return "Image"
    if {"id", "format", "mode", "has_location"} <= keys:
        return "ImageInfo"
    return None


def documented_schema_errors(value: Any, schema: str) -> list[str]:
    """Why an example does not match openapi.yaml's ``schema`` ([] if it does). Formats are not
    checked: examples shorten URLs to "…"."""
    from jsonschema import Draft202012Validator

    from tests.test_openapi import BASE, REGISTRY

    validator = Draft202012Validator({"$ref": f"{BASE}#/components/schemas/{schema}"}, registry=REGISTRY)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(value)
    ]


def test_an_outdated_example_answer_fails() -> None:
    """An Image example written before renditions listed their formats no longer matches."""
    image = {
        "id": "ybqvqv0176g13t2gkef2", "status": "ready", "created_at": "2026-11-23T13:04:59.864Z",
        "original": {"filename": "cat.jpg", "content_type": "image/jpeg", "bytes": 15629, "width": 1200,
                     "height": 800, "format": "JPEG", "frames": 1},
        "renditions": [{"name": "thumb", "url": "…", "width": 400, "height": 267,
                        "content_type": "image/jpeg", "bytes": 1490, "frames": 1}],
    }  # fmt: skip
    assert answer_schema(image) == "Image"
    assert any("'formats' is a required property" in e for e in documented_schema_errors(image, "Image"))
    image["renditions"][0]["formats"] = [{"content_type": "image/jpeg", "url": "…", "bytes": 1490}]
    assert documented_schema_errors(image, "Image") == []


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block(block: Block, request: pytest.FixtureRequest) -> None:
    if block.marker == "needs-aws":
        pytest.skip(f"{block.where} needs AWS: tests/test_docs_aws.py runs it against moto's server")
    if block.kind == "marked":
        pytest.skip(f"{block.where} marked {block.marker}{': ' + block.reason if block.reason else ''}")
    if block.kind == "text":
        assert not LOOKS_LIKE_A_COMMAND.search(block.text), (
            f"{block.where}: an untagged block that reads like a command; tag it ```sh (it will run) "
            "or mark it (see tests/test_docs.py)"
        )
        return
    if block.kind == "json":
        try:
            value = parse_json_block(block.text)
        except ValueError as error:
            pytest.fail(f"{block.where}: a ```json block that is not JSON: {error}\n{block.text}")
        schema = answer_schema(value)
        if schema:
            errors = documented_schema_errors(value, schema)
            assert not errors, f"{block.where}: this example {schema} does not match openapi.yaml: {errors}"
        return
    assert block.kind in ("shell", "python"), (
        f"{block.where}: a ```{block.lang} block: tests/test_docs.py does not know how to check it; "
        "use sh, bash, python, json or no language, or mark it"
    )
    shelf: Shelf = request.getfixturevalue("shelf")
    shelf.referee.skip_to_end()
    script, result = run_block(block, shelf)

    def check(ok: object, problem: str) -> None:
        if not ok:
            pytest.fail(report(block, script, result, problem), pytrace=False)

    check(result.returncode == 0, f"exited with {result.returncode}")
    values, broken = json_values(result.stdout)
    if block.kind == "shell":
        check(not broken, f"printed JSON that does not parse: {broken[:3]}")
    errors = api_errors(values)
    check(not errors, f"the API answered with an error: {errors}")
    refused = s3_errors(result.stdout)
    check(not refused, f"S3 answered with an error: {refused}")
    refusals = shelf.referee.judge()
    check(not refusals, f"real S3 would refuse: {refusals}")
    gone = shelf.missing_earlier_photos()
    check(not gone, f"deleted photos it did not upload, which were on the shelf before: {gone}")


def test_every_block_is_run_checked_or_marked() -> None:
    assert not PROBLEMS, PROBLEMS
    unaccounted = [
        f"{b.where} (```{b.lang})"
        for b in BLOCKS
        if b.kind == "unknown" or (b.kind == "text" and LOOKS_LIKE_A_COMMAND.search(b.text))
    ]
    assert not unaccounted, f"blocks that are neither run, checked nor marked: {unaccounted}"
    assert any(b.kind == "shell" for b in BLOCKS) and any(b.kind == "python" for b in BLOCKS)


def test_a_new_example_cannot_escape(tmp_path: Path) -> None:
    """What the harness does with blocks it cannot run: each is reported, none silently passes."""
    doc = tmp_path / "new.md"
    doc.write_text(
        "```console\n$ make run\n```\n\n"
        "```\ncurl -s http://127.0.0.1:8000/ping\n```\n\n"
        "```\nimageshelf is running\n```\n\n"
        "<!-- docs-test: needs-aws -->\n```sh\nmake deploy\n```\n"
    )
    blocks = extract(doc)
    assert [b.kind for b in blocks] == ["unknown", "text", "text", "marked"]
    assert LOOKS_LIKE_A_COMMAND.search(blocks[1].text) and not LOOKS_LIKE_A_COMMAND.search(blocks[2].text)
    for wrong in (
        "<!-- docs-test: skip -->\n```sh\nls\n```\n",  # a skip without a reason
        "<!-- docs-test: needs-aws -->\nSome prose.\n```sh\nls\n```\n",  # not right before a block
        "<!-- docs-test: maybe -->\n```sh\nls\n```\n",  # unknown marker
        "```sh\nls\n",  # never closed
    ):
        doc.write_text(wrong)
        with pytest.raises(MarkdownError):
            extract(doc)


def test_the_referee_refuses_what_real_s3_refuses(shelf: Shelf) -> None:
    """The check that catches a wrong upload example: a PUT of other bytes than were signed,
    and a form POST with a field the policy does not allow, are accepted by moto but refused here."""
    stack = shelf.stack
    data = photo(300, 200, seed=7)
    shelf.referee.skip_to_end()
    grant = requests.post(
        f"{stack.url}/uploads",
        json={"filename": "x.jpg", "content_type": "image/jpeg", "size": len(data) + 5, "method": "put"},
        timeout=10,
    ).json()
    headers = {k: v for k, v in grant["headers"].items() if k != "Content-Length"}
    assert requests.put(grant["url"], data=data, headers=headers, timeout=10).ok  # moto takes it
    refusals = shelf.referee.judge()
    assert len(refusals) == 1 and "SignatureDoesNotMatch" in refusals[0], refusals

    grant = requests.post(
        f"{stack.url}/uploads", json={"filename": "y.jpg", "content_type": "image/jpeg"}, timeout=10
    ).json()
    fields = {**grant["fields"], "acl": "public-read"}
    files = {"file": ("y.jpg", data, "image/jpeg")}
    assert requests.post(grant["url"], data=fields, files=files, timeout=10).status_code < 300
    refusals = shelf.referee.judge()
    assert len(refusals) == 1 and "not covered by the policy" in refusals[0], refusals

    sent = requests.post(grant["url"], data=grant["fields"], files=files, timeout=10)
    assert sent.status_code < 300 and shelf.referee.judge() == []
    for image_id in (grant["id"],):
        stack.wait(image_id)


# --- screenshots --------------------------------------------------------------------------------

# Real photographs from the benchmark's corpus (Debian's mate-backgrounds and
# plasma-workspace-wallpapers; bench/corpus.py), under the names a person might give them.
REAL_PHOTOS = {
    "mate-LadyBird.jpg": "ladybird.jpg",
    "plasma-BytheWater-2560x1600.jpg": "by-the-water.jpg",
    "mate-YellowFlower.jpg": "yellow-flower.jpg",
    "plasma-Path-2560x1600.jpg": "forest-path.jpg",
    "mate-Dune.jpg": "dune.jpg",
    "plasma-ColorfulCups-2560x1600.jpg": "cups.jpg",
    "mate-Storm.jpg": "storm.jpg",
    "plasma-EveningGlow-2560x1600.jpg": "boats-at-dusk.jpg",
    "mate-RainDrops.jpg": "rain-drops.jpg",
    "plasma-Kite-2560x1600.jpg": "kite.jpg",
    "mate-FreshFlower.jpg": "marigold.jpg",
    "plasma-FallenLeaf-2560x1600.jpg": "fallen-leaf.jpg",
    "mate-Aqua.jpg": "drop.jpg",
    "plasma-Grey-2560x1600.jpg": "facade.jpg",
    "plasma-summer_1am-2560x1600.jpg": "summer-night.jpg",
}
CORPUS = ROOT / ".cache" / "bench" / "corpus"
SCREENSHOTS = {"gallery.png": "desktop", "gallery-phone.png": "phone"}
CLEAR_DIFFERENCE = 80  # levels (0-255) in any channel
TOLERANCE = 40  # pixels: a word such as "Admin" changes several hundred


def real_photos() -> list[tuple[str, bytes]]:
    missing = [name for name in REAL_PHOTOS if not (CORPUS / name).exists()]
    if missing:
        pytest.fail(f"the real photos are missing ({missing[:3]}…): run .venv/bin/python -m bench.corpus")
    shrunk = []
    for source, name in REAL_PHOTOS.items():
        with Image.open(CORPUS / source) as original:  # phone-sized, not a 13 MP wallpaper
            original.draft("RGB", (1600, 1600))
            image = original.convert("RGB")
        image.thumbnail((2000, 2000))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88)
        shrunk.append((name, buffer.getvalue()))
    return shrunk


def changed_pixels(
    a: Image.Image, b: Image.Image, height: int
) -> tuple[int, tuple[int, int, int, int] | None]:
    """How many pixels of the top ``height`` rows differ clearly (not by the docs' 256-colour
    dithering, which moves none by more than 64 levels), and the box around them."""
    box = (0, 0, min(a.width, b.width), height)
    r, g, bl = ImageChops.difference(a.convert("RGB").crop(box), b.convert("RGB").crop(box)).split()
    mask = ImageChops.lighter(ImageChops.lighter(r, g), bl).point(
        lambda v: 255 if v > CLEAR_DIFFERENCE else 0
    )
    return mask.histogram()[255], mask.getbbox()


def save_for_docs(path: Path, target: Path, limit: int = 280_000) -> None:
    """A palette copy, dithered so the photos keep their gradients, with as many colours as fit
    under ``limit`` bytes (the README's screenshots stay well under 300 KB)."""
    with Image.open(path) as full:
        rgb = full.convert("RGB")
        buffer = io.BytesIO()
        for colours in (256, 192, 160, 128, 96, 64):
            palette = rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
            small = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
            buffer = io.BytesIO()
            small.save(buffer, "PNG", optimize=True)
            if len(buffer.getvalue()) <= limit:
                break
        target.write_bytes(buffer.getvalue())


@pytest.mark.browser
def test_the_docs_screenshots_show_a_first_run(tmp_path: Path) -> None:
    from tests.test_browser import DESKTOP, PHONE
    from tools.stack import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    update = bool(os.environ.get("UPDATE_SCREENSHOTS"))
    # Only the top of the page is compared, so any photos will do to make the grid.
    photos = (
        real_photos()
        if update
        else [(f"photo-{i}.jpg", photo(900, 600, seed=i)) for i in range(len(REAL_PHOTOS))]
    )
    first_run = Stack(data_dir=tmp_path / "data", admin_token="").start()  # `make run`, no token
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(pool.map(lambda p: first_run.upload(p[1], p[0]), reversed(photos)))
        assert all(first_run.wait(i, timeout=60)["status"] == "ready" for i in ids)
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for docs_name, layout in SCREENSHOTS.items():
                viewport = DESKTOP if layout == "desktop" else PHONE
                extra: dict[str, Any] = {"is_mobile": True, "has_touch": True} if layout == "phone" else {}
                context = browser.new_context(viewport=viewport, **extra)
                page = context.new_page()
                page.goto(first_run.url + "/")
                page.wait_for_function(
                    "() => Array.from(document.querySelectorAll('#grid img'))"
                    ".slice(0, 12).every(i => i.complete && i.naturalWidth > 0)"
                )
                # What a first run shows: uploading, and no Admin button without ADMIN_TOKEN.
                assert page.locator("#admin-button").count() == 0
                assert page.locator("label.upload-button").is_visible()
                grid = page.locator("#grid").bounding_box()
                assert grid is not None, "the first run shows a grid of photos"
                grid_top = int(grid["y"])
                fresh = ARTIFACTS / f"docs-{docs_name}"
                page.screenshot(path=str(fresh), animations="disabled")
                context.close()
                if update:
                    save_for_docs(fresh, DOCS / docs_name)
                documented = DOCS / docs_name
                assert documented.stat().st_size < 300_000, f"{documented} is too large for the README"
                with Image.open(fresh) as now, Image.open(documented) as shown:
                    assert shown.size == now.size, f"{documented} is {shown.size}, a {layout} page {now.size}"
                    changed, where = changed_pixels(now, shown, grid_top)
                assert changed <= TOLERANCE, (
                    f"docs/{docs_name} no longer shows what a first run shows above the photos: "
                    f"{changed} pixels differ, within {where} (today's page: {fresh}). Retake it: "
                    "UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_docs.py -k screenshots"
                )
            browser.close()
    finally:
        first_run.stop()
