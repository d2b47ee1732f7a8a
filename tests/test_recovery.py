"""The real local stack (``make run``'s devserver) under deletes racing the resize handler, and
killed with work queued or in flight: nothing lost, nothing resurrected (docs/convergence.md)."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib import storage
from tests.support import Stack, assert_invariants, jpeg
from tools.stack import ROOT

pytestmark = pytest.mark.e2e

BEARER = {"Authorization": "Bearer test-admin-token"}


def outcomes(stack: Stack) -> dict[str, list[str]]:
    """The final outcome of every delivery the stack logged (its one JSON line each), by key."""
    found: dict[str, list[str]] = {}
    for line in Path(stack.log.name).read_text(errors="replace").splitlines():
        if line.startswith('{"key": '):
            event = json.loads(line)
            if event["outcome"] != "retry":
                found.setdefault(event["key"], []).append(event["outcome"])
    return found


def all_listed(stack: Stack) -> list[dict[str, Any]]:
    images, cursor = [], None
    while True:
        query = "limit=100" + (f"&cursor={cursor}" if cursor else "")
        page = requests.get(f"{stack.url}/images?{query}", timeout=10).json()
        images += page["images"]
        cursor = page["next_cursor"]
        if cursor is None:
            return images


def assert_gone(stack: Stack, image_id: str) -> None:
    """Nothing of a deleted image is served, listed or stored but its tombstone."""
    assert requests.get(f"{stack.url}/images/{image_id}", timeout=10).status_code == 404
    assert image_id not in {i["id"] for i in all_listed(stack)}
    s3 = stack.s3()
    left = s3.list_objects_v2(Bucket=stack.images_bucket, Prefix=f"{image_id}/").get("Contents", [])
    assert [o["Key"] for o in left] in ([], [storage.tombstone_key(image_id)]), left
    for key in (storage.upload_key(image_id), storage.original_key(image_id)):
        assert s3.list_objects_v2(Bucket=stack.upload_bucket, Prefix=key).get("KeyCount") == 0, key


def test_25_deletes_fired_as_each_first_rendition_appears_leave_nothing(stack: Stack) -> None:
    s3 = stack.s3()
    answers: dict[str, int] = {}

    def delete_at_first_rendition(image_id: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # watching S3 itself, every few milliseconds
            if s3.list_objects_v2(Bucket=stack.images_bucket, Prefix=f"{image_id}/r/", MaxKeys=1)["KeyCount"]:
                break
            time.sleep(0.005)
        answers[image_id] = requests.delete(
            f"{stack.url}/images/{image_id}", headers=BEARER, timeout=10
        ).status_code

    ids, threads = [], []
    for n in range(25):
        ids.append(stack.upload(jpeg(800, 600), f"doomed {n}.jpg"))
        threads.append(threading.Thread(target=delete_at_first_rendition, args=(ids[-1],)))
        threads[-1].start()
    for thread in threads:
        thread.join(timeout=90)
    assert answers == dict.fromkeys(ids, 204)
    keys = {storage.upload_key(i) for i in ids}
    deadline = time.monotonic() + 60
    while not keys <= set(outcomes(stack)) and time.monotonic() < deadline:
        time.sleep(0.2)  # every delivery has finished (each logs one line)
    done = outcomes(stack)
    assert keys <= set(done)
    raced = [k for k in keys if done[k] != ["ready"]]
    print(f"\n[stress] 25 deletes at the first rendition: {len(raced)} deliveries saw theirs mid-way")
    for image_id in ids:
        assert_gone(stack, image_id)


def restart_after(sig: signal.Signals, tmp_path: Path, count: int) -> tuple[Stack, list[str], float]:
    """Start a stack, upload ``count`` photos, signal its process group at once, start it again on
    the same data folder; returns the new stack, the ids and when it answered again."""
    data = tmp_path / "data"
    first = Stack(data_dir=data, own_group=True).start()
    photo = jpeg(1200, 900)  # resized more slowly than they arrive: some are still queued
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: first.upload(photo, f"queued {n}.jpg"), range(count)))
    first.kill(sig)
    settled = sum(o != ["retry"] for o in outcomes(first).values())
    assert settled < count, "the stack finished before it was stopped: nothing was left to lose"
    print(f"\n[recovery] {sig.name} with {count - settled} of {count} uploads queued or in flight")
    second = Stack(data_dir=data, own_group=True).start()
    return second, ids, time.monotonic()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_uploads_queued_or_in_flight_when_make_run_stops_all_finish_after_a_restart(
    sig: signal.Signals, tmp_path: Path
) -> None:
    stack, ids, restarted = restart_after(sig, tmp_path, 50)
    try:
        deadline = restarted + 60
        while time.monotonic() < deadline:
            listed = all_listed(stack)
            if len(listed) == 50 and all(i["status"] == "ready" for i in listed):
                break
            time.sleep(0.25)
        took = time.monotonic() - restarted
        print(f"\n[recovery] {sig.name}: 50 uploads ready {took:.1f}s after the restart")
        assert sorted(i["id"] for i in listed) == sorted(ids), "none missing, none duplicated"
        assert all(i["status"] == "ready" for i in listed), [i["status"] for i in listed]
        assert sorted(assert_invariants(stack.s3())) == sorted(ids)
    finally:
        stack.stop()


def test_a_delete_followed_at_once_by_sigkill_stays_deleted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Stack(data_dir=data, own_group=True).start()
    image_id = first.upload(jpeg(640, 480), "gone.jpg")
    kept = first.upload(jpeg(640, 480), "kept.jpg")
    assert first.wait(image_id)["status"] == first.wait(kept)["status"] == "ready"
    assert requests.delete(f"{first.url}/images/{image_id}", headers=BEARER, timeout=10).status_code == 204
    first.kill(signal.SIGKILL)
    second = Stack(data_dir=data, own_group=True).start()
    try:
        wait_for_first_reconcile(second)
        assert_gone(second, image_id)
        assert [i["id"] for i in all_listed(second)] == [kept]
        assert list(assert_invariants(second.s3(), deleted=[image_id])) == [kept]
    finally:
        second.stop()


def wait_for_first_reconcile(stack: Stack) -> None:
    deadline = time.monotonic() + 30
    while '{"reconcile": ' not in Path(stack.log.name).read_text() and time.monotonic() < deadline:
        time.sleep(0.2)


def readme_command() -> list[str]:
    """The command README.md gives ``chalice local`` users for the reconciler, word for word."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^(\.venv/bin/python -m tools\.reconcile[^\n#]*)", readme, re.MULTILINE)
    assert match, "README.md shows how to run the reconciler beside chalice local"
    return shlex.split(match.group(1))


def test_chalice_local_users_run_the_reconciler_with_the_readme_command(tmp_path: Path) -> None:
    """Its first pass finishes an upload nothing else would (its event lost: here an original with
    only its marker) and removes an orphan; the stack's own reconciler runs only at its start."""
    stack = Stack(data_dir=tmp_path / "data", env={"RECONCILE_EVERY": "3600"}).start()
    s3 = stack.s3()
    lost, orphan = storage.new_id(), storage.new_id()
    try:
        wait_for_first_reconcile(stack)
        s3.put_object(Bucket=stack.upload_bucket, Key=storage.original_key(lost), Body=jpeg(320, 240))
        marker = json.dumps({"source": storage.original_key(lost), "attempts": 0})
        s3.put_object(Bucket=stack.images_bucket, Key=storage.marker_key(lost), Body=marker.encode())
        s3.put_object(Bucket=stack.images_bucket, Key=f"{orphan}/r/thumb.1x1.0123456789.jpg", Body=b"x")
        env = {"PATH": "/usr/bin:/bin", "S3_PORT": str(stack.s3_port)}
        process = subprocess.Popen(readme_command(), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        try:
            report: dict[str, Any] = {}
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith('{"reconcile": '):
                    report = json.loads(line)["reconcile"]
                    break
        finally:
            process.terminate()
            process.wait(timeout=10)
        assert report.get("redriven") == [lost] and report.get("purged") == [orphan], report
        assert requests.get(f"{stack.url}/images/{lost}", timeout=10).json()["status"] == "ready"
        assert s3.list_objects_v2(Bucket=stack.images_bucket, Prefix=f"{orphan}/")["KeyCount"] == 0
    finally:
        stack.stop()
