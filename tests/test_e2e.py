"""End to end: the real local stack (tools/devserver.py) in a subprocess, driven over HTTP."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.support import Stack, jpeg

pytestmark = pytest.mark.e2e


def fetch_image(url: str) -> Image.Image:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def listed(stack: Stack) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in requests.get(f"{stack.url}/images?limit=100", timeout=10).json()["images"]}


def test_presigned_post_upload_becomes_ready_with_a_thumbnail(stack: Stack) -> None:
    started = time.monotonic()
    image_id = stack.upload(jpeg(2400, 1600), "beach.jpg")
    image = stack.wait(image_id)
    elapsed = time.monotonic() - started
    assert image["status"] == "ready", image
    assert elapsed < 5, f"upload to ready took {elapsed:.1f}s"
    assert image["original"]["filename"] == "beach.jpg"
    assert (image["original"]["width"], image["original"]["height"]) == (2400, 1600)
    thumb = next(r for r in image["renditions"] if r["name"] == "thumb")
    pixels = fetch_image(thumb["url"])
    assert pixels.size == (thumb["width"], thumb["height"]) == (400, 267)
    assert requests.get(thumb["url"], timeout=10).headers["Content-Type"] == "image/jpeg"
    assert image_id in listed(stack)


def test_presigned_put_upload(stack: Stack) -> None:
    data = jpeg(640, 480)
    grant = requests.post(
        f"{stack.url}/uploads",
        timeout=10,
        json={"filename": "put me.jpg", "content_type": "image/jpeg", "size": len(data), "method": "put"},
    ).json()
    sent = requests.put(grant["url"], data=data, headers=grant["headers"], timeout=10)
    assert sent.status_code == 200, sent.text
    image = stack.wait(grant["id"])
    assert image["status"] == "ready"
    assert image["original"]["filename"] == "put me.jpg"


def test_any_s3_client_can_upload_under_a_nasty_key(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "my photo+1 100% ü.jpg"
    path.write_bytes(jpeg(900, 600))
    # upload_file is the transfer manager the aws CLI's `s3 cp` uses
    stack.s3().upload_file(str(path), stack.upload_bucket, f"uploads/{path.name}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [i for i in listed(stack).values() if i["original"]["filename"] == path.name]
        if found and found[0]["status"] != "pending":
            break
        time.sleep(0.2)
    assert len(found) == 1, "listed exactly once"
    assert found[0]["status"] == "ready"
    thumb = next(r for r in found[0]["renditions"] if r["name"] == "thumb")
    assert fetch_image(thumb["url"]).size == (400, 267)


def test_a_text_file_fails_with_a_reason_and_the_original_is_kept(stack: Stack) -> None:
    image_id = stack.upload(b"just some words, not pixels", "notes.jpg")
    image = stack.wait(image_id)
    assert image["status"] == "failed"
    assert image["error"]["code"] == "not_an_image"
    assert (
        stack.s3().head_object(Bucket=stack.upload_bucket, Key=f"uploads/{image_id}")["ContentLength"] == 27
    )


def test_uploads_survive_a_restart(tmp_path: Path) -> None:
    first = Stack(data_dir=tmp_path / "data").start()
    try:
        image_id = first.upload(jpeg(800, 600), "keep me.jpg")
        assert first.wait(image_id)["status"] == "ready"
    finally:
        assert first.stop() == 0  # SIGTERM stops cleanly
    second = Stack(data_dir=tmp_path / "data").start()
    try:
        image = listed(second).get(image_id)
        assert image is not None, "the image is listed after a restart"
        assert image["status"] == "ready"
        assert image["original"]["filename"] == "keep me.jpg"
        assert fetch_image(image["renditions"][0]["url"]).size == (400, 300)
        assert len(listed(second)) == 1  # restored uploads are not processed a second time
    finally:
        second.stop()


def test_racing_deliveries_against_the_embedded_s3(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six extra deliveries of one upload race the stack's own, on real threads and real HTTP."""
    import threading

    from chalicelib import processing, storage
    from chalicelib.config import get_settings

    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.s3_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    storage.reset_clients()
    key = "uploads/race condition.jpg"
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def deliver() -> None:
        barrier.wait()
        outcomes.append(processing.process_upload(stack.upload_bucket, key, get_settings()).outcome)

    stack.s3().put_object(Bucket=stack.upload_bucket, Key=key, Body=jpeg(3000, 2000))
    threads = [threading.Thread(target=deliver) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        storage.reset_clients()
    # "ignored": a delivery that came after another had copied the object to its own original and
    # released it from uploads/ (docs/convergence.md)
    assert len(outcomes) == 6 and set(outcomes) <= {"ready", "duplicate", "ignored"}
    matches = [i for i in listed(stack).values() if i["original"]["filename"] == "race condition.jpg"]
    assert len(matches) == 1 and matches[0]["status"] == "ready"

    def written() -> list[str]:
        listing = stack.s3().list_objects_v2(Bucket=stack.images_bucket, Prefix=f"{matches[0]['id']}/")
        return sorted(obj["Key"].split("/", 1)[1] for obj in listing["Contents"])

    # Wait for the stack's own delivery of the same event to finish (its one JSON log line for
    # the key, with the invocation's request id: the reconciler's own lines have none, and its
    # first pass may meet the upload too), then one record and one set of renditions must be left.
    def stack_outcomes() -> list[str]:
        lines = Path(stack.log.name).read_text(errors="replace").splitlines()
        events = [json.loads(line) for line in lines if line.startswith('{"key": ')]
        return [
            e["outcome"]
            for e in events
            if e["key"] == key and e["outcome"] != "retry" and e.get("request_id")
        ]

    deadline = time.monotonic() + 30
    while not stack_outcomes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack_outcomes() in (["ready"], ["duplicate"], ["ignored"])
    # one status record, and one set of renditions: each name, of one version of the original
    left = written()
    assert sum(k.startswith("s/") for k in left) == 1, left
    renditions = [k.split("/", 1)[1].split(".") for k in left if k.startswith("r/")]
    assert {r[0] for r in renditions} == {"thumb", "large"} and len({r[2] for r in renditions}) == 1, left


def test_make_run_reloads_on_code_edits_and_keeps_the_images(tmp_path: Path) -> None:
    import os

    from tools.stack import ROOT

    stack = Stack(data_dir=tmp_path / "data", args=["--reload"]).start()
    try:
        image_id = stack.upload(jpeg(300, 200), "before reload.jpg")
        assert stack.wait(image_id)["status"] == "ready"
        time.sleep(1.2)  # the mirror writes once a second
        pid = stack.process.pid
        edited = ROOT / "chalicelib" / "errors.py"
        os.utime(edited)  # an edit, as far as the watcher can tell
        deadline = time.monotonic() + 30
        restarted = False
        while time.monotonic() < deadline and not restarted:
            output = Path(stack.log.name).read_bytes()
            restarted = b"code changed: restarting" in output and output.count(b"imageshelf is running") == 2
            time.sleep(0.2)
        assert restarted, "the server restarted with the edited code"
        stack.wait_ready()
        assert stack.process.pid == pid  # the same process, re-executed
        assert listed(stack)[image_id]["status"] == "ready"
    finally:
        stack.stop()


def test_chalice_local_against_the_embedded_s3_serves_the_same_app(stack: Stack) -> None:
    """`chalice local --stage local` with AWS_ENDPOINT_URL pointing at the embedded S3."""
    import os
    import subprocess
    import sys

    from tools.stack import ROOT, free_port

    image_id = stack.upload(jpeg(320, 240), "seen by chalice local.jpg")
    assert stack.wait(image_id)["status"] == "ready"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=stack.s3_url,
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION="us-east-1",
    )
    command = [
        str(Path(sys.executable).with_name("chalice")),
        "local",
        "--stage",
        "local",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        [*command, "--no-autoreload"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                images = requests.get(f"http://127.0.0.1:{port}/images?limit=100", timeout=2).json()["images"]
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError("chalice local did not start")
        mine = next(i for i in images if i["id"] == image_id)
        assert mine["status"] == "ready" and mine["original"]["filename"] == "seen by chalice local.jpg"
        assert fetch_image(mine["renditions"][0]["url"]).size == (320, 240)
    finally:
        server.terminate()
        server.wait(timeout=10)
