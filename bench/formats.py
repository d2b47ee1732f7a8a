"""Bytes of each rendition format at equal SSIM, and the encode time they add per upload.

``python -m bench.formats [--limit N]`` (a step of ``make bench``). On the corpus's JPEG photos:

1. For each rendition size (thumb 400 px, large 1600 px), the pipeline's pixels just before
   encoding are encoded as JPEG (what every browser gets), WebP and AVIF at the qualities
   processing uses (``chalicelib.imaging``: ``ALTERNATE_QUALITY``, ``ALTERNATE_QUALITY_LARGE``
   above ``AVIF_FAST_PIXELS``), chosen so that their median SSIM equals the JPEG's: each is scored
   by SSIM against those pixels (``bench.quality.ssim``). Prints median bytes, SSIM, encode ms and
   bytes vs JPEG. (``bench.render`` matches the SSIM per photo instead, a stricter measure.)
2. A whole ``imaging.render`` of both sizes with and without the alternates: the time added
   per upload (median), which is what RENDITION_FORMATS costs the resize function.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import Any

from PIL import Image

from bench.corpus import corpus
from bench.quality import rendition_pixels, ssim
from chalicelib import imaging

SIZES = {"thumb": (400, 400), "large": (1600, 1600)}
ALTERNATES = ("WEBP", "AVIF")


def _encode(im: Image.Image, fmt: str) -> bytes:
    if fmt == "JPEG":
        return imaging._save(im, "JPEG", quality=imaging.JPEG_QUALITY, progressive=True, optimize=True)
    return imaging._encode_alternate(im.copy(), fmt)


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=12, help="photos from the corpus (default 12)")
    args = parser.parse_args()
    files = [f for f in corpus() if f.suffix == ".jpg"][: args.limit]
    small = ", ".join(f"{k} q{v}" for k, v in imaging.ALTERNATE_QUALITY.items())
    large = ", ".join(f"{k} q{v}" for k, v in imaging.ALTERNATE_QUALITY_LARGE.items())
    print(f"{len(files)} JPEG photos from the bench corpus; JPEG q{imaging.JPEG_QUALITY}; "
          f"{small} (thumb), {large} (large)")  # fmt: skip
    print(
        f"AVIF speed {imaging.AVIF_SPEED} (speed {imaging.AVIF_FAST_SPEED} above "
        f"{imaging.AVIF_FAST_PIXELS / 1e6:.1f} MP), WebP method {imaging.WEBP_METHOD}\n"
    )
    print("rendition  format  median bytes  vs JPEG  median SSIM  median encode ms")
    for name, box in SIZES.items():
        pixels = [rendition_pixels(f.read_bytes(), box) for f in files]
        jpeg_bytes = 0.0
        for fmt in ("JPEG", *ALTERNATES):
            sizes, scores, times = [], [], []
            for im in pixels:
                data, ms = _timed(lambda im=im, fmt=fmt: _encode(im, fmt))
                sizes.append(len(data))
                times.append(ms)
                scores.append(ssim(Image.open(io.BytesIO(data)), im))
            median = statistics.median(sizes)
            jpeg_bytes = jpeg_bytes or median
            print(
                f"{name:<10} {fmt:<7} {median:>12,.0f}  {median / jpeg_bytes:>6.0%}  "
                f"{statistics.median(scores):>11.4f}  {statistics.median(times):>16.1f}"
            )
    print("\nper upload (render of thumb + large, median ms):")
    base, extra = [], []
    for f in files:
        data = f.read_bytes()
        base.append(_timed(lambda data=data: imaging.render(data, list(SIZES.values())))[1])
        extra.append(
            _timed(lambda data=data: imaging.render(data, list(SIZES.values()), alternates=ALTERNATES))[1]
        )
    b, e = statistics.median(base), statistics.median(extra)
    print(f"  JPEG/PNG only {b:.0f} ms; with WebP + AVIF {e:.0f} ms: +{e - b:.0f} ms ({e / b:.1f}x)")


if __name__ == "__main__":
    main()
