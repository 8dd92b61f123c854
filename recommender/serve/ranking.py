"""The order of a result list, and how feedback moves a query.

The search vector's last part is the attribute heads' predicted type, gender and colour: it lifts
same-type and same-colour results, but a shopper's photo of a catalog product then loses that product
whenever a head misreads the photo. Among the top POOL candidates, the one closest in the appearance
part alone goes first; the rest keep their order (docs/experiments.md#ranking)."""

from __future__ import annotations

import numpy as np

POOL = 50
# Photo + words (docs/experiments.md#photo--words): candidates drawn by the photo, how much the words'
# similarity to a candidate's text adds, and how much the photo's probability for the candidate's article type.
WORDS_POOL = 200
WORDS_WEIGHT = 0.25
KEEP_TYPE_WEIGHT = 0.5
# Rocchio weights (query, liked, disliked): the textbook defaults; scripts/evaluate.py measures the lift.
ROCCHIO = (1.0, 0.75, 0.25)


def promote_closest(
    rows: np.ndarray, scores: np.ndarray, vectors: np.ndarray, query: np.ndarray, appearance_dims: int
) -> tuple[np.ndarray, np.ndarray]:
    """`rows` (best first) with the row whose first `appearance_dims` components best match the query's
    moved to the front; scores travel with their rows."""
    if len(rows) < 2 or appearance_dims <= 0:
        return rows, scores
    order = np.sort(rows)  # memory-mapped vectors read in file order
    appearance = np.asarray(vectors[order, :appearance_dims], np.float32) @ np.asarray(
        query[:appearance_dims], np.float32
    )
    best = int(order[int(np.argmax(appearance))])
    first = int(np.flatnonzero(rows == best)[0])
    if first == 0:
        return rows, scores
    sequence = np.r_[first, np.arange(first), np.arange(first + 1, len(rows))]
    return rows[sequence], scores[sequence]


def rocchio(query: np.ndarray, liked: list[np.ndarray], disliked: list[np.ndarray]) -> np.ndarray:
    """Move the query towards liked items and away from disliked ones (unit length out)."""
    alpha, beta, gamma = ROCCHIO
    vector = alpha * np.asarray(query, np.float32)
    if liked:
        vector = vector + beta * np.mean(liked, axis=0)
    if disliked:
        vector = vector - gamma * np.mean(disliked, axis=0)
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
