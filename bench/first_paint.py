"""Time to the first painted tile on a gallery of N images, in Debian's headless Chromium.

``python -m bench.first_paint [--images 500]`` starts a fresh local stack, uploads N small
photographs (generated, each with its own colours), waits until all are ready, then opens the
gallery several times in a new browser context each (a cold cache) and prints, per load, the
milliseconds from navigation start to:

- the first contentful paint (the browser's own ``first-contentful-paint`` entry);
- the first tile painted with its placeholder (a frame where a tile has its colour), and
- the first thumbnail decoded (an ``<img>`` in the grid complete with pixels),

with the ``GET /ping`` round trip beside them as the machine's floor.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image, ImageDraw

from tools.stack import CHROMIUM, CHROMIUM_ARGS, Stack

# Run in the page before anything else: record when a tile first shows its placeholder colour,
# and when a grid thumbnail first has decoded pixels, frame by frame.
_PROBE = """
window.__paint = {};
(function frame() {
  const now = performance.now();
  const tile = document.querySelector('#grid .card[data-color], #grid .card');
  if (tile && window.__paint.tile === undefined) window.__paint.tile = now;
  const img = Array.from(document.querySelectorAll('#grid img')).find(i => i.complete && i.naturalWidth);
  if (img && window.__paint.image === undefined) window.__paint.image = now;
  if (window.__paint.image === undefined || window.__paint.tile === undefined) requestAnimationFrame(frame);
})();
"""


def photo(seed: int) -> bytes:
    """A 640x480 JPEG with a few shapes in its own colours."""
    image = Image.new("RGB", (640, 480), ((seed * 53) % 256, (seed * 97) % 256, (seed * 29) % 256))
    draw = ImageDraw.Draw(image)
    for k in range(6):
        x, y = (seed * 31 + k * 101) % 560, (seed * 17 + k * 67) % 400
        draw.ellipse((x, y, x + 80, y + 80), fill=((k * 40) % 256, (seed * 7) % 256, (k * 90) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as data:
        stack = Stack(data_dir=Path(data)).start()
        try:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=8) as pool:
                ids = list(
                    pool.map(lambda n: stack.upload(photo(n), f"photo-{n:03d}.jpg"), range(args.images))
                )
            for image_id in ids:
                stack.wait(image_id, timeout=600)
            print(f"{args.images} images ready in {time.perf_counter() - started:.0f} s")
            floor = []
            for _ in range(20):
                t0 = time.perf_counter()
                requests.get(stack.url + "/ping", timeout=10)
                floor.append((time.perf_counter() - t0) * 1000)
            results: dict[str, list[float]] = {"fcp": [], "tile": [], "image": []}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                for _ in range(args.loads):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    context.add_init_script(_PROBE)
                    page = context.new_page()
                    page.goto(stack.url + "/")
                    page.wait_for_function(
                        "() => window.__paint && window.__paint.image !== undefined"
                        " && window.__paint.tile !== undefined"
                        " && performance.getEntriesByName('first-contentful-paint').length > 0"
                    )
                    paint = page.evaluate(
                        "() => ({fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,"
                        " tile: window.__paint.tile, image: window.__paint.image})"
                    )
                    for name in results:
                        results[name].append(float(paint[name]))
                    context.close()
                browser.close()
        finally:
            stack.stop()
    print(f"GET /ping p50: {statistics.median(floor):.1f} ms (the machine's request floor)")
    for name, label in (
        ("fcp", "first contentful paint"),
        ("tile", "first tile painted"),
        ("image", "first thumbnail decoded"),
    ):
        values = results[name]
        spread = f"(min {min(values):.0f}, max {max(values):.0f})"
        print(f"{label:<24} p50 {statistics.median(values):6.0f} ms  {spread}")


if __name__ == "__main__":
    main()
