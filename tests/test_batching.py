"""Batched serving: concurrent queries share forward passes, each caller gets its own row, a lone query
runs at once, errors reach every caller of the pass."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from recommender.batching import QueryBatcher


class SlowDouble:
    """A stand-in for the model's cost: a fixed time a pass, whatever its size (as a CPU's batch does
    better than that only in the limit), recording each pass's batch."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds, self.batches = seconds, []

    def __call__(self, items):
        self.batches.append(list(items))
        time.sleep(self.seconds)
        return np.asarray(items, np.float32)[:, None] * 2


def _concurrently(batcher: QueryBatcher, values: list[int]) -> dict[int, np.ndarray]:
    out, start = {}, threading.Barrier(len(values))

    def ask(value: int) -> None:
        start.wait()
        out[value] = batcher(value)

    threads = [threading.Thread(target=ask, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def test_a_lone_query_runs_at_once_alone():
    model = SlowDouble(0.0)
    batcher = QueryBatcher(model)
    started = time.perf_counter()
    assert batcher(3)[0] == 6
    assert time.perf_counter() - started < 0.05 and model.batches == [[3]]


def test_concurrent_queries_share_passes_and_each_gets_its_own_row():
    model = SlowDouble()
    batcher = QueryBatcher(model, max_batch=16)
    out = _concurrently(batcher, list(range(12)))
    assert {v: float(r[0]) for v, r in out.items()} == {v: 2.0 * v for v in range(12)}
    assert sorted(v for batch in model.batches for v in batch) == list(range(12))  # each item computed once
    assert len(model.batches) < 12 and max(len(b) for b in model.batches) > 1


def test_a_pass_never_carries_more_than_max_batch():
    model = SlowDouble()
    out = _concurrently(QueryBatcher(model, max_batch=3), list(range(10)))
    assert len(out) == 10 and max(len(b) for b in model.batches) <= 3


def test_unbatched_baseline_runs_each_query_alone():
    model = SlowDouble(0.01)
    _concurrently(QueryBatcher(model, max_batch=1), list(range(6)))
    assert sorted(len(b) for b in model.batches) == [1] * 6


def test_an_error_in_a_pass_reaches_every_caller_in_it_and_the_next_pass_runs():
    calls = {"n": 0}

    def failing_once(items):
        calls["n"] += 1
        time.sleep(0.05)
        if calls["n"] == 1:
            raise RuntimeError("out of memory")
        return np.ones((len(items), 1), np.float32)

    batcher = QueryBatcher(failing_once)
    errors = []

    def ask() -> None:
        try:
            batcher(1)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.005)
    for thread in threads:
        thread.join()
    assert errors and all(str(e) == "out of memory" for e in errors)
    assert batcher(1)[0] == 1.0  # the batcher is usable after a failed pass


def test_the_embedder_batches_concurrent_queries_to_the_same_descriptors(embedder):
    pixels = np.random.default_rng(0).integers(0, 255, (6, 80, 60, 3), dtype=np.uint8)
    from PIL import Image

    images = [Image.fromarray(p) for p in pixels]
    alone = np.stack([embedder.embed_one(image) for image in images])
    out = {}

    def ask(i: int) -> None:
        out[i] = embedder.embed_one(images[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_allclose(np.stack([out[i] for i in range(6)]), alone, atol=2e-3)


@pytest.mark.parametrize("value, expected", [("", 16), ("1", 1), ("8", 8), ("x", 16)])
def test_query_batch_size_from_the_environment(value, expected):
    from recommender.settings import Settings

    assert Settings.from_env({"RECOMMENDER_QUERY_BATCH": value}).query_batch == expected
