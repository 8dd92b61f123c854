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
