"""On-demand renders: a miss against pyvips, and what AVIF and WebP save at equal SSIM.

``python -m bench.render [--repeats N] [--limit N] [--source PATH]`` (a step of ``make bench``).

1. Miss: a 24 MP JPEG to a 1600 px WebP, and to a 1600 px AVIF: ``transform.render`` against
   pyvips doing the same operation (``thumbnail_buffer`` with shrink on load, then
   ``webpsave_buffer`` / ``heifsave_buffer(compression="av1")``) at the same quality and encoder
   effort, in this process, alternating which goes first, after one warm-up each. Prints the
   best and median times, the ratio ours/pyvips (below 1: we are faster) and the bytes.
   The 24 MP source is made once: the corpus's largest photo (mate's ``Elephants``, 5640x3172)
   upscaled with Lanczos to 6532x3674 and saved as a baseline JPEG, q92 4:2:0, as cameras write
   (``.cache/bench/render-24mp.jpg``); ``--source`` names a real photo instead.
2. Size: on the corpus's JPEG photos, for each rendition size (400 px thumbnail, 1600 px large),
   the pipeline's pixels just before encoding (``bench.quality.rendition_pixels``) encoded as the
   JPEG rendition (q82), then as WebP and AVIF at the lowest quality whose SSIM against those
   pixels reaches the JPEG's own (``bench.quality.ssim``, per photo, by bisection). Prints the
   median bytes against JPEG (the saving), the median matched quality and the AVIF encode time
   at that quality (and at the quality processing uses for that size).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from bench.corpus import CACHE, CORPUS, corpus
from bench.quality import rendition_pixels, ssim
from chalicelib import imaging, operations, transform

SIDE = 1600
SOURCE = CACHE / "render-24mp.jpg"
SIZE_BOXES = {"thumb": (400, 400), "large": (1600, 1600)}


def _source(path: str | None) -> bytes:
    if path:
        return Path(path).read_bytes()
    if not SOURCE.exists():
        corpus()  # fetched if needed
        with Image.open(CORPUS / "mate-Elephants_5640x3172.jpg") as im:
            big = im.convert("RGB").resize((6532, 3674), Image.Resampling.LANCZOS)
        big.save(SOURCE, "JPEG", quality=92, subsampling="4:2:0")
    return SOURCE.read_bytes()


def _ms(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def _stacks(data: bytes, fmt: str) -> dict[str, Callable[[], bytes]]:
    import pyvips

    spec = operations.Spec(width=SIDE, height=SIDE, format=fmt)

    def ours() -> bytes:
        return transform.render(data, spec).data

    def vips() -> bytes:
        im = pyvips.Image.thumbnail_buffer(data, SIDE, height=SIDE, size="down")
        if fmt == "webp":
            return bytes(im.webpsave_buffer(Q=imaging.WEBP_QUALITY, effort=imaging.WEBP_METHOD, keep="none"))
        # libheif's AV1 speed is 9 - effort: the same libaom speed as ours at this size.
        fast = im.width * im.height > imaging.AVIF_FAST_PIXELS
        speed = imaging.AVIF_FAST_SPEED if fast else imaging.AVIF_SPEED
        return bytes(im.heifsave_buffer(Q=imaging.ALTERNATE_QUALITY["AVIF"], compression="av1",
                                        effort=9 - speed, keep="none"))  # fmt: skip

    return {"imageshelf": ours, "pyvips": vips}


def miss(data: bytes, repeats: int) -> None:
    """Wall time (what a request waits) and CPU time of the whole process, all threads (the work
    done; it moves far less than wall time when other processes share the cores)."""
    with Image.open(io.BytesIO(data)) as im:
        mp, mb = im.width * im.height / 1e6, len(data) / 1e6
        print(f"Miss: {im.width}x{im.height} JPEG ({mp:.1f} MP, {mb:.1f} MB) -> {SIDE} px box, "
              f"best / median of {repeats}, alternated; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'format':<6} {'stack':<11} {'best ms':>8} {'median ms':>10} {'CPU ms':>7} {'bytes':>9}  size")
    for fmt in ("webp", "avif"):
        stacks = _stacks(data, fmt)
        times: dict[str, list[float]] = {name: [] for name in stacks}
        cpu: dict[str, list[float]] = {name: [] for name in stacks}
        out: dict[str, bytes] = {name: fn() for name, fn in stacks.items()}  # warm-up
        for i in range(repeats):
            order = list(stacks) if i % 2 == 0 else list(stacks)[::-1]
            for name in order:
                start = time.process_time()
                out[name], ms = _ms(stacks[name])
                cpu[name].append((time.process_time() - start) * 1000)
                times[name].append(ms)
        for name, values in times.items():
            with Image.open(io.BytesIO(out[name])) as im:
                size = f"{im.width}x{im.height} {im.format}"
            print(f"{fmt:<6} {name:<11} {min(values):>8.0f} {statistics.median(values):>10.0f} "
                  f"{statistics.median(cpu[name]):>7.0f} {len(out[name]):>9,}  {size}")  # fmt: skip
        ours, theirs = times["imageshelf"], times["pyvips"]
        work = statistics.median(cpu["imageshelf"]) / statistics.median(cpu["pyvips"])
        median = statistics.median(ours) / statistics.median(theirs)
        print(f"{fmt:<6} ours/pyvips: best {min(ours) / min(theirs):.2f}, median {median:.2f}, "
              f"CPU {work:.2f}\n")  # fmt: skip


def _encode(im: Image.Image, fmt: str, quality: int) -> bytes:
    """``fmt`` is JPEG, WEBP, AVIF (at imaging's speed for the size) or AVIF-<speed>."""
    if fmt == "JPEG":
        return transform._jpeg(im.copy(), quality)
    name, _, speed = fmt.partition("-")
    return transform._lossy(im.copy(), name, quality, int(speed) if speed else None)


def _score(data: bytes, reference: Image.Image) -> float:
    with Image.open(io.BytesIO(data)) as im:
        return ssim(im, reference)


def _matching(im: Image.Image, fmt: str, target: float) -> tuple[int, bytes, float]:
    """The lowest quality (bisection over 1..100) whose SSIM reaches ``target``: q, bytes, ms."""
    low, high = 1, 100
    best: tuple[int, bytes, float] | None = None
    while low <= high:
        q = (low + high) // 2
        data, ms = _ms(lambda q=q: _encode(im, fmt, q))
        if _score(data, im) >= target:
            best, high = (q, data, ms), q - 1
        else:
            low = q + 1
    if best is None:
        data, ms = _ms(lambda: _encode(im, fmt, 100))
        best = (100, data, ms)
    return best


def sizes(limit: int) -> None:
    files = [f for f in corpus() if f.suffix == ".jpg"][:limit]
    print(f"Size at equal SSIM: {len(files)} JPEG photos of the corpus, the JPEG rendition at "
          f"q{imaging.JPEG_QUALITY}; WebP method {imaging.WEBP_METHOD}; AVIF speed {imaging.AVIF_SPEED} "
          f"(speed {imaging.AVIF_FAST_SPEED} above {imaging.AVIF_FAST_PIXELS / 1e6:.1f} MP)")  # fmt: skip
    print(f"{'rendition':<10} {'format':<7} {'median bytes':>12} {'vs JPEG':>8} {'saving':>7} "
          f"{'median q':>8} {'encode ms':>9}")  # fmt: skip
    for name, box in SIZE_BOXES.items():
        # Above AVIF_FAST_PIXELS imaging encodes AVIF at the faster speed: show the slower one too.
        slow = box[0] * box[1] > imaging.AVIF_FAST_PIXELS
        formats = ["WEBP", "AVIF"] + ([f"AVIF-{imaging.AVIF_SPEED}"] if slow else [])
        rows: dict[str, list[tuple[int, float, int, float]]] = {name: [] for name in ["JPEG", *formats]}
        fixed_ms: list[float] = []
        for f in files:
            pixels = rendition_pixels(f.read_bytes(), box)
            jpeg, jpeg_ms = _ms(lambda pixels=pixels: _encode(pixels, "JPEG", imaging.JPEG_QUALITY))
            target = _score(jpeg, pixels)
            rows["JPEG"].append((len(jpeg), 1.0, imaging.JPEG_QUALITY, jpeg_ms))
            for fmt in formats:
                q, data, ms = _matching(pixels, fmt, target)
                rows[fmt].append((len(data), len(data) / len(jpeg), q, ms))
            fixed_ms.append(_ms(lambda pixels=pixels: imaging._encode_alternate(pixels.copy(), "AVIF"))[1])
        for fmt, values in rows.items():
            ratio = statistics.median(v[1] for v in values)
            print(f"{name:<10} {fmt:<7} {statistics.median(v[0] for v in values):>12,.0f} {ratio:>8.0%} "
                  f"{1 - ratio:>7.0%} {statistics.median(v[2] for v in values):>8.0f} "
                  f"{statistics.median(v[3] for v in values):>9.0f}")  # fmt: skip
        fixed_q = (imaging.ALTERNATE_QUALITY_LARGE if slow else imaging.ALTERNATE_QUALITY)["AVIF"]
        print(f"{name:<10} AVIF at q{fixed_q} (processing's): median encode "
              f"{statistics.median(fixed_ms):.0f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per stack (default 7)")
    parser.add_argument("--limit", type=int, default=12, help="photos for the size comparison (default 12)")
    parser.add_argument("--source", help="a large JPEG to time instead of the generated 24 MP one")
    parser.add_argument("--skip-sizes", action="store_true", help="time the miss only")
    args = parser.parse_args()
    miss(_source(args.source), args.repeats)
    if not args.skip_sizes:
        sizes(args.limit)


if __name__ == "__main__":
    main()
