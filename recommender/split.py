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


# The search space trains on at most this many fit rows: it bounds its memory and the principal
# directions' work. fashion-dev has fewer fit rows, so no number measured on it depends on it.
MAX_TRAIN_ROWS = 12_000
# The heads read more: their training is a fixed number of steps whatever the rows, and they keep gaining
# from more products, the rare types most (docs/experiments.md#heads-rows). 40,000 covers the whole 44k
# catalog's fit part; held in bf16 they take 580 MB (float32, where the CPU has no bf16: 1.2 GB).
HEADS_MAX_TRAIN_ROWS = 40_000


def training_sample(
    ids: np.ndarray, fit: np.ndarray, cap: int = MAX_TRAIN_ROWS, keep: np.ndarray | None = None
) -> np.ndarray:
    """`fit` narrowed to at most `cap` rows (plus the rows in `keep`), chosen by a hash of the id:
    deterministic and independent of catalog order, like the split itself."""
    if int(fit.sum()) <= cap:
        return fit
    rows = np.flatnonzero(fit)
    keys = np.array(
        [int.from_bytes(hashlib.sha1(f"train:{int(i)}".encode()).digest()[:8], "little") for i in ids[rows]], np.uint64
    )
    order = np.argsort(keys, kind="stable")
    sample = np.zeros_like(fit)
    sample[rows[order[:cap]]] = True
    return sample | (fit & keep) if keep is not None else sample


# The heads' temperatures are fitted on this share of the fit rows, which their training leaves out.
CALIBRATION_PERCENT = 10


def calibration_mask(ids: np.ndarray) -> np.ndarray:
    """A hash of the id as `heldout_mask`, salted apart from it: which fit rows calibrate the heads."""
    keys = (hashlib.sha1(f"calibration:{int(i)}".encode()).digest() for i in ids)
    return np.fromiter((int.from_bytes(k[:4], "little") % 100 < CALIBRATION_PERCENT for k in keys), bool, len(ids))
