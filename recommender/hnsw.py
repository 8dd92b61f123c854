"""The HNSW graph's parameters, its build, and the one exact top-k: shared by the build (fitting), the
query path (serve.index) and the evaluations."""

from __future__ import annotations

import hnswlib
import numpy as np

from .rowfile import RowFile, row_chunks

# M=32, ef_construction=200, ef=64: recall@10 against exact search >= 0.999 on fashion-dev; higher ef
# leads to better accuracy, but slower search.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF = 64


def build_hnsw(
    embeddings: np.ndarray | RowFile, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION, threads: int = 1
) -> hnswlib.Index:
    """The HNSW graph over `embeddings` (an array or a RowFile; label i = row i), inserted a chunk at a
    time. One insertion thread by default: parallel insertion orders depend on thread timing, so the
    same catalog would give a different graph (and slightly different approximate results) on every build."""
    index = hnswlib.Index(space="ip", dim=embeddings.shape[1])
    index.init_index(max_elements=max(1, len(embeddings)), M=m, ef_construction=ef_construction, random_seed=100)
    for start, chunk in row_chunks(embeddings):
        index.add_items(chunk, np.arange(start, start + len(chunk)), num_threads=threads)
    return index


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest `scores`, best first, ties by position: the one exact top-k."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.lexsort((top, -scores[top]))]
