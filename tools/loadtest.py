"""Load test (``make load``): concurrent clients upload real photos through the presigned POST
flow against the local stack, and every one must come out ready, once.

It derives ``--count`` photos of mixed sizes (0.2 to 12 MP, JPEG, PNG and WebP) from the
benchmark's corpus of real wallpapers (fetched by ``bench.corpus``), starts a fresh local
stack (or uses ``--url``), and has ``--clients`` threads each presign, upload and poll until
ready. It prints uploads per second and upload-to-ready latency, and exits non-zero if any
image is missing, failed or listed twice.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from tools.stack import Stack

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "load"
TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def make_photos(count: int, seed: int = 20261123) -> list[tuple[str, bytes, str]]:
    """``count`` (filename, bytes, content type) photos of mixed sizes cut from the real corpus,
    cached under .cache/load/ (the same seed always makes the same files)."""
    folder = CACHE / f"{seed}-{count}"
    if (folder / ".done").exists():
        return [
            (p.name, p.read_bytes(), TYPES[p.suffix]) for p in sorted(folder.iterdir()) if p.suffix in TYPES
        ]
    photos = _derive(count, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for filename, data, _ in photos:
        (folder / filename).write_bytes(data)
    (folder / ".done").touch()
    return photos


def _derive(count: int, seed: int) -> list[tuple[str, bytes, str]]:
    from bench.corpus import CORPUS, fetch

    fetch()
    sources = sorted(p for p in CORPUS.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    if not sources:
        raise SystemExit(f"no photos in {CORPUS}: run `python -m bench.corpus`")
    rng = random.Random(seed)
    decoded: dict[Path, Image.Image] = {}
    photos = []
    for n in range(count):
        source = sources[n % len(sources)]
        if source not in decoded:
            with Image.open(source) as opened:
                opened.draft("RGB", (3000, 3000))
                decoded[source] = opened.convert("RGB")
        image = decoded[source]
        megapixels = rng.choice([0.2, 0.5, 1, 2, 3, 5, 8, 12])
        scale = min(1.0, (megapixels * 1e6 / (image.width * image.height)) ** 0.5)
        resized = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        kind = rng.choice(["JPEG", "JPEG", "JPEG", "PNG", "WEBP"])
        buffer = io.BytesIO()
        resized.save(buffer, kind, **({"quality": 88} if kind != "PNG" else {"compress_level": 1}))
        extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[kind]
        photos.append((f"{n:03d}-{source.stem}.{extension}", buffer.getvalue(), f"image/{kind.lower()}"))
    return photos


def run(url: str, photos: list[tuple[str, bytes, str]], clients: int, timeout: float) -> int:
    latencies: dict[str, float] = {}
    failures: list[str] = []
    lock = threading.Lock()
    session = threading.local()

    def one(photo: tuple[str, bytes, str]) -> None:
        filename, data, content_type = photo
        http = getattr(session, "http", None) or requests.Session()
        session.http = http
        started = time.monotonic()
        grant = http.post(
            f"{url}/uploads",
            json={"filename": filename, "content_type": content_type, "size": len(data)},
            timeout=30,
        ).json()
        sent = http.post(
            grant["url"], data=grant["fields"], files={"file": (filename, data, content_type)}, timeout=60
        )
        if sent.status_code not in (200, 201, 204):
            with lock:
                failures.append(f"{filename}: upload answered {sent.status_code}")
            return
        deadline = started + timeout
        while time.monotonic() < deadline:
            image = http.get(f"{url}/images/{grant['id']}", timeout=30).json()
            if image.get("status") == "ready":
                with lock:
                    latencies[grant["id"]] = time.monotonic() - started
                return
            if image.get("status") == "failed":
                with lock:
                    failures.append(f"{filename}: failed {image['error']}")
                return
            time.sleep(0.1)
        with lock:
            failures.append(f"{filename}: still pending after {timeout:.0f}s")

    total_bytes = sum(len(p[1]) for p in photos)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, photos))
    elapsed = time.monotonic() - started

    listed: list[str] = []
    cursor = None
    while True:
        page = requests.get(
            f"{url}/images", params={"limit": 100, **({"cursor": cursor} if cursor else {})}, timeout=30
        ).json()
        listed += [i["id"] for i in page["images"] if i["status"] == "ready"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    duplicated = len(listed) - len(set(listed))
    lost = set(latencies) - set(listed)
    values = sorted(latencies.values())
    print(f"{len(photos)} photos, {total_bytes / 2**20:.0f} MiB, {clients} clients, {elapsed:.1f}s")
    print(f"  uploads per second       {len(photos) / elapsed:.1f}")
    if values:
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(f"  upload to ready  p50     {statistics.median(values) * 1000:.0f} ms")
        print(f"                   p95     {p95 * 1000:.0f} ms")
        print(f"                   max     {values[-1] * 1000:.0f} ms")
    print(f"  ready {len(latencies)}, failed {len(failures)}, duplicated {duplicated}, lost {len(lost)}")
    for failure in failures[:20]:
        print("  -", failure)
    ok = len(latencies) == len(photos) and not failures and duplicated == 0 and not lost
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300, help="seconds an image may take to be ready")
    parser.add_argument("--url", help="a running stack (default: start a fresh one)")
    args = parser.parse_args(argv)
    photos = make_photos(args.count)
    if args.url:
        return run(args.url.rstrip("/"), photos, args.clients, args.timeout)
    with tempfile.TemporaryDirectory(prefix="imageshelf-load-") as folder:
        stack = Stack(data_dir=Path(folder) / "data").start()
        try:
            return run(stack.url, photos, args.clients, args.timeout)
        finally:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
