"""imageshelf_client: a small Python client for imageshelf's JSON API, and the ``imageshelf`` command.

    from imageshelf_client import Client, ImageshelfError

    shelf = Client("http://127.0.0.1:8000")
    image = shelf.upload("cat.jpg", wait=True)
    print(image.status, image.rendition("thumb").url)
    print(shelf.render_url(image.id, width=800, format="webp"))   # a render, by URL
    print(shelf.info("sample").camera)                             # the sample photo's EXIF

It needs only ``requests`` (and ``tqdm`` for the command's progress bars).
"""

from .client import SAMPLE, Client, ImageshelfError, render_signature, sniff_content_type
from .models import Camera, ErrorInfo, Image, ImageInfo, Original, Page, Rendered, Rendition

__all__ = [
    "SAMPLE",
    "Camera",
    "Client",
    "ErrorInfo",
    "Image",
    "ImageInfo",
    "ImageshelfError",
    "Original",
    "Page",
    "Rendered",
    "Rendition",
    "render_signature",
    "sniff_content_type",
]
__version__ = "1.0.0"
