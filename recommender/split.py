"""The one train/held-out split by product id, shared by precompute (heads) and evaluation."""
from __future__ import annotations

import hashlib

import numpy as np

HELDOUT_PERCENT = 20


def is_heldout(item_id: int) -> bool:
    """Deterministic and independent of catalog order: a hash of the id, not a random draw."""
    digest = hashlib.sha1(str(int(item_id)).encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELDOUT_PERCENT


def heldout_mask(ids: np.ndarray) -> np.ndarray:
    return np.fromiter((is_heldout(i) for i in ids), bool, len(ids))


# Heads and the search space train on at most this many fit rows. It was set when both trained in full
# batches (cost rows x steps: on a 44k catalog all 35k fit rows took 257 + 175 s, with the cap 78 + 79 s;
# scripts/benchmark.py, fit_44k). Both now train in mini-batches whose cost does not grow with the rows;
# the cap still bounds their memory and the principal directions' rows x 2048^2 work. Whether more fit
# rows would give better heads on the full catalog cannot be measured here: fashion-dev has 7,661 fit
# rows, so every number measured on it is unaffected.
MAX_TRAIN_ROWS = 12_000


def training_sample(ids: np.ndarray, fit: np.ndarray, cap: int = MAX_TRAIN_ROWS, keep: np.ndarray | None = None) -> np.ndarray:
    """`fit` narrowed to at most `cap` rows (plus the rows in `keep`), chosen by a hash of the id:
    deterministic and independent of catalog order, like the split itself."""
    if int(fit.sum()) <= cap:
        return fit
    rows = np.flatnonzero(fit)
    keys = np.array([int.from_bytes(hashlib.sha1(f"train:{int(i)}".encode()).digest()[:8], "little") for i in ids[rows]],
                    np.uint64)
    order = np.argsort(keys, kind="stable")
    sample = np.zeros_like(fit)
    sample[rows[order[:cap]]] = True
    return sample | (fit & keep) if keep is not None else sample
