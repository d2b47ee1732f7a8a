"""The ``imageshelf`` command: arguments, output for people and for scripts, exit status,
importing a folder of 200 photos into the local stack, and importing it again (or after an
interruption) without sending twice what is already on the shelf."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imageshelf_client import manifest as manifests
from imageshelf_client.cli import build_parser, main
from tests.support import Stack, jpeg

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test remembers its imports in a folder of its own, never in the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


def run(*argv: str) -> tuple[int, str, str]:
    """Run the command in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def make_photos(folder: Path, count: int, seed: int = 7) -> int:
    """``count`` small JPEGs and PNGs (64-400 px) in nested folders; returns their total bytes."""
    rng = random.Random(seed)
    total = 0
    for index in range(count):
        width, height = rng.randint(64, 400), rng.randint(64, 400)
        image = Image.new(
            "RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        )
        image.paste((255, 255, 255), (0, 0, width // 3, height // 3))
        path = folder / f"album{index % 4}" / f"photo-{index:03d}.{'png' if index % 5 == 0 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        total += path.stat().st_size
    return total


# --- arguments ----------------------------------------------------------------------------------


def test_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--url", "http://x", "--json", "list", "--limit", "5"])
    after = parser.parse_args(["list", "--url", "http://x", "--json", "--limit", "5"])
    assert (
        (before.url, before.json, before.limit)
        == (after.url, after.json, after.limit)
        == ("http://x", True, 5)
    )
    assert parser.parse_args(["import", "photos"]).wait is True
    assert parser.parse_args(["upload", "a.jpg"]).wait is False
    render = parser.parse_args(
        ["render", "sample", "--filter", "sepia", "--filter", "blur:2", "--render-key", "k"]
    )
    assert (render.filters, render.render_key, render.output) == (["sepia", "blur:2"], "k", None)


@pytest.mark.parametrize("argv", [[], ["upload"], ["import"], ["frobnicate"], ["import", "d", "--jobs", "0"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_an_unreachable_server_is_one_clear_error() -> None:
    code, out, err = run("--url", "http://127.0.0.1:9", "list")
    assert code == 1 and out == ""
    assert "Could not reach http://127.0.0.1:9/images" in err and "(connection_error)" in err


def test_import_of_a_folder_without_images_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    code, out, _ = run("import", str(tmp_path), "--url", "http://127.0.0.1:9", "--json")
    assert code == 1
    assert (
        json.loads(out)["error"]["code"] == "invalid_request"
        and "No images in" in json.loads(out)["error"]["message"]
    )


def test_the_module_runs_as_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "imageshelf_client", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for command in ("upload", "import", "list", "get", "render", "info", "delete"):
        assert command in done.stdout


# --- against the shared local stack -------------------------------------------------------------


@pytest.mark.e2e
def test_upload_wait_json_then_list_get_and_delete(stack: Stack, tmp_path: Path) -> None:
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"cli-{index}.jpg")
        paths[-1].write_bytes(jpeg(200 + index, 100))
    code, out, _ = run("upload", *map(str, paths), "--wait", "--json", "--url", stack.url)
    assert code == 0
    summary = json.loads(out)
    assert (summary["uploaded"], summary["ready"], summary["failed"]) == (3, 3, 0)
    assert [r["path"] for r in summary["results"]] == list(map(str, paths))  # in the order given
    ids = [r["id"] for r in summary["results"]]

    code, out, _ = run("--url", stack.url, "list", "--limit", "3", "--json")
    newest = [i["id"] for i in json.loads(out)["images"]]
    assert code == 0 and set(newest) == set(ids) and newest == sorted(ids)  # newest first
    code, out, _ = run("--url", stack.url, "list", "--limit", "2")
    assert code == 0 and out.splitlines()[0].startswith(f"{newest[0]}  ready")
    assert f"imageshelf list --cursor {newest[1]}" in out

    code, out, _ = run("--url", stack.url, "get", ids[0], "--json")
    assert code == 0 and json.loads(out)["original"]["width"] == 200
    code, out, _ = run("--url", stack.url, "get", ids[0])
    assert code == 0 and "status:    ready" in out and "thumb:" in out

    code, _, err = run("--url", stack.url, "delete", ids[0])
    assert code == 1 and "(unauthorized)" in err and "IMAGESHELF_TOKEN" in err
    code, out, _ = run("--url", stack.url, "--token", stack.admin_token, "delete", ids[0], "0" * 20, "--json")
    assert code == 1  # one of the two was not found
    results = json.loads(out)["results"]
    assert results[0] == {"id": ids[0], "deleted": True, "error": None}
    assert results[1]["error"]["code"] == "not_found"
    code, out, _ = run("--url", stack.url, "get", ids[0], "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"


@pytest.mark.e2e
def test_failures_are_summarised_with_reasons_and_exit_1(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(jpeg(120, 90))
    (tmp_path / "fake.jpg").write_bytes(b"<html>not a photo</html>")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not named like an image: skipped")
    (tmp_path / ".hidden.jpg").write_bytes(jpeg(10, 10))
    code, out, err = run("import", str(tmp_path), "--url", stack.url, "--progress", "--method", "post")
    assert code == 1
    assert out.splitlines()[:2] == [
        "uploaded 2 of 3, ready 1, failed 2",
        "skipped 1 file not named like an image",
    ]
    assert f"failed: {tmp_path / 'empty.png'}: " in out and "(empty_file)" in out
    assert f"failed: {tmp_path / 'fake.jpg'} [" in out and "(not_an_image)" in out
    # tqdm's bars, forced on although stderr is not a terminal
    assert "uploaded" in err and "processed" in err and "100%" in err


@pytest.mark.e2e
def test_upload_without_wait_leaves_images_pending(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg(90, 90))
    code, out, err = run("upload", str(tmp_path / "a.jpg"), "--url", stack.url, "--json")
    assert code == 0 and err == ""  # no bars when stderr is not a terminal
    result = json.loads(out)["results"][0]
    assert result["status"] in ("pending", "ready") and result["error"] is None
    assert stack.wait(result["id"])["status"] == "ready"


# --- importing again --------------------------------------------------------------------------


def summary_of(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(*argv, "--json")
    return code, json.loads(out)


@pytest.mark.e2e
def test_import_again_skips_what_is_on_the_shelf_and_sends_what_is_not(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "holiday"
    make_photos(folder, 4)
    copy = folder / "album0" / "zz-copy.png"
    copy.write_bytes((folder / "album0" / "photo-000.png").read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    url = ("--url", stack.url)

    code, out, _ = run("import", str(folder), *url)
    assert code == 0
    assert out.splitlines() == [
        "uploaded 4 of 4, ready 4, failed 0",
        "skipped 1 duplicate of another file, 1 file not named like an image",
    ]

    code, out, _ = run("import", str(folder), *url)  # nothing changed: nothing is sent
    assert code == 0
    assert out.splitlines() == [
        "nothing new to upload",
        "skipped 4 already on the shelf (imported before; --force uploads them again), "
        "1 duplicate of another file, 1 file not named like an image",
    ]

    # A new photo, a renamed one (the same bytes: still on the shelf), and one deleted meanwhile.
    make_photos(folder / "later", 1, seed=99)
    (folder / "album1" / "photo-001.jpg").rename(folder / "album1" / "renamed.jpg")
    recorded = manifests.Manifest(stack.url).entries.values()
    deleted = next(e["id"] for e in recorded if e["path"].endswith("photo-002.jpg"))
    assert run("--url", stack.url, "--token", stack.admin_token, "delete", deleted)[0] == 0
    code, again = summary_of("import", str(folder), *url)
    assert code == 0
    sent = {Path(r["path"]).relative_to(folder).as_posix() for r in again["results"]}
    assert sent == {"later/album0/photo-000.png", "album2/photo-002.jpg"}
    assert (
        again["uploaded"],
        again["ready"],
        again["on_shelf"],
        again["duplicates"],
        again["not_images"],
    ) == (
        2,
        2,
        3,
        1,
        1,
    )
    assert {Path(f["path"]).name for f in again["skipped_files"] if f["reason"] == "on_shelf"} == {
        "photo-000.png",
        "renamed.jpg",
        "photo-003.jpg",
    }
    for skipped in again["skipped_files"]:
        if skipped["reason"] == "on_shelf":
            assert stack.wait(skipped["id"])["status"] == "ready"

    code, forced = summary_of("import", str(folder), *url, "--force", "--no-wait")
    assert code == 0 and forced["uploaded"] == 5 and forced["on_shelf"] == 0  # everything, once per content


@pytest.mark.e2e
def test_a_failed_image_is_sent_again_and_said_so(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / f"good-{time.time_ns()}.jpg").write_bytes(jpeg(150, 100, color=(time.time_ns() % 256, 9, 9)))
    (tmp_path / "fake.jpg").write_text(f"text pretending to be a photo {time.time_ns()}")
    code, first = summary_of("import", str(tmp_path), "--url", stack.url)
    assert code == 1 and (first["ready"], first["failed"]) == (1, 1)
    code, out, _ = run("import", str(tmp_path), "--url", stack.url)
    assert code == 1  # the failure is tried again (and fails again, with its reason)
    lines = out.splitlines()
    assert lines[:2] == [
        "uploaded 1 of 1, ready 0, failed 1",
        "skipped 1 already on the shelf (imported before; --force uploads them again)",
    ]
    assert "fake.jpg [" in lines[2] and "(not_an_image)" in lines[2]


# Enough photos, one at a time, that the interruption lands mid-import even on a busy machine.
PHOTOS = 120


@pytest.mark.e2e
def test_an_interrupted_import_carries_on_where_it_stopped(stack: Stack, tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "many"
    make_photos(folder, PHOTOS)
    record = manifests.path_for(stack.url)
    before = len(manifests.Manifest(stack.url).entries)
    command = subprocess.Popen(
        [sys.executable, "-m", "imageshelf_client", "import", str(folder), "--jobs", "1", "--no-wait"],
        cwd=ROOT,
        env={**os.environ, "XDG_CACHE_HOME": str(cache), "IMAGESHELF_URL": stack.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell running the suite in the background (CI) ignores SIGINT for its children; Ctrl-C
        # in a terminal reaches the command with the default action, which this restores.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while len(manifests.Manifest(stack.url).entries) < before + 1:  # the first is up: Ctrl-C
        assert command.poll() is None, command.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=60)
    assert command.returncode == 130, (out, err)
    recorded = manifests.Manifest(stack.url)
    done = len(recorded.entries) - before
    assert 1 <= done < PHOTOS
    assert f"interrupted: {done} uploads of this run recorded; run the same command again" in err
    assert record.read_text().count("\n") == len(recorded.entries) + 1  # compacted: a header, a line each

    code, again = summary_of("import", str(folder), "--url", stack.url, "--no-wait")
    assert code == 0
    assert again["on_shelf"] == done and again["uploaded"] == PHOTOS - done
    # Every photo is on the shelf exactly once: the uploads in flight at the interruption ended
    # and were recorded, so none was sent twice.
    ids = {f["id"] for f in again["skipped_files"]} | {r["id"] for r in again["results"]}
    assert len(ids) == PHOTOS
    for image_id in ids:
        assert stack.wait(image_id, timeout=60)["status"] == "ready"


def test_the_manifest_survives_a_torn_line_and_is_kept_per_server(tmp_path: Path) -> None:
    one = manifests.Manifest("http://127.0.0.1:8000/")
    assert one.path == manifests.path_for("http://127.0.0.1:8000")
    assert one.path != manifests.path_for("http://127.0.0.1:8001")
    assert one.path.name.startswith("127.0.0.1-8000-") and one.path.suffix == ".jsonl"
    one.record("a" * 64, "1" * 20, tmp_path / "a.jpg")
    one.record("b" * 64, "2" * 20, tmp_path / "b.jpg")
    one.record("a" * 64, "3" * 20, tmp_path / "a.jpg")  # uploaded again (--force, or deleted)
    with one.path.open("a") as handle:
        handle.write('{"sha256": "cccc", "id": "4')  # a crash in the middle of a line
    two = manifests.Manifest("http://127.0.0.1:8000")
    assert (two.id_of("a" * 64), two.id_of("b" * 64), two.id_of("cccc")) == ("3" * 20, "2" * 20, None)
    two.compact()
    lines = two.path.read_text().splitlines()
    assert json.loads(lines[0]) == {"server": "http://127.0.0.1:8000"}
    assert [json.loads(line)["id"] for line in lines[1:]] == ["3" * 20, "2" * 20]
    assert not list(two.path.parent.glob("*.tmp"))


# --- 200 photos ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, so 200 photos do not crowd the shared stack's listings."""
    running = Stack(data_dir=tmp_path_factory.mktemp("import-stack") / "data").start()
    yield running
    running.stop()


@pytest.mark.e2e
def test_import_a_folder_of_200_photos(
    own_stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str], record_property: Any
) -> None:
    total_bytes = make_photos(tmp_path, 200)
    (tmp_path / "album0" / "README.txt").write_text("skipped")
    started = time.monotonic()
    code, out, _ = run("import", str(tmp_path), "--url", own_stack.url, "--json", "--jobs", "8")
    elapsed = time.monotonic() - started
    summary = json.loads(out)
    assert code == 0, [r for r in summary["results"] if r["error"]][:5]
    assert (summary["uploaded"], summary["ready"], summary["failed"], summary["skipped"]) == (200, 200, 0, 1)
    assert sum(r["bytes"] for r in summary["results"]) == total_bytes
    listed = json.loads(run("--url", own_stack.url, "list", "--all", "--json")[1])["images"]
    assert len(listed) == 200 and {i["id"] for i in listed} == {r["id"] for r in summary["results"]}
    assert all(i["status"] == "ready" and i["renditions"] for i in listed)
    rate = 200 / elapsed
    record_property("import_200_seconds", round(elapsed, 2))
    with capsys.disabled():
        kib = total_bytes / 1024
        print(f"\n[imageshelf import] 200 photos, {kib:.0f} KiB: {elapsed:.1f}s, {rate:.1f} images/s")
    assert elapsed < 60, f"importing 200 small photos took {elapsed:.1f}s"


@pytest.mark.e2e
def test_import_sends_an_iphone_heic_and_it_is_shown_upright(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "phone"
    folder.mkdir()
    (folder / "IMG_0001.HEIC").write_bytes(
        (Path(__file__).parent / "data" / "iphone-arrow.heic").read_bytes()
    )
    code, out, _ = run("--url", stack.url, "import", str(folder), "--json")
    assert code == 0, out
    (result,) = json.loads(out)["results"]
    code, out, _ = run("--url", stack.url, "get", result["id"], "--json")
    image = json.loads(out)
    assert image["status"] == "ready" and image["original"]["content_type"] == "image/heic"
    assert (image["original"]["width"], image["original"]["height"]) == (3024, 4032)
