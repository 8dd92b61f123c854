"""The embedding map: every catalog item placed in two dimensions so that neighbours in the search space
stay neighbours on the map (the Explore tab draws it), and how faithful a layout is."""

from __future__ import annotations

import hashlib

import numpy as np

from .hnsw import top_k
from .rowfile import RowFile

# The layout is fitted on at most this many items (chosen by a hash of the id) and every other item is
# placed into it: cost bounded whatever the catalog's size.
MAX_MAP_FIT = 5_000
PLACE_CHUNK = 20_000  # items placed into the layout at a time: bounded memory at any catalog size
KEPT_K, KEPT_OF = 10, 50  # neighbours_kept@10: the map's 10 nearest among the search space's 50


def map_sample(ids: np.ndarray, cap: int = MAX_MAP_FIT) -> np.ndarray:
    """Row indices of the items the layout is fitted on: deterministic, independent of catalog order."""
    if len(ids) <= cap:
        return np.arange(len(ids))
    keys = np.array([int.from_bytes(hashlib.sha1(f"map:{int(i)}".encode()).digest()[:8], "little") for i in ids])
    return np.sort(np.argsort(keys, kind="stable")[:cap])


# t-SNE needs a neighbourhood to model (perplexity 30 wants ~90 points); a smaller catalog is laid out
# by its two principal directions.
MIN_TSNE_ITEMS = 100


def map_method(count: int) -> str:
    return "tsne" if count >= MIN_TSNE_ITEMS else "pca"


def fit_map(vectors: np.ndarray | RowFile, ids: np.ndarray, method: str | None = None, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 positions of the unit `vectors` (an array or a RowFile): "tsne" (openTSNE, cosine,
    fitted on the sample and every other item placed into it a chunk at a time;
    docs/experiments.md#embedding-map) or "pca" (the top two principal directions, for the small
    catalogs t-SNE cannot lay out); default `map_method(n)`."""
    method = method or map_method(len(vectors))
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2), np.float32)
    if method == "pca":
        small = np.asarray(vectors[:], np.float32)
        centred = small - small.mean(0)
        sample = centred[map_sample(ids)]
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
        return (centred @ vt[:2].T).astype(np.float32)
    from openTSNE import TSNE

    rows = map_sample(ids)
    tsne = TSNE(n_components=2, perplexity=30, metric="cosine", n_jobs=2, random_state=seed)
    embedding = tsne.fit(np.asarray(vectors[rows], np.float32))
    positions = np.zeros((len(vectors), 2), np.float32)
    positions[rows] = np.asarray(embedding, np.float32)
    rest = np.setdiff1d(np.arange(len(vectors)), rows)
    for start in range(0, len(rest), PLACE_CHUNK):
        part = rest[start : start + PLACE_CHUNK]
        positions[part] = np.asarray(embedding.transform(np.asarray(vectors[part], np.float32)), np.float32)
    return positions


def neighbours_kept(
    positions: np.ndarray, vectors: np.ndarray, rows: np.ndarray, k: int = KEPT_K, of: int = KEPT_OF
) -> float:
    """Mean share of each query row's `k` nearest items on the map that are among its `of` nearest in the
    search space (itself excluded from both)."""
    positions = np.asarray(positions, np.float32)
    vectors = np.asarray(vectors, np.float32)
    kept = []
    for row in rows:
        distance = ((positions - positions[row]) ** 2).sum(1)
        distance[row] = np.inf
        similarity = vectors @ vectors[row]
        similarity[row] = -np.inf
        on_map, in_space = top_k(-distance, k), top_k(similarity, of)
        kept.append(len(np.intersect1d(on_map, in_space)) / k)
    return float(np.mean(kept))


def place(positions: np.ndarray, neighbour_rows: np.ndarray) -> np.ndarray:
    """Where a query goes on the map: the mean position of its nearest catalog items (a query is not
    fitted into the layout itself)."""
    return np.asarray(positions, np.float32)[neighbour_rows].mean(0)
