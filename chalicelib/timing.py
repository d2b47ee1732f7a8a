"""Where the time goes: named stages of one piece of work, in milliseconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Adds the milliseconds spent in each ``with stopwatch("stage"):`` block to ``into``."""

    def __init__(self, into: dict[str, float] | None = None) -> None:
        self.into = into if into is not None else {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = (time.perf_counter() - start) * 1000
            self.into[stage] = round(self.into.get(stage, 0.0) + spent, 1)
