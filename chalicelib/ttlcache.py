"""A small thread-safe cache whose entries expire: signed URLs, tokens read from SSM.

Each entry remembers when it was stored; ``get`` takes the age the caller still accepts, so one
cache can hold values with different lifetimes (a token and the fact that it is missing).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ExpiringCache[V]:
    """Values by key, least recently used first, at most ``max_entries`` of them.

    ``clock`` is the time source (monotonic seconds by default); tests pass a hand-moved one.
    """

    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, max_age: float | Callable[[V], float]) -> V | None:
        """The value stored under ``key`` if it is younger than ``max_age`` seconds (a number,
        or a function of the value), else None. A hit becomes the most recently used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, stored = entry
            limit = max_age(value) if callable(max_age) else max_age
            if self.clock() - stored >= limit:
                return None
            self._entries.move_to_end(key)
            return value

    def stale(self, key: Hashable) -> V | None:
        """The value stored under ``key`` whatever its age (a fallback when a refresh fails)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[0] if entry else None

    def put(self, key: Hashable, value: V) -> V:
        with self._lock:
            self._entries[key] = (value, self.clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
