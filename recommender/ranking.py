"""The order of a result list: the closest match in appearance first, then the best overall matches.

The search vector's last part is the attribute heads' predicted type, gender and colour: it lifts
same-type / same-colour results (held-out P@10 articleType 0.773 -> 0.848, colour 0.464 -> 0.584) but
a shopper's photo of a catalog product then loses that product whenever a head misreads the photo
(rank-1 0.906 in plain order). Among the top POOL candidates, the one closest in the appearance part
alone goes first; the rest keep their order: rank-1 0.960 at the same P@10 (scripts/ablate.py)."""
from __future__ import annotations

import numpy as np

POOL = 50


def promote_closest(rows: np.ndarray, scores: np.ndarray, vectors: np.ndarray, query: np.ndarray,
                    appearance_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` (best first) with the row whose first `appearance_dims` components best match the query's
    moved to the front; scores travel with their rows."""
    if len(rows) < 2 or appearance_dims <= 0:
        return rows, scores
    order = np.sort(rows)  # memory-mapped vectors read in file order
    appearance = np.asarray(vectors[order, :appearance_dims], np.float32) @ np.asarray(query[:appearance_dims], np.float32)
    best = int(order[int(np.argmax(appearance))])
    first = int(np.flatnonzero(rows == best)[0])
    if first == 0:
        return rows, scores
    sequence = np.r_[first, np.arange(first), np.arange(first + 1, len(rows))]
    return rows[sequence], scores[sequence]
