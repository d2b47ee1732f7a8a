"""The local stack (tools/devserver.py) in a subprocess on free ports: for tests and the load test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_BUCKET = "imageshelf-local-uploads"
IMAGES_BUCKET = "imageshelf-local-images"


# Debian's chromium, headless through Playwright (never a browser Playwright downloads), with the
# flags it needs in a container; for the browser tests and bench/first_paint.py.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The local stack (tools/devserver.py) running in a subprocess on free ports."""

    data_dir: Path
    admin_token: str = "test-admin-token"
    port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    upload_bucket: str = UPLOAD_BUCKET
    images_bucket: str = IMAGES_BUCKET
    # Its own process group, as `make run` has in a terminal: `kill()` then signals the whole group.
    own_group: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60) -> Stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(ADMIN_TOKEN=self.admin_token, PYTHONUNBUFFERED="1", **self.env)
        self.log = open(self.data_dir.parent / f"devserver-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.devserver",
                "--port",
                str(self.port),
                "--s3-port",
                str(self.s3_port),
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_group,
        )
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> Stack:
        """Wait until the stack answers ``/ping``."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devserver exited with {self.process.returncode}; see {self.log.name}")
            try:
                if requests.get(f"{self.url}/ping", timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"devserver did not answer within {timeout}s; see {self.log.name}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.log.close()
        return code

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the stack's process group (``own_group``), as a terminal's Ctrl-C or an
        OOM killer would, and wait for it to end; returns its exit status."""
        assert self.process is not None and self.own_group
        os.killpg(self.process.pid, sig)
        code = self.process.wait(timeout=30)
        self.log.close()
        return code

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def upload(self, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg") -> str:
        """Upload through the presigned POST flow, as a browser does; returns the image id."""
        grant = requests.post(
            f"{self.url}/uploads", json={"filename": filename, "content_type": content_type}, timeout=10
        )
        grant.raise_for_status()
        body = grant.json()
        sent = requests.post(
            body["url"], data=body["fields"], files={"file": (filename, data, content_type)}, timeout=30
        )
        assert sent.status_code in (200, 201, 204), sent.text
        return body["id"]

    def wait(self, image_id: str, timeout: float = 20) -> dict[str, Any]:
        """Poll the image until it is no longer pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = requests.get(f"{self.url}/images/{image_id}", timeout=10)
            if response.ok and response.json()["status"] != "pending":
                return response.json()
            time.sleep(0.1)
        raise AssertionError(f"image {image_id} still pending after {timeout}s")
