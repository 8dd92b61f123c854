"""Nearest-neighbour search over the catalog embeddings: HNSW for speed, exact scans where they are
cheaper or where HNSW cannot promise the exact filtered top-k."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import hnswlib
import numpy as np

from ..hnsw import HNSW_EF, top_k

# Below this share of the catalog, a filtered query scans its subset exactly: the scan is cheap
# and HNSW's filtered walk would visit mostly rejected nodes.
EXACT_SHARE = 0.2


class VectorIndex:
    """Cosine top-k over unit vectors, optionally restricted to a boolean row mask."""

    def __init__(self, embeddings: np.ndarray, hnsw: hnswlib.Index, ef: int = HNSW_EF) -> None:
        self.embeddings = embeddings
        self.hnsw = hnsw
        self.ef = ef
        hnsw.set_num_threads(1)  # one query is too small to split; concurrency comes from requests
        # ef is the graph's, not the query's: set and searched under one lock, or a concurrent query (hnswlib
        # lets go of the GIL) would search with another's beam. A walk takes well under a millisecond.
        self._walk = threading.Lock()

    @classmethod
    def load(cls, embeddings_path: Path, index_path: Path, ef: int = HNSW_EF) -> "VectorIndex":
        embeddings = np.load(embeddings_path, mmap_mode="r")
        hnsw = hnswlib.Index(space="ip", dim=embeddings.shape[1])
        hnsw.load_index(str(index_path), max_elements=len(embeddings))
        return cls(embeddings, hnsw, ef)

    def __len__(self) -> int:
        return len(self.embeddings)

    def exact(self, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over `rows` (all rows when None): the reference every result must match."""
        candidates = np.arange(len(self)) if rows is None else rows
        if len(candidates) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = np.asarray(self.embeddings[candidates] if rows is not None else self.embeddings) @ query
        top = top_k(scores, k)  # candidates are ascending, so ties by position are ties by row
        return candidates[top].astype(np.int64), scores[top].astype(np.float32)

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and cosine scores; with a mask, exactly the filtered top-k whenever k rows match."""
        query = np.asarray(query, np.float32)
        n = len(self)
        matches = n if mask is None else int(mask.sum())
        k = min(k, matches)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if mask is not None and matches <= EXACT_SHARE * n:
            return self.exact(query, k, np.flatnonzero(mask))
        # A filter rejecting a share of nodes needs a proportionally wider beam for the same recall.
        ef = max(k, math.ceil(self.ef * n / matches))
        try:
            with self._walk:
                self.hnsw.set_ef(min(ef, n))
                if mask is None:
                    labels, distances = self.hnsw.knn_query(query, k=k)
                else:
                    labels, distances = self.hnsw.knn_query(query, k=k, filter=lambda row: bool(mask[row]))
        except RuntimeError:  # hnswlib found fewer than k: never return fewer, scan instead
            return self.exact(query, k, None if mask is None else np.flatnonzero(mask))
        rows = labels[0].astype(np.int64)
        return rows, (1.0 - distances[0]).astype(np.float32)  # hnswlib "ip" distance is 1 - dot
