"""The stacks compared by the benchmark: bytes in, JPEG/PNG/WebP bytes of one rendition out.

Each is the idiomatic way to make a thumbnail with that library; all write quality 82 JPEG, or PNG
when the picture has an alpha channel (imageshelf: PNG or lossless WebP, whichever is smaller).
"""

from __future__ import annotations

import io
from collections.abc import Callable

Stack = Callable[[bytes, tuple[int, int]], bytes]
QUALITY = 82


def imageshelf() -> Stack:
    from chalicelib import imaging

    return lambda data, box: imaging.fit(data, box).data


def pillow() -> Stack:
    """Plain Pillow: open, one LANCZOS resize of the full decode, save."""
    from PIL import Image

    from chalicelib.imaging import fit_size

    def run(data: bytes, box: tuple[int, int]) -> bytes:
        im = Image.open(io.BytesIO(data))
        im = im.resize(fit_size(*im.size, box), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            im.save(buf, "PNG")  # keep transparency, as the service must
        else:
            im.convert("RGB").save(buf, "JPEG", quality=QUALITY)
        return buf.getvalue()

    return run


def decode() -> Stack:
    """Pillow's decode alone (JPEG at the same reduced scale the pipeline asks for): the floor."""
    from PIL import Image

    from chalicelib import imaging

    def run(data: bytes, box: tuple[int, int]) -> bytes:
        im = Image.open(io.BytesIO(data))
        if im.format == "JPEG":
            w, h = imaging.fit_size(*im.size, box)
            im.draft(None, (int(w * imaging.DRAFT_GAP), int(h * imaging.DRAFT_GAP)))
        im.load()
        return b""

    return run


def pyvips() -> Stack:
    """libvips' thumbnail (shrink-on-load, colour-managed), then an interlaced JPEG."""
    import pyvips as vips

    def run(data: bytes, box: tuple[int, int]) -> bytes:
        im = vips.Image.thumbnail_buffer(data, box[0], height=box[1], size="down")
        if im.hasalpha():  # keep transparency, as the service must
            return im.pngsave_buffer(compression=6, keep="none")
        return im.jpegsave_buffer(Q=QUALITY, interlace=True, optimize_coding=True, keep="none")

    return run


def wand() -> Stack:
    """Wand/ImageMagick with the classic "efficient image resizing" recipe's filters:
    -filter Triangle -define filter:support=2 -thumbnail -unsharp 0.25x0.25+8+0.065
    -dither None -posterize 136 -quality 82 -define jpeg:fancy-upsampling=off -strip."""
    from wand.image import Image as WandImage

    from chalicelib.imaging import fit_size

    def run(data: bytes, box: tuple[int, int]) -> bytes:
        with WandImage(blob=data) as img:
            img.auto_orient()
            img.options["filter:support"] = "2"
            img.thumbnail(*fit_size(img.width, img.height, box)) if False else img.resize(
                *fit_size(img.width, img.height, box), filter="triangle"
            )
            img.unsharp_mask(radius=0.25, sigma=0.25, amount=8, threshold=0.065)
            img.posterize(136, dither="no")
            img.strip()
            if img.alpha_channel:  # keep transparency, as the service must
                img.format = "png"
                return img.make_blob()
            img.format = "jpeg"
            img.compression_quality = QUALITY
            img.options["jpeg:fancy-upsampling"] = "off"
            return img.make_blob()

    return run


STACKS: dict[str, Callable[[], Stack]] = {
    "imageshelf": imageshelf,
    "pyvips": pyvips,
    "pillow": pillow,
    "wand": wand,
    "decode": decode,
}
