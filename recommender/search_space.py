"""The search space: what a descriptor (ResNet50 features f: regional GeM of the last stage, GeM of the
third; then the colour histogram) becomes in the index.

appearance = unit([ unit(P f),  unit(W f + b),  colour_weight * colour ])
search vector = unit([ appearance,  semantic_weights[head] * sqrt(p_head) for each weighted head ])
- P f: f on its top principal directions (uncentred, fit part only) keeps what makes a photo *this*
  product (shopper-photo rank-1) at a fraction of its dimensions.
- W f + b: a multi-task projection trained (fit part only) to separate article type, gender, colour,
  sub-category and usage, on catalog photos and on synthetic shopper photos of them, so same-type items
  move together; an instance loss keeps a re-photographed product closest to itself.
- colour: the product pixels' colour histogram, which the CNN's pooled features lose.
- sqrt(p_head): the attribute heads' predicted article type, gender and colour, so the list favours
  items the heads read alike; serve.ranking.promote_closest keeps the closest in appearance first.
Every setting's measurement is in docs/experiments.md#search-space."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .foreground import COLOUR_BINS
from .heads import Heads, training_device
from .rowfile import RowFile, row_chunks
from .runtime import bf16_supported
from .split import heldout_mask, training_sample

TASKS = ("articleType", "gender", "baseColour", "subCategory", "usage")


@dataclass(frozen=True)
class SearchSpaceSettings:
    """How the search space is fitted and weighted (docs/experiments.md#search-space)."""

    dim: int = 256  # width of the multi-task projection
    raw_dims: int = 384  # principal directions kept: rank-1 flat from 256 up, and the index stays small
    colour_weight: float = 0.42  # the colour histogram in the appearance part: colour P@10 up, rank-1 kept
    # Heads' predictions in the vector: type and colour lift P@10; gender at 0.8 puts gender P@10 past 0.89.
    semantic_weights: Mapping[str, float] = field(
        default_factory=lambda: {"articleType": 0.7, "gender": 0.8, "baseColour": 0.5}
    )
    steps: int = 300
    batch: int = 1024  # fit rows a mini-batch; same quality as full batches, 7x faster
    view_batch: int = 256  # synthetic views a mini-batch (with their own photos), drawn without repeats
    lr: float = 1e-2
    weight_decay: float = 1e-4
    instance_weight: float = 0.25  # the smallest weight that keeps shopper rank-1 at 0.95 or more
    # CNN features read, the first ones of a descriptor (None: all before colour; a build reads those before
    # the heads' grid). The third stage adds colour P@10.
    feature_dims: int | None = None
    logit_scale: float = 10.0  # cosine logits need a temperature to train; 10 ~ a softmax temperature of 0.1
    seed: int = 0


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class SearchSpace:
    """The fitted search space: principal directions, the projection, and the weights of the parts."""

    basis: np.ndarray  # (raw_dims, d): principal directions of the first d CNN features
    weight: np.ndarray  # (dim, d)
    bias: np.ndarray  # (dim,)
    info: dict  # how it was fitted; the manifest's "projection" record

    @property
    def appearance_dims(self) -> int:
        """Length of the appearance part at the start of every search vector."""
        return int(self.basis.shape[0] + self.weight.shape[0] + COLOUR_BINS)

    @property
    def semantic_heads(self) -> list[str]:
        """The heads whose predictions make the vector's last part, in order."""
        return list(self.info["semantic_heads"])

    def apply(self, descriptors: np.ndarray, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """Descriptors (n, CNN features + colour) or (CNN features + colour,), with the heads'
        probabilities for them (at least `semantic_heads`) -> unit search vectors."""
        descriptors = np.asarray(descriptors, np.float32)
        d = self.basis.shape[1]  # the CNN features it was trained on: the first d
        features, colour = _unit(descriptors[..., :d]), descriptors[..., -COLOUR_BINS:]
        raw = _unit(features @ self.basis.T)
        z = _unit(features @ self.weight.T + self.bias)
        parts = [_unit(np.concatenate([raw, z, self.info["colour_weight"] * colour], axis=-1))]
        parts += [self.info["semantic_weights"][c] * np.sqrt(probabilities[c]) for c in self.semantic_heads]
        return _unit(np.concatenate(parts, axis=-1)).astype(np.float32)

    def project(self, descriptors: np.ndarray, heads: Heads) -> np.ndarray:
        """`apply` with the heads' probabilities computed here (building, evaluation)."""
        return self.apply(descriptors, heads.probabilities(descriptors, self.semantic_heads))

    def save(self, path: Path) -> None:
        np.savez(path, weight=self.weight, bias=self.bias, basis=self.basis)

    @classmethod
    def load(cls, path: Path, info: dict) -> "SearchSpace":
        with np.load(path) as arrays:
            return cls(arrays["basis"], arrays["weight"], arrays["bias"], info)


def principal_directions(features: Iterable[np.ndarray], dims: int) -> np.ndarray:
    """(dims, d) top eigenvectors of the uncentred second moment of the rows of `features` (chunks of
    rows, so a catalog never sits in memory at once): keeping the mean direction measured better than
    centring. With fewer rows than dimensions (a small catalog) the same directions come from the rows'
    n x n Gram matrix: the d x d problem costs seconds whatever the catalog's size."""
    kept: list[torch.Tensor] = []
    moment, count = None, 0
    for chunk in features:
        x = torch.from_numpy(np.asarray(chunk, np.float64))
        count += len(x)
        if moment is None and count <= x.shape[1]:
            kept.append(x)
            continue
        if moment is None:
            moment = sum((k.T @ k for k in kept), torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64))
            kept = []
        moment += x.T @ x
    if moment is not None:
        values, vectors = torch.linalg.eigh(moment / count)  # torch's eigh: 2x numpy's speed here
        return vectors[:, torch.argsort(values, descending=True)[:dims]].T.numpy().astype(np.float32)
    x = torch.cat(kept) if kept else torch.zeros(0, 0, dtype=torch.float64)
    values, u = torch.linalg.eigh(x @ x.T / max(count, 1))
    order = torch.argsort(values, descending=True)
    values, u = values[order], u[:, order]
    spanned = int((values > values[:1].clamp(min=0) * 1e-12).sum()) if len(values) else 0
    directions = (x.T @ u[:, :spanned]) / torch.sqrt(values[:spanned] * max(count, 1))  # unit columns
    if spanned < dims:  # the rows span fewer directions: the rest of an orthonormal basis, fixed by a seed
        rest = torch.randn(x.shape[1], dims - spanned, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        q, r = torch.linalg.qr(torch.cat([directions, rest], dim=1))
        directions = q * torch.sign(torch.diagonal(r))  # the spanned directions keep their signs
    return directions[:, :dims].T.numpy().astype(np.float32)


def fit_search_space(
    descriptors: np.ndarray | RowFile,
    ids: np.ndarray,
    columns: dict[str, np.ndarray],
    views: np.ndarray | None = None,
    view_ids: np.ndarray | None = None,
    heads: Heads | None = None,
    settings: SearchSpaceSettings = SearchSpaceSettings(),
    device: str | torch.device | None = None,
) -> SearchSpace:
    """Fit the principal directions and the multi-task projection on the fit rows (+ their synthetic
    views); `heads` (trained on the fit rows) give the semantic part. Trains on `device` (default: CUDA
    when there is one)."""
    s = settings
    fit = ~heldout_mask(ids)
    d = min(s.feature_dims or descriptors.shape[1], descriptors.shape[1] - COLOUR_BINS)
    fit_features = (_unit(chunk[fit[start : start + len(chunk)], :d]) for start, chunk in row_chunks(descriptors))
    basis = principal_directions(fit_features, min(s.raw_dims, d, max(int(fit.sum()), 1)))
    row_of = {int(i): r for r, i in enumerate(ids)}
    view_rows = np.array([row_of[int(i)] for i in (view_ids if views is not None else [])], np.int64)
    viewed = np.zeros_like(fit)
    viewed[view_rows] = True
    rows = np.flatnonzero(training_sample(ids, fit, keep=viewed))  # the instance loss needs each view's photo
    n_fit = len(rows)
    train_x = _unit(np.asarray(descriptors[rows], np.float32)[:, :d])  # the bounded sample: one copy
    if len(view_rows):
        keep = fit[view_rows]  # views are only made of fit items; this guards a mixed-up merge
        train_x = np.concatenate([train_x, _unit(np.asarray(views[keep, :d], np.float32))])
        rows = np.concatenate([rows, view_rows[keep]])
    # For the instance loss: each view's own catalog photo, among the rows trained on.
    position = {int(r): j for j, r in enumerate(rows[:n_fit])}
    device = training_device(device)
    originals = torch.tensor([position[int(r)] for r in rows[n_fit:]], dtype=torch.long)
    torch.manual_seed(s.seed)
    x = torch.from_numpy(np.ascontiguousarray(train_x, np.float32)).to(device)
    tasks = []
    for column in TASKS:
        values, labels = np.unique(columns[column][rows].astype(str), return_inverse=True)
        if len(values) >= 2:
            tasks.append((column, torch.from_numpy(labels).to(device), torch.nn.Linear(s.dim, len(values)).to(device)))
    projection = torch.nn.Linear(d, s.dim).to(device)
    params = list(projection.parameters()) + [p for _, _, head in tasks for p in head.parameters()]
    optimiser = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    draws = torch.Generator().manual_seed(s.seed)
    bf16 = bf16_supported(device)  # same quality as fp32 in half the time
    for _ in range(s.steps if tasks else 0):
        # A mini-batch: `batch` fit rows, `view_batch` views and the views' own photos (for the instance
        # loss). Views without repeats: a view drawn twice would have its own photo twice among the candidates.
        chosen = torch.randperm(len(originals), generator=draws)[: s.view_batch]
        own = originals[chosen]
        # Fewer fit rows than a batch: all of them, once each (a full batch; draws would repeat them).
        drawn = torch.arange(n_fit) if n_fit <= s.batch else torch.randint(0, n_fit, (s.batch,), generator=draws)
        picked = torch.cat([drawn, own, n_fit + chosen]).to(device)
        optimiser.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z = torch.nn.functional.normalize(projection(x[picked]).float(), dim=1)
        loss = sum(torch.nn.functional.cross_entropy(head(z) * s.logit_scale, y[picked]) for _, y, head in tasks)
        if s.instance_weight and len(chosen):  # InfoNCE: a view must be closer to its own photo than to the others'
            logits = z[len(drawn) + len(own) :] @ z[len(drawn) : len(drawn) + len(own)].T * s.logit_scale
            loss = loss + s.instance_weight * torch.nn.functional.cross_entropy(
                logits, torch.arange(len(chosen), device=device)
            )
        loss.backward()
        optimiser.step()
    used = {c: float(w) for c, w in s.semantic_weights.items() if heads is not None and c in heads and w > 0}
    info = {
        "dim": s.dim,
        "raw_dims": int(basis.shape[0]),
        "feature_dims": d,
        "colour_weight": s.colour_weight,
        "semantic_weights": used,
        "semantic_heads": list(used),
        "tasks": [t for t, _, _ in tasks],
        "steps": s.steps,
        "batch": s.batch,
        "view_batch": s.view_batch,
        "lr": s.lr,
        "weight_decay": s.weight_decay,
        "train_rows": n_fit,
        "train_views": int(len(rows) - n_fit),
        "instance_weight": s.instance_weight,
    }
    return SearchSpace(
        basis,
        projection.weight.detach().cpu().numpy().astype(np.float32),
        projection.bias.detach().cpu().numpy().astype(np.float32),
        info,
    )
