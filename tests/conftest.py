"""Fixtures: the app against moto (unit, route and event tests) and the real local stack (e2e, browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support import IMAGES_BUCKET, UPLOAD_BUCKET, Stack


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's in-memory AWS with both buckets provisioned; yields an S3 client."""
    from chalicelib import auth, storage
    from tools.provision import provision

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage.reset_clients()
    auth.reset_cache()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        provision(s3, UPLOAD_BUCKET, IMAGES_BUCKET, ["http://127.0.0.1:8000"])
        yield s3
    storage.reset_clients()
    auth.reset_cache()


@pytest.fixture
def client(aws: Any) -> Iterator[Any]:
    """Chalice's test client for the app, stage ``local``."""
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="local") as test_client:
        yield test_client


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole local stack (tools/devserver.py) in a subprocess, shared by e2e and browser tests."""
    running = Stack(data_dir=tmp_path_factory.mktemp("stack") / "data").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (never a downloaded browser)."""
    from tools.stack import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
