"""Batched serving: concurrent queries share the model's forward passes.

Whoever finds the model free runs one pass over every query waiting (up to `max_batch`, oldest first)
and hands each caller its own row; the callers whose rows were computed return without running the
model. Nobody waits on a timer: a lone query runs at once, and under load the queue itself forms the
batches (one pass over 8 photos costs far less than 8 passes over 1). No model thread either: two
OpenMP teams on the same cores spin against each other."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np

from .settings import DEFAULT_QUERY_BATCH

In = TypeVar("In")


class _Job(Generic[In]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: In) -> None:
        self.item = item
        self.done = threading.Event()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class QueryBatcher(Generic[In]):
    """`batcher(item)` -> `run([item, ...])[i]` for this caller's item, computed together with whatever
    other threads asked meanwhile."""

    def __init__(self, run: Callable[[Sequence[In]], np.ndarray], max_batch: int = DEFAULT_QUERY_BATCH) -> None:
        self.run = run
        self.max_batch = max(1, max_batch)
        self._pending: list[_Job[In]] = []
        self._queue = threading.Lock()  # guards _pending
        self._model = threading.Lock()  # one forward pass at a time
        self.passes = 0  # forward passes run, and the items they carried: the batching actually achieved
        self.items = 0

    def __call__(self, item: In) -> np.ndarray:
        job = _Job(item)
        with self._queue:
            self._pending.append(job)
        while not job.done.is_set():
            with self._model:
                if job.done.is_set():  # a pass that ran while this caller waited for the model carried it
                    break
                with self._queue:
                    batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                self._serve(batch)
        if job.error is not None:
            raise job.error
        return job.result

    def _serve(self, batch: list[_Job[In]]) -> None:
        try:
            results = self.run([job.item for job in batch])
        except BaseException as exc:  # every caller in the pass gets the error, none waits forever
            for job in batch:
                job.error = exc
                job.done.set()
            return
        self.passes += 1
        self.items += len(batch)
        for job, result in zip(batch, results):
            job.result = result
            job.done.set()
