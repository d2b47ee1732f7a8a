"""Where moto's S3 is looser than S3, made to behave like S3: for the local stack and the tests only.

Never imported by the app: S3 itself needs none of this.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_conditional = threading.Lock()


def keep_replaced_buffers() -> None:
    """moto frees an object's buffer as soon as another request replaces or deletes it, even while
    a first request is still answering with it ("I/O operation on closed file"); S3 has no such
    race. Leave the buffers to the garbage collector."""
    from moto.s3.models import FakeKey

    FakeKey.dispose = lambda self, garbage=False: None  # type: ignore[method-assign]


def atomic_conditional_writes() -> None:
    """moto checks a conditional write's If-None-Match/If-Match and then writes, as two steps:
    two racing ``IfNoneMatch="*"`` puts can both succeed. S3 lets exactly one win (the render
    lease relies on it), so conditional writes run one at a time here."""
    from moto.s3.responses import S3Response

    if getattr(S3Response.put_object, "_imageshelf_atomic", False):
        return
    for name in ("put_object", "delete_object"):
        real = getattr(S3Response, name)

        @functools.wraps(real)
        def conditional(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if "If-None-Match" in self.headers or "If-Match" in self.headers:
                with _conditional:
                    return _real(self, *args, **kwargs)
            return _real(self, *args, **kwargs)

        conditional._imageshelf_atomic = True  # type: ignore[attr-defined]
        setattr(S3Response, name, conditional)
