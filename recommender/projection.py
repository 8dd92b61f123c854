"""The search space: what a descriptor (ResNet50 GeM features + colour histogram) becomes in the index.

appearance = unit([ unit(P f),  unit(W f + b),  COLOUR_WEIGHT * colour ])
search vector = unit([ appearance,  SEMANTIC_WEIGHT * sqrt(p_head) for the SEMANTIC_HEADS ])
- P f: f on its top RAW_DIMS principal directions (uncentred, fit part only) keeps what makes a photo
  *this* product (shopper-photo rank-1) at a fraction of 2048 dimensions.
- W f + b: a 256-d multi-task projection trained (fit part only) to separate article type, gender,
  colour, sub-category and usage, on catalog photos and on synthetic shopper photos of them, so
  same-type items move together and a re-photographed product stays close to itself.
- colour: the product pixels' colour histogram, which the CNN's pooled features lose.
- sqrt(p_head): the attribute heads' predicted article type, gender and colour (unit vectors), so the
  list favours items the heads read alike; ranking.promote_closest keeps the closest in appearance first.
Each choice carries its held-out number in the README's ablation table."""
from __future__ import annotations

import numpy as np
import torch

from .foreground import COLOUR_BINS
from .heads import probabilities
from .split import heldout_mask

TASKS = ("articleType", "gender", "baseColour", "subCategory", "usage")
DIM = 256
# 384 principal directions: held-out shopper rank-1 0.914 vs 0.922 with all 2048 (0.904 at 256), P@10
# unchanged (scripts/ablate.py); the index is 774-d instead of 2,438 (app RSS and search time, README).
RAW_DIMS = 384
# 0.42: colour P@10 0.584 -> 0.589 and shopper rank-1 0.876 -> 0.914 against no histogram (0.85: 0.594,
# 0.876, articleType 0.839); first checked on an inner split of the fit part (scripts/ablate.py).
COLOUR_WEIGHT = 0.42
# Held-out P@10 articleType / gender / colour / shopper rank-1 (with ranking.promote_closest), by weight:
# 0: 0.794 / 0.869 / 0.465 / 0.906; 0.3: 0.836 / 0.881 / 0.557 / 0.908; 0.5: 0.844 / 0.886 / 0.589 / 0.914;
# 0.7: 0.847 / 0.887 / 0.600 / 0.904 (scripts/ablate.py).
SEMANTIC_HEADS = ("articleType", "gender", "baseColour")
SEMANTIC_WEIGHT = 0.5
STEPS = 300
LR = 1e-2
WEIGHT_DECAY = 1e-4
LOGIT_SCALE = 10.0  # cosine logits need a temperature to train; 10 ~ a softmax temperature of 0.1


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def principal_directions(features: np.ndarray, dims: int) -> np.ndarray:
    """(dims, d) top eigenvectors of the uncentred second moment: keeping the mean direction measured
    better than centring (shopper rank-1 0.926 vs 0.896 at 256 dims)."""
    x = np.asarray(features, np.float64)
    moment = x.T @ x / max(len(x), 1)
    values, vectors = np.linalg.eigh(moment)
    return vectors[:, np.argsort(values)[::-1][:dims]].T.astype(np.float32)


def train_projection(descriptors: np.ndarray, ids: np.ndarray, columns: dict[str, np.ndarray],
                     views: np.ndarray | None = None, view_ids: np.ndarray | None = None,
                     heads: dict[str, dict] | None = None, dim: int = DIM, raw_dims: int = RAW_DIMS,
                     colour_weight: float = COLOUR_WEIGHT, semantic_weight: float = SEMANTIC_WEIGHT,
                     steps: int = STEPS, seed: int = 0) -> dict:
    """Fit the principal directions and the multi-task projection on the fit rows (+ their views);
    `heads` (trained on the fit rows) give the semantic part."""
    fit = ~heldout_mask(ids)
    d = descriptors.shape[1] - COLOUR_BINS
    features = _unit(np.asarray(descriptors[:, :d], np.float32))
    basis = principal_directions(features[fit], min(raw_dims, d, max(int(fit.sum()), 1)))
    rows = np.flatnonzero(fit)
    train_x = features[rows]
    if views is not None and len(views):
        row_of = {int(i): r for r, i in enumerate(ids)}
        view_rows = np.array([row_of[int(i)] for i in view_ids], np.int64)
        keep = fit[view_rows]  # views are only made of fit items; this guards a mixed-up merge
        train_x = np.concatenate([train_x, _unit(np.asarray(views[keep, :d], np.float32))])
        rows = np.concatenate([rows, view_rows[keep]])
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(train_x, np.float32))
    tasks = []
    for column in TASKS:
        values, labels = np.unique(columns[column][rows].astype(str), return_inverse=True)
        if len(values) >= 2:
            tasks.append((column, torch.from_numpy(labels), torch.nn.Linear(dim, len(values))))
    projection = torch.nn.Linear(d, dim)
    params = list(projection.parameters()) + [p for _, _, head in tasks for p in head.parameters()]
    optimiser = torch.optim.Adam(params, lr=LR, weight_decay=WEIGHT_DECAY)
    for _ in range(steps if tasks else 0):
        optimiser.zero_grad()
        z = torch.nn.functional.normalize(projection(x), dim=1)
        loss = sum(torch.nn.functional.cross_entropy(head(z) * LOGIT_SCALE, y) for _, y, head in tasks)
        loss.backward()
        optimiser.step()
    return {"weight": projection.weight.detach().numpy().astype(np.float32),
            "bias": projection.bias.detach().numpy().astype(np.float32), "basis": basis,
            "info": {"dim": dim, "raw_dims": int(basis.shape[0]), "colour_weight": colour_weight,
                     "semantic_weight": semantic_weight,
                     "semantic_heads": [c for c in SEMANTIC_HEADS if c in (heads or {}) and semantic_weight > 0],
                     "tasks": [t for t, _, _ in tasks], "steps": steps, "lr": LR, "weight_decay": WEIGHT_DECAY,
                     "train_rows": int(fit.sum()), "train_views": int(len(rows) - fit.sum())}}


def appearance_dims(projection: dict) -> int:
    """Length of the appearance part at the start of every search vector."""
    return int(projection["basis"].shape[0] + projection["weight"].shape[0] + COLOUR_BINS)


def project(projection: dict, descriptors: np.ndarray, heads: dict[str, dict]) -> np.ndarray:
    """Descriptors (n, d + colour) or (d + colour,) -> unit search vectors."""
    descriptors = np.asarray(descriptors, np.float32)
    d = descriptors.shape[-1] - COLOUR_BINS
    features, colour = _unit(descriptors[..., :d]), descriptors[..., d:]
    raw = _unit(features @ projection["basis"].T)
    z = _unit(features @ projection["weight"].T + projection["bias"])
    info = projection["info"]
    parts = [_unit(np.concatenate([raw, z, info["colour_weight"] * colour], axis=-1))]
    parts += [info["semantic_weight"] * np.sqrt(probabilities(heads[c], descriptors)) for c in info["semantic_heads"]]
    return _unit(np.concatenate(parts, axis=-1)).astype(np.float32)

