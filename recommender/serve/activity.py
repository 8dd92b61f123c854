"""Queries under way in this process: the page's and the API's handlers run inside `QUERIES.query()`, so
that work sharing the CPU with them (the whole catalog's background build) can step aside while they run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable


class Activity:
    """Counts the queries under way; `on_start` listeners hear when the first one starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.idle_since = time.monotonic()  # when the last query ended (meaningful while running == 0)
        self._on_start: list[Callable[[], None]] = []

    def on_start(self, listener: Callable[[], None]) -> None:
        self._on_start.append(listener)

    def remove(self, listener: Callable[[], None]) -> None:
        if listener in self._on_start:
            self._on_start.remove(listener)

    @contextmanager
    def query(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
            first = self.running == 1
        if first:
            for listener in list(self._on_start):
                listener()
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
                self.idle_since = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last query ended; 0 while one runs."""
        with self._lock:
            return 0.0 if self.running else time.monotonic() - self.idle_since


QUERIES = Activity()
