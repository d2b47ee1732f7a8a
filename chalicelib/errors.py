"""One error type with stable codes, each mapped to an HTTP status."""

from __future__ import annotations

# code -> HTTP status. Codes are part of the public contract: never rename one.
STATUS_BY_CODE: dict[str, int] = {
    # request errors
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "file_too_large": 413,
    "unsupported_media_type": 415,
    # renders and details of an image that has no pixels to show (yet)
    "image_pending": 409,
    "image_failed": 409,
    "render_busy": 503,
    # image errors (recorded on a failed image; 422 if ever raised by a route)
    "empty_file": 422,
    "not_an_image": 422,
    "unsupported_format": 422,
    "corrupt_image": 422,
    "too_many_pixels": 422,
    "too_many_frames": 422,
    "processing_timeout": 422,
    "internal_error": 500,
}

IMAGE_ERROR_CODES = frozenset(
    {
        "empty_file",
        "not_an_image",
        "unsupported_format",
        "corrupt_image",
        "too_many_pixels",
        "too_many_frames",
        "file_too_large",
        "processing_timeout",
        "internal_error",
    }
)


class ImageshelfError(Exception):
    """A failure with a stable machine-readable ``code`` and a message for people.

    The message says what happened and, where it can, what to do about it.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return STATUS_BY_CODE[self.code]

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"ImageshelfError({self.code!r}, {self.message!r})"


def too_large(size: int, limit: int) -> ImageshelfError:
    """The ``file_too_large`` error, stating both sizes."""
    shown = f"{size / 2**20:.1f} MiB" if size < 2**60 else "far larger than that"
    return ImageshelfError("file_too_large", f"The file is {shown}; the limit is {limit / 2**20:.1f} MiB.")
