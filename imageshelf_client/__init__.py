"""imageshelf_client: a small Python client for imageshelf's JSON API, and the ``imageshelf`` command.

    from imageshelf_client import Client, ImageshelfError

    shelf = Client("http://127.0.0.1:8000")
    image = shelf.upload("cat.jpg", wait=True)
    print(image.status, image.rendition("thumb").url)

It needs only ``requests`` (and ``tqdm`` for the command's progress bars).
"""

from .client import Client, ImageshelfError, sniff_content_type
from .models import ErrorInfo, Image, Original, Page, Rendition

__all__ = [
    "Client",
    "ErrorInfo",
    "Image",
    "ImageshelfError",
    "Original",
    "Page",
    "Rendition",
    "sniff_content_type",
]
__version__ = "1.0.0"
