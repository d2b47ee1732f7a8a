"""What a cached on-demand render costs on the local stack, beside the machine's request floor.

``python -m bench.render_hit [--requests 300]`` starts a fresh local stack, uploads one photo,
renders it once (the miss), then alternates ``GET /images/{id}/render?…`` (a hit: one S3 HEAD
and a redirect, never followed here) with ``GET /ping`` (no S3 at all) and prints the p50 and
p90 of each and their ratio. The same for the sample photo and for a ``format=auto`` request.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.first_paint import photo
from tools.stack import Stack


def _timed(session: requests.Session, url: str, headers: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    response = session.get(url, allow_redirects=False, headers=headers, timeout=30)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code not in (200, 302):
        raise SystemExit(f"{url}: {response.status_code} {response.text[:200]}")
    return elapsed


def _quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=10)
    return statistics.median(samples), cuts[8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        _run(Stack(data_dir=Path(folder) / "data"), args.requests)


def _run(stack: Stack, requests_each: int) -> None:
    stack.start()
    try:
        image_id = stack.upload(photo(7))
        stack.wait(image_id)
        session = requests.Session()
        cases = {
            "image  w=800&format=webp": f"{stack.url}/images/{image_id}/render?w=800&format=webp",
            "image  preset=view-1280 (auto)": f"{stack.url}/images/{image_id}/render?preset=view-1280",
            "sample w=640&filter=sepia": f"{stack.url}/sample/render?w=640&filter=sepia",
        }
        accept = {"Accept": "image/avif,image/webp,*/*"}
        print(f"cached render vs GET /ping on the local stack, {requests_each} requests each, alternated")
        print(f"{'request':34} {'miss ms':>8} {'hit p50':>8} {'hit p90':>8} {'ping p50':>9} {'hit/ping':>9}")
        for name, url in cases.items():
            miss = _timed(session, url, accept)
            hits, pings = [], []
            for _ in range(requests_each):
                hits.append(_timed(session, url, accept))
                pings.append(_timed(session, f"{stack.url}/ping"))
            hit50, hit90 = _quantiles(hits)
            ping50, _ = _quantiles(pings)
            print(f"{name:34} {miss:8.1f} {hit50:8.2f} {hit90:8.2f} {ping50:9.2f} {hit50 / ping50:8.2f}x")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
