"""Attribute classifiers (article type, gender, ...) trained during precompute on the descriptors: one
shared hidden layer, one softmax output per attribute. `Heads` is the fitted object: `save` / `load`,
and `probabilities` computes the shared layer once for every head a query needs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .rowfile import CHUNK_ROWS
from .runtime import bf16_supported
from .split import heldout_mask, training_sample
from .vocabulary import HEAD_COLUMNS

# Classes rarer than this are left out of a head: with fewer examples a class is mostly noise.
MIN_CLASS_COUNT = 20


@dataclass(frozen=True)
class HeadSettings:
    """Mini-batch AdamW with a cosine schedule on standardised descriptors, dropout on the input and on
    the hidden layer, label smoothing; the loss is the sum over the heads. Chosen on an inner split of
    the fit part (docs/experiments.md#heads)."""

    hidden: int = 1024  # one layer shared by all heads: as good as one MLP per head in a fifth of the time
    steps: int = 1000
    batch: int = 512
    lr: float = 2e-3
    weight_decay: float = 5e-2
    dropout: float = 0.5
    smoothing: float = 0.1
    bf16: bool = True  # autocast where the hardware has bf16: faster, same accuracy
    # At most this many passes over the fit rows, so a small catalog trains in seconds; catalogs of
    # fashion-dev's size and larger still take all `steps`.
    epochs: int = 100


@dataclass
class Head:
    """One attribute's output layer over the shared hidden layer, and how it scored on held-out items."""

    classes: list[str]
    weight: np.ndarray  # (classes, hidden)
    bias: np.ndarray
    heldout_accuracy: float = float("nan")
    train_rows: int = 0
    heldout_rows: int = 0
    # Per class: the share of its held-out items the head got right, and how many there were.
    per_class: dict[str, tuple[float, int]] = field(default_factory=dict)

    def describe(self) -> dict:
        """The manifest's record of this head."""
        return {
            "classes": self.classes,
            "heldout_accuracy": self.heldout_accuracy,
            "train_rows": self.train_rows,
            "heldout_rows": self.heldout_rows,
            "per_class": {c: list(v) for c, v in self.per_class.items()},
        }


def _gelu(h: np.ndarray) -> np.ndarray:
    """GELU, tanh form (what the trunk trained with)."""
    return 0.5 * h * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (h + np.float32(0.044715) * h**3)))


@dataclass
class Heads:
    """The fitted heads: a hidden layer shared by all (standardisation folded in, so it reads raw
    descriptors) and one output layer per attribute."""

    hidden_weight: np.ndarray  # (hidden, descriptor dim)
    hidden_bias: np.ndarray
    outputs: dict[str, Head]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __contains__(self, column: object) -> bool:
        return column in self.outputs

    def __getitem__(self, column: str) -> Head:
        return self.outputs[column]

    def __len__(self) -> int:
        return len(self.outputs)

    def hidden(self, descriptors: np.ndarray) -> np.ndarray:
        """The shared layer's activations: most of a query's head work (descriptor dim x hidden)."""
        x = np.asarray(descriptors, np.float32)
        return _gelu(x @ self.hidden_weight.T + self.hidden_bias)

    def scores(self, descriptors: np.ndarray, columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Per head (default: all), (n, classes) logits for (n, d) raw descriptors (or (classes,) for (d,))."""
        columns = list(self.outputs if columns is None else columns)
        if not columns:
            return {}
        hidden = self.hidden(descriptors)
        return {c: hidden @ self.outputs[c].weight.T + self.outputs[c].bias for c in columns}

    def probabilities(self, descriptors: np.ndarray, columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Per head (default: all), softmax probabilities; shapes as in `scores`."""
        out = {}
        for column, logits in self.scores(descriptors, columns).items():
            probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
            out[column] = probs / probs.sum(axis=-1, keepdims=True)
        return out

    def top(self, probabilities: dict[str, np.ndarray], top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """One descriptor's probabilities (`probabilities` of a (d,) vector) -> per head, the `top`
        labels with their probabilities, in HEAD_COLUMNS order."""
        out = {}
        for column in HEAD_COLUMNS:
            if column in probabilities and column in self.outputs:
                probs = probabilities[column]
                order = np.argsort(-probs)[:top]
                out[column] = [(self.outputs[column].classes[i], float(probs[i])) for i in order]
        return out

    def describe(self) -> dict[str, dict]:
        """The manifest's record of every head."""
        return {column: head.describe() for column, head in self.outputs.items()}

    def save(self, path: Path) -> None:
        """Each head's output layer, and the hidden layer they share once."""
        arrays = {f"{c}.{name}": getattr(h, name) for c, h in self.outputs.items() for name in ("weight", "bias")}
        np.savez(path, **arrays, hidden_weight=self.hidden_weight, hidden_bias=self.hidden_bias)

    @classmethod
    def load(cls, path: Path, described: dict[str, dict]) -> "Heads":
        """The heads in `described` (the manifest's record) with their arrays from `path`."""
        with np.load(path) as arrays:
            outputs = {
                column: Head(
                    info["classes"],
                    arrays[f"{column}.weight"],
                    arrays[f"{column}.bias"],
                    info["heldout_accuracy"],
                    info["train_rows"],
                    info["heldout_rows"],
                    {c: (float(a), int(n)) for c, (a, n) in info["per_class"].items()},
                )
                for column, info in described.items()
            }
            return cls(arrays["hidden_weight"], arrays["hidden_bias"], outputs)


class Dropout(torch.nn.Module):
    """torch.nn.Dropout with its mask drawn by torch.rand: on the CPU, Dropout's bernoulli_ is about four
    times slower and was a third of each training step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand(x.shape, device=x.device) >= self.p).to(x.dtype) / (1.0 - self.p)


def training_device(device: str | torch.device | None = None) -> torch.device:
    """Where the heads and the search space train: `device`, else CUDA when there is one."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def head_classes(labels: np.ndarray) -> list[str]:
    """The classes a head predicts. They count the whole catalog (labels only, no features): "articleType
    classes with >= 20 items" is a property of the catalog, not of the fit split."""
    values, counts = np.unique(labels[labels != ""].astype(str), return_counts=True)
    return [str(v) for v, c in zip(values, counts) if c >= MIN_CLASS_COUNT]


def train_heads(
    descriptors: np.ndarray,
    ids: np.ndarray,
    columns: dict[str, np.ndarray],
    settings: HeadSettings = HeadSettings(),
    fit: np.ndarray | None = None,
    heldout: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> Heads:
    """A head per column with >= 2 classes, trained on the `fit` rows (default: the fit part of the split,
    at most MAX_TRAIN_ROWS of it) and scored on the `heldout` rows (default: the held-out part). The
    hidden layer folds the standardisation in, so callers apply the heads to raw descriptors. Cost is
    at most steps x batch, whatever the catalog's size. Trains on `device` (default: CUDA when there is one)."""
    heldout = heldout_mask(ids) if heldout is None else heldout
    fit = training_sample(ids, ~heldout) if fit is None else fit
    targets = {}
    for column in HEAD_COLUMNS:
        classes = head_classes(np.asarray(columns[column]))
        if len(classes) >= 2:
            lookup = {c: i for i, c in enumerate(classes)}
            targets[column] = (classes, np.array([lookup.get(str(v), -1) for v in columns[column]]))
    if not targets:
        return Heads(np.zeros((0, descriptors.shape[1]), np.float32), np.zeros(0, np.float32), {})
    rows = np.flatnonzero(fit)
    chosen = np.asarray(descriptors[rows], np.float32)  # one copy of the fit rows (12,000 x 3136 at most)
    mean, scale = chosen.mean(0), chosen.std(0) + 1e-6
    device = training_device(device)
    x = torch.from_numpy((chosen - mean) / scale).to(device)
    y = {c: torch.from_numpy(labels[rows]).to(device) for c, (_, labels) in targets.items()}
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(
        Dropout(settings.dropout),
        torch.nn.Linear(x.shape[1], settings.hidden),
        torch.nn.GELU(approximate="tanh"),
        Dropout(settings.dropout),
    )
    outputs = torch.nn.ModuleDict(
        {c: torch.nn.Linear(settings.hidden, len(classes)) for c, (classes, _) in targets.items()}
    )
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
                    losses.append(
                        torch.nn.functional.cross_entropy(
                            outputs[column](hidden).float(), labels, ignore_index=-1, label_smoothing=settings.smoothing
                        )
                    )
        torch.stack(losses).sum().backward()
        optimiser.step()
        schedule.step()
    linear = trunk[1]
    hidden_weight = (linear.weight.detach().cpu().numpy() / scale).astype(np.float32)
    hidden_bias = (linear.bias.detach().cpu().numpy() - hidden_weight @ mean).astype(np.float32)
    heads = Heads(
        hidden_weight,
        hidden_bias,
        {
            column: Head(
                classes,
                outputs[column].weight.detach().cpu().numpy().astype(np.float32),
                outputs[column].bias.detach().cpu().numpy().astype(np.float32),
            )
            for column, (classes, _) in targets.items()
        },
    )
    scored = np.flatnonzero(heldout)  # a chunk at a time: the held-out part grows with the catalog
    parts = [heads.scores(descriptors[scored[i : i + CHUNK_ROWS]]) for i in range(0, len(scored), CHUNK_ROWS)]
    predicted = {c: np.concatenate([part[c] for part in parts]) if parts else np.zeros((0, 1)) for c in targets}
    for column, (_, labels) in targets.items():
        train, test = fit & (labels >= 0), labels[heldout] >= 0
        hits = np.argmax(predicted[column][test], 1) == labels[heldout][test]
        head = heads[column]
        head.heldout_accuracy = round(float(hits.mean()) if test.any() else float("nan"), 4)
        head.train_rows, head.heldout_rows = int(train.sum()), int(test.sum())
        truth = labels[heldout][test]
        head.per_class = {
            name: (round(float(hits[truth == i].mean()), 4), int((truth == i).sum()))
            for i, name in enumerate(head.classes)
            if (truth == i).any()
        }
    return heads
