"""``chalice local`` as the README runs it: no AWS credentials anywhere, and stopping it stops it.

- With no ``AWS_*`` credentials and a home folder without ``~/.aws``, the local stage talks to the
  embedded S3 (``AWS_ENDPOINT_URL``) with fixed local credentials (``chalicelib/storage.py``):
  listing and presigning work. An AWS stage never does that (a unit test below).
- ``tools/chalice_local.py`` (``chalice local`` with its reloader, the default) leaves nothing
  serving the port once it is sent SIGTERM, as Chalice's own reloader does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from tests.support import IMAGES_BUCKET, UPLOAD_BUCKET, jpeg
from tools.stack import ROOT, free_port


@pytest.fixture(scope="module")
def embedded_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    from tools.provision import provision

    s3 = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    provision(s3, UPLOAD_BUCKET, IMAGES_BUCKET, ["http://127.0.0.1:8000"])
    yield url
    server.stop()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def chalice_local(embedded_s3: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m tools.chalice_local --port N`` with no credentials: an empty HOME, no AWS_*."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_ENDPOINT_URL=embedded_s3)
    port = free_port()
    log = open(tmp_path / "chalice-local.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.chalice_local", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while port_is_free(port):
        assert process.poll() is None, (tmp_path / "chalice-local.log").read_text()
        assert time.monotonic() < deadline, "chalice local did not start"
        time.sleep(0.2)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            # SIGTERM: the wrapper stops chalice local's whole process group, escalating to SIGKILL.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        log.close()


def test_the_local_stage_lists_and_presigns_with_no_credentials_configured(
    chalice_local: tuple[subprocess.Popen[bytes], int], embedded_s3: str
) -> None:
    _, port = chalice_local
    url = f"http://127.0.0.1:{port}"
    listed = requests.get(f"{url}/images", timeout=30)
    assert listed.status_code == 200, listed.text
    assert "images" in listed.json()
    grant = requests.post(
        f"{url}/uploads", json={"filename": "a.jpg", "content_type": "image/jpeg"}, timeout=30
    )
    assert grant.status_code == 201, grant.text
    body = grant.json()
    sent = requests.post(
        body["url"], data=body["fields"], files={"file": ("a.jpg", jpeg(64, 48))}, timeout=30
    )
    assert sent.status_code in (200, 201, 204), sent.text
    image = requests.get(f"{url}/images/{body['id']}", timeout=30)
    assert image.status_code == 200 and image.json()["status"] == "pending", image.text


def test_sigterm_stops_chalice_local_and_its_reload_child(
    chalice_local: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = chalice_local
    assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=10).json() == {"message": "pong"}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_is_free(port), "something still serves the port after chalice local was stopped"


def test_fixed_local_credentials_only_for_the_local_stage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chalicelib import storage

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    storage.reset_clients()
    try:
        local = storage.s3()._request_signer._credentials
        assert local is not None and local.access_key == storage.LOCAL_CREDENTIALS["aws_access_key_id"]
        monkeypatch.setenv("STAGE", "prod")  # an AWS stage: never made-up credentials
        storage.reset_clients()
        assert storage.s3()._request_signer._credentials is None
        monkeypatch.setenv("STAGE", "local")
        monkeypatch.delenv("AWS_ENDPOINT_URL")  # real AWS from a laptop: never either
        storage.reset_clients()
        assert storage.s3()._request_signer._credentials is None
    finally:
        storage.reset_clients()
