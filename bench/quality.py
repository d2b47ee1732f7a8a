"""Measure the quality knobs of chalicelib.imaging with SSIM (``python -m bench.quality``).

1. Resize path: our rendition (JPEG draft + reduce + Lanczos, before encoding) against a
   reference made the slow way (full decode, one Lanczos pass), for several headrooms
   (DRAFT_GAP = REDUCE_GAP).
2. JPEG quality: SSIM and bytes of the encoded thumbnail against the lossless one, q 60..95.

SSIM is computed on luma (BT.601) with an 11x11 Gaussian window (sigma 1.5), as in Wang et al.
"""

from __future__ import annotations

import io
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.corpus import corpus
from chalicelib import imaging

BOX = (400, 400)


def _gauss(x: np.ndarray) -> np.ndarray:
    k = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    k /= k.sum()
    x = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 0, x)
    return np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, x)


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM of the luma of two same-size images."""
    x = np.asarray(a.convert("L"), dtype=np.float64)
    y = np.asarray(b.convert("L"), dtype=np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _gauss(x), _gauss(y)
    sxx, syy, sxy = _gauss(x * x) - mx**2, _gauss(y * y) - my**2, _gauss(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def rendition_pixels(data: bytes, box: tuple[int, int]) -> Image.Image:
    """The pipeline's pixels just before encoding (the encoder is swapped for a recorder)."""
    seen: list[Image.Image] = []
    real = imaging._encode_still

    def record(im: Image.Image) -> Any:
        seen.append(im.copy())
        return real(im)

    imaging._encode_still = record
    try:
        imaging.render(data, [box])
    finally:
        imaging._encode_still = real
    return seen[0].convert("RGB")


def _reference(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    return im.resize(imaging.fit_size(*im.size, BOX), Image.Resampling.LANCZOS)


def main() -> None:
    files = [f for f in corpus() if f.suffix == ".jpg"]
    print(f"{len(files)} JPEG photos from the bench corpus, box {BOX}")
    print("\nResize path vs full-decode Lanczos reference (median / min SSIM):")
    refs = {f: _reference(f.read_bytes()) for f in files}
    for gap in (1.0, 1.5, 2.0):
        imaging.DRAFT_GAP = imaging.REDUCE_GAP = gap
        scores = [ssim(rendition_pixels(f.read_bytes(), BOX), refs[f]) for f in files]
        print(f"  headroom {gap}: {statistics.median(scores):.4f} / {min(scores):.4f}")
    imaging.DRAFT_GAP = imaging.REDUCE_GAP = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    print("\nJPEG quality (progressive, optimised, 4:2:0) vs the lossless thumbnail:")
    print("  q   median SSIM  min SSIM  median bytes")
    thumbs = [rendition_pixels(f.read_bytes(), BOX) for f in files]
    for q in (60, 70, 75, 80, 82, 85, 90, 95):
        scores, sizes = [], []
        for t in thumbs:
            buf = io.BytesIO()
            t.save(buf, "JPEG", quality=q, progressive=True, optimize=True)
            sizes.append(buf.tell())
            scores.append(ssim(Image.open(buf), t))
        print(
            f"  {q:<3} {statistics.median(scores):.4f}       {min(scores):.4f}"
            f"    {statistics.median(sizes):>8.0f}"
        )


if __name__ == "__main__":
    Path(".cache").mkdir(exist_ok=True)
    main()
