"""Attribute classifiers (article type, gender, ...) trained during precompute on the descriptors: one
shared hidden layer, one softmax output per attribute."""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .embedder import bf16_supported
from .split import heldout_mask, training_sample

HEAD_COLUMNS = ("articleType", "gender", "masterCategory", "subCategory", "baseColour", "usage")
# Classes rarer than this are left out of a head: with fewer examples a class is mostly noise.
MIN_CLASS_COUNT = 20


@dataclass(frozen=True)
class HeadSettings:
    """Mini-batch AdamW with a cosine schedule on standardised descriptors, dropout on the input and on
    the hidden layer, label smoothing; the loss is the sum over the heads.

    Chosen on an inner validation split of the fit part (a fifth of it by a hash of the id; held-out
    accuracy only afterwards). Inner accuracy articleType / gender / baseColour / subCategory / usage:
    shared 1,024-wide layer 0.874 / 0.915 / 0.656 / 0.975 / 0.925 (bf16; fp32 0.874 / 0.914 / 0.654);
    one 1,024-wide MLP per head 0.872 / 0.917 / 0.664 / 0.975 / 0.919 in 5x the time; 2,048 wide
    0.867 / 0.915 / 0.656; the session-3 softmax regressions 0.861 / 0.898 / 0.658 / 0.971 / 0.909.
    Those descriptors had no third-stage features; with them the shared layer reaches articleType /
    gender / baseColour 0.893 / 0.923 / 0.674 inner, 0.913 / 0.936 / 0.700 held-out; 700 or 500 steps
    instead of 1,000: articleType 0.893 / 0.888 inner, 0.908 / 0.909 held-out."""
    hidden: int = 1024
    steps: int = 1000
    batch: int = 512
    lr: float = 2e-3
    weight_decay: float = 5e-2
    dropout: float = 0.5
    smoothing: float = 0.1
    bf16: bool = True  # autocast where the CPU has bf16: 39 vs 59 s on 2 cores, same accuracy
    # (The masks drawn by torch.rand, the fused AdamW and ignore_index instead of boolean row selection
    # took a fashion-dev training from 54 to 23 s. Same accuracy within seed noise, seeds 0 / 1 / 2:
    # articleType inner 0.891 / 0.894 / 0.890 vs 0.893 / 0.888 / 0.893, held-out 0.910 / 0.910 / 0.908
    # vs 0.913 / 0.912 / 0.914; gender held-out 0.937 / 0.935 / 0.936 vs 0.936 / 0.938 / 0.934; colour
    # 0.704 / 0.700 / 0.713 vs 0.700 / 0.701 / 0.706.)
    # At most this many passes over the fit rows, so a small catalog trains in seconds: on the CI gate's
    # 2,000 rows (1,580 fit rows) held-out accuracy articleType / gender / colour / usage was 0.907 /
    # 0.954 / 0.654 / 0.925 after 300 steps (~100 passes) against 0.909 / 0.954 / 0.644 / 0.911 after
    # 1,000, in 13 instead of 47 s; the app's 1,065-item starter index waited 68 s for its heads (now 8 s).
    # fashion-dev (7,661 fit rows) and larger catalogs still take all `steps`.
    epochs: int = 100


class Dropout(torch.nn.Module):
    """torch.nn.Dropout with its mask drawn by torch.rand: on this CPU, Dropout's bernoulli_ took 20 ms of
    each 56 ms training step (512 x 3136 inputs), torch.rand 5 ms."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand(x.shape, device=x.device) >= self.p).to(x.dtype) / (1.0 - self.p)


def training_device(device: str | torch.device | None = None) -> torch.device:
    """Where the heads and the projection train: `device`, else CUDA when there is one."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def head_classes(labels: np.ndarray) -> list[str]:
    """The classes a head predicts. They count the whole catalog (labels only, no features): "articleType
    classes with >= 20 items" is a property of the catalog, not of the fit split."""
    values, counts = np.unique(labels[labels != ""].astype(str), return_counts=True)
    return [str(v) for v, c in zip(values, counts) if c >= MIN_CLASS_COUNT]


def train_heads(descriptors: np.ndarray, ids: np.ndarray, columns: dict[str, np.ndarray],
                settings: HeadSettings = HeadSettings(), fit: np.ndarray | None = None,
                heldout: np.ndarray | None = None, device: str | torch.device | None = None) -> dict[str, dict]:
    """A head per column with >= 2 classes, trained on the `fit` rows (default: the fit part of the split,
    at most MAX_TRAIN_ROWS of it) and scored on the `heldout` rows (default: the held-out part). The
    hidden layer folds the standardisation in, so callers apply the heads to raw descriptors. Cost is
    at most steps x batch, whatever the catalog's size. Trains on `device` (default: CUDA when there is one):
    an H100 host's CPU took 70 s for what its GPU does in seconds."""
    heldout = heldout_mask(ids) if heldout is None else heldout
    fit = training_sample(ids, ~heldout) if fit is None else fit
    targets = {}
    for column in HEAD_COLUMNS:
        classes = head_classes(np.asarray(columns[column]))
        if len(classes) >= 2:
            lookup = {c: i for i, c in enumerate(classes)}
            targets[column] = (classes, np.array([lookup.get(str(v), -1) for v in columns[column]]))
    if not targets:
        return {}
    rows = np.flatnonzero(fit)
    chosen = np.asarray(descriptors[rows], np.float32)  # one copy of the fit rows (12,000 x 3136 at most)
    mean, scale = chosen.mean(0), chosen.std(0) + 1e-6
    device = training_device(device)
    x = torch.from_numpy((chosen - mean) / scale).to(device)
    y = {c: torch.from_numpy(labels[rows]).to(device) for c, (_, labels) in targets.items()}
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(Dropout(settings.dropout), torch.nn.Linear(x.shape[1], settings.hidden),
                                torch.nn.GELU(approximate="tanh"), Dropout(settings.dropout))
    outputs = torch.nn.ModuleDict({c: torch.nn.Linear(settings.hidden, len(classes)) for c, (classes, _) in targets.items()})
    trunk, outputs = trunk.to(device), outputs.to(device)
    parameters = [*trunk.parameters(), *outputs.parameters()]
    # fused: one kernel over all parameters instead of a dozen passes (a fifth of a CPU step before).
    optimiser = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    steps = min(settings.steps, max(1, math.ceil(settings.epochs * len(x) / settings.batch)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    draws = torch.Generator().manual_seed(0)
    bf16 = settings.bf16 and bf16_supported(device)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (min(settings.batch, len(x)),), generator=draws).to(device)
        optimiser.zero_grad()
        losses = []
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = trunk(x[batch])
            for column in targets:
                labels = y[column][batch]  # -1: not one of this head's classes, left out of its loss
                if (labels >= 0).any():
                    losses.append(torch.nn.functional.cross_entropy(outputs[column](hidden).float(), labels, ignore_index=-1,
                                                                    label_smoothing=settings.smoothing))
        torch.stack(losses).sum().backward()
        optimiser.step()
        schedule.step()
    linear = trunk[1]
    hidden_weight = (linear.weight.detach().cpu().numpy() / scale).astype(np.float32)
    hidden_bias = (linear.bias.detach().cpu().numpy() - hidden_weight @ mean).astype(np.float32)
    heads = {column: {"classes": classes, "hidden_weight": hidden_weight, "hidden_bias": hidden_bias,
                      "weight": outputs[column].weight.detach().cpu().numpy().astype(np.float32),
                      "bias": outputs[column].bias.detach().cpu().numpy().astype(np.float32)}
             for column, (classes, _) in targets.items()}
    predicted = scores(heads, descriptors[heldout])
    for column, (_, labels) in targets.items():
        train, test = fit & (labels >= 0), labels[heldout] >= 0
        hits = np.argmax(predicted[column][test], 1) == labels[heldout][test]
        heads[column].update(heldout_accuracy=round(float(hits.mean()) if test.any() else float("nan"), 4),
                             train_rows=int(train.sum()), heldout_rows=int(test.sum()))
    return heads


def scores(heads: dict[str, dict], descriptors: np.ndarray, columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Per head (default: all), (n, classes) logits for (n, d) raw descriptors (or (classes,) for (d,)).
    The hidden layer the heads share is computed once: it is most of the work (3136 x 1024 per row).
    Heads of indexes built before the hidden layer (session 3) are plain softmax regressions."""
    x = np.asarray(descriptors, np.float32)
    hidden: dict[int, np.ndarray] = {}  # by identity of the layer's weights: one entry for shared heads
    out = {}
    for column in columns if columns is not None else heads:
        head = heads[column]
        features = x
        if "hidden_weight" in head:
            key = id(head["hidden_weight"])
            if key not in hidden:
                h = x @ head["hidden_weight"].T + head["hidden_bias"]
                hidden[key] = 0.5 * h * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (h + np.float32(0.044715) * h ** 3)))  # GELU, tanh form
            features = hidden[key]
        out[column] = features @ head["weight"].T + head["bias"]
    return out


def probabilities(heads: dict[str, dict], descriptors: np.ndarray, columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Per head (default: all), softmax probabilities for raw descriptors; shapes as in `scores`."""
    out = {}
    for column, logits in scores(heads, descriptors, columns).items():
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        out[column] = probs / probs.sum(axis=-1, keepdims=True)
    return out


def predict(heads: dict[str, dict], embedding: np.ndarray, top: int = 3) -> dict[str, list[tuple[str, float]]]:
    """Per head, the `top` labels with their probabilities."""
    out = {}
    for column, probs in probabilities(heads, embedding).items():
        order = np.argsort(-probs)[:top]
        out[column] = [(heads[column]["classes"][i], float(probs[i])) for i in order]
    return out
