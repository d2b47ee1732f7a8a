"""The ``imageshelf`` command: arguments, output for people and for scripts, exit status, and
importing a folder of 200 photos into the local stack."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imageshelf_client.cli import build_parser, main
from tests.support import Stack, jpeg

ROOT = Path(__file__).resolve().parent.parent


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
    for command in ("upload", "import", "list", "get", "delete"):
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
    assert out.splitlines()[0] == "uploaded 2 of 3, ready 1, failed 2 (skipped 1 files not named like images)"
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
