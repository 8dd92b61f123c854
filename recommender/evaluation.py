"""Retrieval quality measured on a built index: leave-one-out precision with identical images excluded."""
from __future__ import annotations

import numpy as np

from .metadata import Metadata


def leave_one_out_precision(embeddings: np.ndarray, metadata: Metadata, field: str, k: int = 10,
                            queries: np.ndarray | None = None, batch: int = 1024) -> float:
    """Mean share of a query's top-k neighbours (exact cosine) that share its `field` value.

    The query itself and byte-identical copies of its image are excluded, so duplicates in the
    catalog cannot inflate the number."""
    embeddings = np.asarray(embeddings, np.float32)
    labels = metadata.columns[field]
    query_rows = np.arange(len(metadata)) if queries is None else np.asarray(queries)
    sha = metadata.image_sha
    hits = []
    for start in range(0, len(query_rows), batch):
        rows = query_rows[start:start + batch]
        scores = embeddings[rows] @ embeddings.T
        scores[np.arange(len(rows)), rows] = -np.inf
        for i, row in enumerate(rows):
            if sha[row]:
                scores[i, sha == sha[row]] = -np.inf
            top = np.argpartition(-scores[i], k)[:k]
            hits.append(np.mean(labels[top] == labels[row]))
    return float(np.mean(hits))
