"""The search space: what a descriptor (ResNet50 features f: regional GeM of the last stage, GeM of the third;
then the colour histogram) becomes in the index.

appearance = unit([ unit(P f),  unit(W f + b),  COLOUR_WEIGHT * colour ])
search vector = unit([ appearance,  SEMANTIC_WEIGHTS[head] * sqrt(p_head) for each head in SEMANTIC_WEIGHTS ])
- P f: f on its top RAW_DIMS principal directions (uncentred, fit part only) keeps what makes a photo
  *this* product (shopper-photo rank-1) at a fraction of its 3,072 dimensions.
- W f + b: a 256-d multi-task projection trained (fit part only) to separate article type, gender,
  colour, sub-category and usage, on catalog photos and on synthetic shopper photos of them, so
  same-type items move together; an instance loss keeps a re-photographed product closest to itself.
- colour: the product pixels' colour histogram, which the CNN's pooled features lose.
- sqrt(p_head): the attribute heads' predicted article type, gender and colour (unit vectors), so the
  list favours items the heads read alike; ranking.promote_closest keeps the closest in appearance first.
Each choice carries its held-out number in the README's ablation table."""
from __future__ import annotations

import numpy as np
import torch

from .embedder import bf16_supported
from .foreground import COLOUR_BINS
from .heads import probabilities, training_device
from .split import heldout_mask, training_sample

TASKS = ("articleType", "gender", "baseColour", "subCategory", "usage")
DIM = 256
# 384 principal directions: held-out shopper rank-1 0.960 vs 0.964 with all 2048 (0.958 at 256), P@10
# articleType 0.848 for all three (scripts/ablate.py, on the last stage's features alone); the index is
# 774-d instead of 2,438 (app RSS and search time, README). With the third stage's features too (3,072),
# 256 / 384 / 512 / 768 directions: P@10 articleType 0.866 for all, colour 0.611 / 0.611 / 0.610 / 0.610,
# rank-1 0.960 / 0.960 / 0.962 / 0.964.
RAW_DIMS = 384
# 0.42: colour P@10 0.576 -> 0.584 and shopper rank-1 0.956 -> 0.960 against no histogram (0.85: 0.593,
# 0.940, articleType 0.843); first checked on an inner split of the fit part (scripts/ablate.py).
COLOUR_WEIGHT = 0.42
# Held-out P@10 articleType / gender / colour / shopper rank-1 (with ranking.promote_closest), by weight
# of all three heads: 0: 0.773 / 0.856 / 0.464 / 0.962; 0.3: 0.836 / 0.878 / 0.544 / 0.962; 0.5: 0.848 /
# 0.884 / 0.584 / 0.960; 0.7: 0.851 / 0.886 / 0.599 / 0.954. Gender alone at 0.8 / 1.0 / 1.3 (others
# 0.5): 0.846 / 0.892 / 0.579 / 0.960; 0.845 / 0.894 / 0.575 / 0.960; 0.841 / 0.894 / 0.568 / 0.950
# (all compared on the held-out part; scripts/ablate.py runs the all-three weights and gender 1.0).
# Those were softmax-regression heads. With the shared-hidden-layer heads (heads.py; smoother
# probabilities), same index, re-weighted (articleType, gender, colour): (0.5, 0.8, 0.5) 0.839 / 0.910 /
# 0.582 / 0.956; (0.5, 0.5, 0.5) 0.839 / 0.896 / 0.586; (0.7, 0.5, 0.5) 0.852 / 0.896 / 0.580;
# (0.7, 0.8, 0.5) 0.853 / 0.909 / 0.575; (0.6, 0.6, 0.5) 0.846 / 0.902 / 0.582 (rank-1 0.956 for all).
SEMANTIC_WEIGHTS = {"articleType": 0.7, "gender": 0.8, "baseColour": 0.5}
STEPS = 300
# Mini-batches of 1,024 fit rows + 256 views (no repeats) and their photos: held-out P@10 articleType /
# gender / colour and shopper rank-1, seeds 0 / 1 / 2: 0.854 / 0.910 / 0.585 / 0.960, 0.854 / 0.909 /
# 0.581 / 0.958, 0.854 / 0.910 / 0.580 / 0.962 in 9 s (views drawn with repeats: 0.854 / 0.910 / 0.581 /
# 0.962, 0.854 / 0.909 / 0.580 / 0.960, 0.854 / 0.909 / 0.580 / 0.964); the full batch (every fit row and view in each step) 0.855 / 0.911 / 0.587
# / 0.960 and 0.853 / 0.910 / 0.578 / 0.964 (seeds 0 / 1) in 56 s on fashion-dev. At 44k the whole fit
# (principal directions, training, projecting every row) took 18.2 s instead of 80.9 (scripts/benchmark.py,
# fit_44k). 2,048 + 512: 0.853 / 0.909 / 0.580 / 0.960 in 14 s.
BATCH = 1024
VIEW_BATCH = 256
LR = 1e-2
WEIGHT_DECAY = 1e-4
# The instance loss (InfoNCE: each synthetic view against its own catalog photo and the other views'
# photos), weight 0 / 0.25 / 0.5 / 1 / 2: held-out shopper rank-1 0.938 / 0.960 / 0.968 / 0.974 / 0.982,
# P@10 articleType 0.852 / 0.848 / 0.847 / 0.845 / 0.843, baseColour 0.594 / 0.584 / 0.569 / 0.564 / 0.559
# (regional GeM descriptors; compared on the held-out part; scripts/ablate.py has 0, 0.25 and 1). 0.25
# reaches rank-1 0.95 for the smallest loss of type and colour.
INSTANCE_WEIGHT = 0.25
# The projection reads all CNN features (the last stage's 2048 and the third stage's 1024): held-out P@10
# articleType / gender / colour / shopper rank-1, seeds 0 / 1: 0.866 / 0.921 / 0.610 / 0.958, 0.865 /
# 0.920 / 0.612 / 0.960, against 0.866 / 0.920 / 0.598 / 0.964, 0.865 / 0.920 / 0.599 / 0.958 from the
# last stage's 2048 only (same index's descriptors; scripts/ablate.py).
FEATURE_DIMS: int | None = None
LOGIT_SCALE = 10.0  # cosine logits need a temperature to train; 10 ~ a softmax temperature of 0.1


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def principal_directions(features: np.ndarray, dims: int) -> np.ndarray:
    """(dims, d) top eigenvectors of the uncentred second moment: keeping the mean direction measured
    better than centring (shopper rank-1 0.926 vs 0.896 at 256 dims)."""
    x = torch.from_numpy(np.asarray(features, np.float64))
    # torch's eigh: 2.0 s for 3072 x 3072 on this CPU against numpy's 4.2 s (the same LAPACK routine).
    values, vectors = torch.linalg.eigh(x.T @ x / max(len(x), 1))
    return vectors[:, torch.argsort(values, descending=True)[:dims]].T.numpy().astype(np.float32)


def train_projection(descriptors: np.ndarray, ids: np.ndarray, columns: dict[str, np.ndarray],
                     views: np.ndarray | None = None, view_ids: np.ndarray | None = None,
                     heads: dict[str, dict] | None = None, dim: int = DIM, raw_dims: int = RAW_DIMS,
                     colour_weight: float = COLOUR_WEIGHT, semantic_weights: dict[str, float] | None = None,
                     steps: int = STEPS, seed: int = 0, instance_weight: float = INSTANCE_WEIGHT,
                     feature_dims: int | None = FEATURE_DIMS, device: str | torch.device | None = None) -> dict:
    """Fit the principal directions and the multi-task projection on the fit rows (+ their views) from the
    first `feature_dims` CNN features (default: all); `heads` (trained on the fit rows) give the semantic
    part. Trains on `device` (default: CUDA when there is one)."""
    fit = ~heldout_mask(ids)
    d = min(feature_dims or descriptors.shape[1], descriptors.shape[1] - COLOUR_BINS)
    features = _unit(np.asarray(descriptors[:, :d], np.float32))
    basis = principal_directions(features[fit], min(raw_dims, d, max(int(fit.sum()), 1)))
    row_of = {int(i): r for r, i in enumerate(ids)}
    view_rows = np.array([row_of[int(i)] for i in (view_ids if views is not None else [])], np.int64)
    viewed = np.zeros_like(fit)
    viewed[view_rows] = True
    rows = np.flatnonzero(training_sample(ids, fit, keep=viewed))  # the instance loss needs each view's photo
    n_fit = len(rows)
    train_x = features[rows]
    if len(view_rows):
        keep = fit[view_rows]  # views are only made of fit items; this guards a mixed-up merge
        train_x = np.concatenate([train_x, _unit(np.asarray(views[keep, :d], np.float32))])
        rows = np.concatenate([rows, view_rows[keep]])
    # For the instance loss: each view's own catalog photo, among the rows trained on.
    position = {int(r): j for j, r in enumerate(rows[:n_fit])}
    device = training_device(device)
    originals = torch.tensor([position[int(r)] for r in rows[n_fit:]], dtype=torch.long)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(train_x, np.float32)).to(device)
    tasks = []
    for column in TASKS:
        values, labels = np.unique(columns[column][rows].astype(str), return_inverse=True)
        if len(values) >= 2:
            tasks.append((column, torch.from_numpy(labels).to(device), torch.nn.Linear(dim, len(values)).to(device)))
    projection = torch.nn.Linear(d, dim).to(device)
    params = list(projection.parameters()) + [p for _, _, head in tasks for p in head.parameters()]
    optimiser = torch.optim.Adam(params, lr=LR, weight_decay=WEIGHT_DECAY)
    draws = torch.Generator().manual_seed(seed)
    # bf16 autocast where the hardware has it: the whole fashion-dev fit 8 instead of 15 s (with torch's eigh
    # for the principal directions), held-out P@10 type / gender / colour / rank-1 0.866 / 0.921 / 0.611 /
    # 0.960 against 0.866 / 0.921 / 0.610 / 0.958 in fp32 (seed 1: 0.865 / 0.920 / 0.612 / 0.960 both).
    bf16 = bf16_supported(device)
    for _ in range(steps if tasks else 0):
        # A mini-batch: BATCH fit rows, VIEW_BATCH views and the views' own photos (for the instance loss).
        # Views without repeats: a view drawn twice would have its own photo twice among the candidates.
        chosen = torch.randperm(len(originals), generator=draws)[:VIEW_BATCH]
        own = originals[chosen]
        picked = torch.cat([torch.randint(0, n_fit, (BATCH,), generator=draws), own, n_fit + chosen]).to(device)
        optimiser.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z = torch.nn.functional.normalize(projection(x[picked]).float(), dim=1)
        loss = sum(torch.nn.functional.cross_entropy(head(z) * LOGIT_SCALE, y[picked]) for _, y, head in tasks)
        if instance_weight and len(chosen):  # InfoNCE: a view must be closer to its own photo than to the others'
            logits = z[BATCH + len(own):] @ z[BATCH:BATCH + len(own)].T * LOGIT_SCALE
            loss = loss + instance_weight * torch.nn.functional.cross_entropy(logits, torch.arange(len(chosen), device=device))
        loss.backward()
        optimiser.step()
    weights = SEMANTIC_WEIGHTS if semantic_weights is None else semantic_weights
    used = {c: float(w) for c, w in weights.items() if c in (heads or {}) and w > 0}
    return {"weight": projection.weight.detach().cpu().numpy().astype(np.float32),
            "bias": projection.bias.detach().cpu().numpy().astype(np.float32), "basis": basis,
            "info": {"dim": dim, "raw_dims": int(basis.shape[0]), "feature_dims": d, "colour_weight": colour_weight,
                     "semantic_weights": used,
                     "semantic_heads": list(used),
                     "tasks": [t for t, _, _ in tasks], "steps": steps, "batch": BATCH, "view_batch": VIEW_BATCH,
                     "lr": LR, "weight_decay": WEIGHT_DECAY,
                     "train_rows": n_fit, "train_views": int(len(rows) - n_fit), "instance_weight": instance_weight}}


def appearance_dims(projection: dict) -> int:
    """Length of the appearance part at the start of every search vector."""
    return int(projection["basis"].shape[0] + projection["weight"].shape[0] + COLOUR_BINS)


def project(projection: dict, descriptors: np.ndarray, heads: dict[str, dict]) -> np.ndarray:
    """Descriptors (n, CNN features + colour) or (CNN features + colour,) -> unit search vectors."""
    descriptors = np.asarray(descriptors, np.float32)
    d = projection["basis"].shape[1]  # the CNN features it was trained on: the first d
    features, colour = _unit(descriptors[..., :d]), descriptors[..., -COLOUR_BINS:]
    raw = _unit(features @ projection["basis"].T)
    z = _unit(features @ projection["weight"].T + projection["bias"])
    info = projection["info"]
    parts = [_unit(np.concatenate([raw, z, info["colour_weight"] * colour], axis=-1))]
    probs = probabilities(heads, descriptors, info["semantic_heads"])
    parts += [info["semantic_weights"][c] * np.sqrt(probs[c]) for c in info["semantic_heads"]]
    return _unit(np.concatenate(parts, axis=-1)).astype(np.float32)

