"""Large and hostile inputs made with Pillow, for the peak-RSS part of the benchmark.

Made once into ``.cache/bench/synthetic/`` from a corpus photo (upscaled, so it compresses like
a photo would not, but stays under the 20 MiB upload limit) or from flat colour (bombs).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image

from bench.corpus import CACHE, CORPUS

SYNTHETIC = CACHE / "synthetic"


def _photo(size: tuple[int, int]) -> Image.Image:
    with Image.open(CORPUS / "plasma-Volna-5120x2880.jpg") as im:
        return im.convert("RGB").resize(size, Image.Resampling.BILINEAR)


def _webp_header_bomb(width: int, height: int) -> bytes:
    """A 38-byte-ish lossless WebP whose header declares width x height."""
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\0" * 4
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make() -> dict[str, Path]:
    """name -> file; the names say what each input is."""
    SYNTHETIC.mkdir(parents=True, exist_ok=True)
    specs = {
        "25MP-baseline.jpg": lambda: _save(_photo((5000, 5000)), "JPEG", quality=90),
        "25MP-progressive.jpg": lambda: _save(_photo((5000, 5000)), "JPEG", quality=90, progressive=True),
        "25MP-rgb.png": lambda: _save(_photo((5000, 5000)).reduce(8).resize((5000, 5000)), "PNG"),
        "25MP-rgba.png": lambda: _save(_rgba((5000, 5000)), "PNG"),
        "25MP.webp": lambda: _save(_photo((5000, 5000)), "WEBP", quality=80),
        "49MP-rgba-flat.png": lambda: _save(Image.new("RGBA", (7000, 7000), (10, 200, 30, 128)), "PNG"),
        "49MP-progressive-444.jpg": lambda: _save(
            Image.new("RGB", (7000, 7000), (200, 30, 30)), "JPEG", progressive=True, subsampling=0
        ),
        "49MP-16bit-grey.png": lambda: _save(Image.new("I;16", (7000, 7000), 40000), "PNG"),
        "49MP-palette.gif": lambda: _save(Image.new("P", (7000, 7000), 3), "GIF"),
        "81MP-header-bomb.webp": lambda: _webp_header_bomb(9000, 9000),
        "268MP-bomb.png": lambda: _save(Image.new("1", (16384, 16384)), "PNG"),
    }
    out = {}
    for name, build in specs.items():
        path = SYNTHETIC / name
        if not path.exists():
            path.write_bytes(build())
        out[name] = path
    return out


def _rgba(size: tuple[int, int]) -> Image.Image:
    im = _photo(size).reduce(10).resize(size).convert("RGBA")
    mask = Image.radial_gradient("L").resize(size)
    im.putalpha(mask)
    return im


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


if __name__ == "__main__":
    for name, path in make().items():
        print(f"{name:28s} {path.stat().st_size:>12,}")
