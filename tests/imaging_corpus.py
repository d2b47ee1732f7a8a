"""Edge-case images for tests/test_imaging.py, made with Pillow (plus two ICC profiles fetched once).

Everything is generated in memory and deterministic. The CMYK and Adobe RGB profiles come from
Debian's ghostscript data (``libgs-common``): the system copy if installed, else
``apt-get download`` into ``.cache/test-icc/``; tests needing them skip only if both fail.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ICC_CACHE = ROOT / ".cache" / "test-icc"
GS_ICC = Path("/usr/share/color/icc/ghostscript")

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
CORNERS = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": YELLOW}


def save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def quadrants(size: tuple[int, int] = (120, 80)) -> Image.Image:
    """Four solid quadrants: red, green / blue, yellow (as displayed)."""
    w, h = size
    im = Image.new("RGB", size)
    im.paste(RED, (0, 0, w // 2, h // 2))
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    im.paste(BLUE, (0, h // 2, w // 2, h))
    im.paste(YELLOW, (w // 2, h // 2, w, h))
    return im


# What to store so that a viewer applying EXIF orientation N shows the canonical image.
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def oriented(fmt: str, orientation: int, canonical: Image.Image | None = None) -> bytes:
    """``canonical`` stored rotated/flipped, with EXIF orientation ``orientation`` to undo it."""
    canonical = canonical or quadrants()
    op = STORE_FOR_ORIENTATION.get(orientation)
    stored = canonical.transpose(op) if op is not None else canonical
    if fmt == "TIFF":
        return save(stored, "TIFF", tiffinfo={274: orientation})
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"exif": exif.tobytes()}
    if fmt == "JPEG":
        params["quality"] = 95
    if fmt == "WEBP":
        params["lossless"] = True
    return save(stored, fmt, **params)


def gps_photo() -> tuple[bytes, list[bytes]]:
    """A JPEG with GPS, a camera serial, an EXIF thumbnail, XMP, a comment and an ICC profile.

    Returns the file and byte strings that must not survive into any rendition.
    """
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0131] = "SecretFirmware 1.2"  # Software
    exif.get_ifd(0x8769)[0xA431] = "SERIAL-98765-XYZ"  # BodySerialNumber
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 26.7)
    gps[3], gps[4] = "W", (0.0, 7.0, 39.9)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description photoshop:City="SecretVille"/></x:xmpmeta>'
    data = save(quadrants((800, 600)), "JPEG", exif=exif.tobytes(), xmp=xmp, comment=b"secret comment",
                icc_profile=srgb, quality=90)  # fmt: skip
    return data, [b"Exif", b"SecretCam", b"SecretFirmware", b"SERIAL-98765", b"SecretVille",
                  b"secret comment",
                  b"xmpmeta", b"http://ns.adobe.com/xap"]  # fmt: skip


def png16_rgb(size: tuple[int, int], colour16: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), every pixel ``colour16``."""
    w, h = size
    row = b"\0" + struct.pack(">HHH", *colour16) * w
    raw = zlib.compress(row * h)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with one tiny IDAT (a bomb by declaration)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")  # fmt: skip


def webp_header_bomb(width: int = 9000, height: int = 9000) -> bytes:
    """A tiny lossless WebP whose header declares width x height (no real image data)."""
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\0" * 4 + b"\0"
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + b"\0"
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_claiming(width: int, height: int, progressive: bool = False, padding: int = 0) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF) is patched to declare ``width x height``.

    A few hundred bytes, however large the claim: libjpeg decodes what is there and fills the rest
    with flat grey. ``padding`` bytes of COM segments go before the frame (metadata, not pixels).
    """
    data = save(quadrants((16, 16)), "JPEG", quality=90, progressive=progressive)
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    patched = data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]
    comments = b""
    while padding > 0:
        body = min(padding, 65533)
        comments += b"\xff\xfe" + struct.pack(">H", body + 2) + b"c" * body
        padding -= body
    return patched[:2] + comments + patched[2:]


def animation(fmt: str, colours: list[tuple[int, int, int]], durations: list[int], size=(200, 100),
              loop: int | None = 0) -> bytes:  # fmt: skip
    frames = [Image.new("RGB", size, c) for c in colours]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": durations}
    if loop is not None:
        params["loop"] = loop
    if fmt == "WEBP":
        params["lossless"] = True
    return save(frames[0], fmt, **params)


def matrix_profile(name: str, primaries_xyz: list[tuple[float, float, float]], gamma: float) -> bytes:
    """A minimal ICC v2 RGB display profile (rXYZ/gXYZ/bXYZ + gamma TRC), e.g. Display P3."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    desc = name.encode() + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(desc)) + desc + b"\0" * 12 + b"\0" * 67,
        b"wtpt": xyz((0.9642, 1.0, 0.8249)),
        b"rXYZ": xyz(primaries_xyz[0]),
        b"gXYZ": xyz(primaries_xyz[1]),
        b"bXYZ": xyz(primaries_xyz[2]),
        b"rTRC": b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0",
        b"cprt": b"text\0\0\0\0public domain\0\0\0\0",
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for sig, data in tags.items():
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ") + b"\0" * 12
    header += b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
    header += s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + body


DISPLAY_P3 = [(0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)]


def ghostscript_profile(name: str) -> bytes | None:
    """``a98.icc`` (Adobe RGB) or ``default_cmyk.icc`` from Debian's ghostscript data."""
    for base in (GS_ICC, ICC_CACHE / "usr/share/color/icc/ghostscript"):
        if (base / name).exists():
            return (base / name).read_bytes()
    ICC_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", "libgs-common"], cwd=tmp, check=True,
                           capture_output=True, timeout=120)  # fmt: skip
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(ICC_CACHE)], check=True, timeout=120)
        except (OSError, subprocess.SubprocessError, StopIteration):
            return None
    path = ICC_CACHE / "usr/share/color/icc/ghostscript" / name
    return path.read_bytes() if path.exists() else None
