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
from .split import HEADS_MAX_TRAIN_ROWS, calibration_mask, heldout_mask, training_sample
from .vocabulary import HEAD_COLUMNS

# Classes rarer than this are left out of a head: with fewer examples a class is mostly noise.
MIN_CLASS_COUNT = 20
MIN_CALIBRATION_ROWS = 50  # a head's temperature is fitted on at least this many products, else it stays 1


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
    # Rare classes, for the heads in `balanced`: "none", "logit-adjusted" (the loss on logits + tau *
    # log(class prior), so the plain logits answer as if the classes were balanced), "weighted" (each
    # class's loss weighted by prior^-tau) or "sampled" (fit rows drawn with probability articleType
    # count^-tau). A balanced head trains without label smoothing: smoothed targets in the adjusted loss
    # push the rare classes' raw logits up (docs/experiments.md#heads-balance).
    balance: str = "none"
    tau: float = 1.0
    balanced: tuple[str, ...] = ("articleType",)
    views: bool = False  # also train on the build's synthetic shopper views, labelled as their product
    mirrors: bool = False  # also train on the mirror images of the training photos (measured, not kept)
    # A temperature per head, fitted on the calibration part of the fit rows (split.calibration_mask):
    # "refit" (heads trained without that part find it, then train again on every fit row and keep it),
    # "held-back" (the heads never train on that part) or "none".
    calibration: str = "refit"


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
    temperature: float = 1.0  # logits / temperature -> calibrated probabilities
    # Expected calibration error of the top label on held-out items, before and after the temperature.
    heldout_ece: tuple[float, float] = (float("nan"), float("nan"))

    def describe(self) -> dict:
        """The manifest's record of this head."""
        return {
            "classes": self.classes,
            "heldout_accuracy": self.heldout_accuracy,
            "train_rows": self.train_rows,
            "heldout_rows": self.heldout_rows,
            "per_class": {c: list(v) for c, v in self.per_class.items()},
            "temperature": self.temperature,
            "heldout_ece": list(self.heldout_ece),
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
        """Per head (default: all), calibrated probabilities (the head's temperature); shapes as in `scores`."""
        return {
            column: softmax(logits / self.outputs[column].temperature)
            for column, logits in self.scores(descriptors, columns).items()
        }

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
                    float(info.get("temperature", 1.0)),  # indexes made before calibration: plain softmax
                    tuple(info.get("heldout_ece", (float("nan"), float("nan")))),
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


def softmax(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return probs / probs.sum(axis=-1, keepdims=True)


def calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top label: over equal-width confidence bins, the gap between
    the mean confidence and the accuracy, weighted by the bin's share of the rows."""
    if not len(truth):
        return float("nan")
    confidence, hits = probabilities.max(axis=1), probabilities.argmax(axis=1) == truth
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = sum(
        abs(confidence[which == b].mean() - hits[which == b].mean()) * (which == b).sum()
        for b in range(bins)
        if (which == b).any()
    )
    return float(gap / len(truth))


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `truth` (golden-section search on
    its logarithm: the likelihood is unimodal in it)."""
    if not len(truth):
        return 1.0

    def nll(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(scaled).sum(axis=1)) - scaled[np.arange(len(truth)), truth]))

    low, high, ratio = np.log(0.05), np.log(20.0), (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        low, high = (low, b) if nll(a) < nll(b) else (a, high)
    return round(float(np.exp((low + high) / 2)), 4)


def train_heads(
    descriptors: np.ndarray,
    ids: np.ndarray,
    columns: dict[str, np.ndarray],
    settings: HeadSettings = HeadSettings(),
    fit: np.ndarray | None = None,
    heldout: np.ndarray | None = None,
    device: str | torch.device | None = None,
    views: np.ndarray | None = None,
    view_ids: np.ndarray | None = None,
    mirrors: np.ndarray | None = None,
    mirror_ids: np.ndarray | None = None,
) -> Heads:
    """A head per column with >= 2 classes, trained on the `fit` rows (default: the fit part of the split,
    at most HEADS_MAX_TRAIN_ROWS of it), the synthetic `views` of them (descriptors of the products `view_ids`,
    when `settings.views`) and their `mirrors` (of `mirror_ids`, when `settings.mirrors`: the mirror
    images of their photos), calibrated as `settings.calibration` says, then scored on the
    `heldout` rows (default: the held-out part). The hidden layer folds the standardisation in, so
    callers apply the heads to raw descriptors. Cost is at most steps x batch a training, whatever the
    catalog's size. Trains on `device` (default: CUDA when there is one)."""
    heldout = heldout_mask(ids) if heldout is None else heldout
    fit = training_sample(ids, ~heldout, cap=HEADS_MAX_TRAIN_ROWS) if fit is None else fit
    targets = {}
    for column in HEAD_COLUMNS:
        classes = head_classes(np.asarray(columns[column]))
        if len(classes) >= 2:
            lookup = {c: i for i, c in enumerate(classes)}
            targets[column] = (classes, np.array([lookup.get(str(v), -1) for v in columns[column]]))
    if not targets:
        return Heads(np.zeros((0, descriptors.shape[1]), np.float32), np.zeros(0, np.float32), {})
    device = training_device(device)
    calibration = fit & calibration_mask(ids) if settings.calibration != "none" else np.zeros_like(fit)
    train = fit & ~calibration if settings.calibration == "held-back" else fit
    extra = [
        (photos, photo_ids)
        for wanted, photos, photo_ids in ((settings.views, views, view_ids), (settings.mirrors, mirrors, mirror_ids))
        if wanted and photos is not None and len(photos)
    ]
    # Other photos of the products (views, mirror images), labelled as their product.
    others = np.concatenate([photos for photos, _ in extra]) if extra else None
    other_ids = np.concatenate([photo_ids for _, photo_ids in extra]) if extra else None
    temperatures = dict.fromkeys(targets, 1.0)
    if calibration.any():
        # "refit": a first training without the calibration part finds the temperatures; the heads
        # themselves then train on all the fit rows and keep them.
        probe = _fit(descriptors, ids, targets, fit & ~calibration, settings, device, others, other_ids)
        logits = _scores_in_chunks(probe, descriptors, np.flatnonzero(calibration), targets)
        for column, (_, labels) in targets.items():
            known = labels[calibration] >= 0
            if known.sum() >= MIN_CALIBRATION_ROWS:  # fewer would make the temperature their noise
                temperatures[column] = fit_temperature(logits[column][known], labels[calibration][known])
        if settings.calibration == "held-back":
            heads = probe
    if settings.calibration != "held-back" or not calibration.any():
        heads = _fit(descriptors, ids, targets, train, settings, device, others, other_ids)
    scored = np.flatnonzero(heldout)
    predicted = _scores_in_chunks(heads, descriptors, scored, targets)
    for column, (_, labels) in targets.items():
        test = labels[heldout] >= 0
        hits = np.argmax(predicted[column][test], 1) == labels[heldout][test]
        head = heads[column]
        head.temperature = temperatures[column]
        head.heldout_accuracy = round(float(hits.mean()) if test.any() else float("nan"), 4)
        head.train_rows, head.heldout_rows = int((train & (labels >= 0)).sum()), int(test.sum())
        truth = labels[heldout][test]
        head.per_class = {
            name: (round(float(hits[truth == i].mean()), 4), int((truth == i).sum()))
            for i, name in enumerate(head.classes)
            if (truth == i).any()
        }
        head.heldout_ece = (
            round(calibration_error(softmax(predicted[column][test]), truth), 4),
            round(calibration_error(softmax(predicted[column][test] / head.temperature), truth), 4),
        )
    return heads


def _fit(
    descriptors: np.ndarray,
    ids: np.ndarray,
    targets: dict[str, tuple[list[str], np.ndarray]],
    train: np.ndarray,
    settings: HeadSettings,
    device: torch.device,
    others: np.ndarray | None,
    other_ids: np.ndarray | None,
) -> Heads:
    """One training of the shared layer and every head on the `train` rows (and the other photos of
    them: `others`, descriptors of the products `other_ids`)."""
    rows = np.flatnonzero(train)
    extra, products = None, rows  # the product whose labels each row of x takes (fit rows, then other photos)
    if others is not None and len(others):
        row_of = {int(i): r for r, i in enumerate(ids)}
        other_rows = np.array([row_of.get(int(i), -1) for i in other_ids], np.int64)
        keep = (other_rows >= 0) & train[np.maximum(other_rows, 0)]  # photos of training products only
        extra = np.asarray(others[keep], np.float32)
        products = np.concatenate([rows, other_rows[keep]])
    bf16 = settings.bf16 and bf16_supported(device)
    # bf16 rows where training autocasts to bf16 anyway: half the memory for the values the first layer sees.
    x, mean, scale = _standardised(descriptors, rows, extra, torch.bfloat16 if bf16 else torch.float32)
    x = x.to(device)
    y = {c: torch.from_numpy(labels[products]).to(device) for c, (_, labels) in targets.items()}
    prior = {}  # each head's log class shares among the training rows (one count added, so none is zero)
    for column, (classes, _) in targets.items():
        counts = torch.bincount(y[column][y[column] >= 0], minlength=len(classes)).float() + 1
        prior[column] = torch.log(counts / counts.sum())
    balanced = {c for c in prior if c in settings.balanced and settings.balance != "none"}
    adjust = {
        c: settings.tau * p if settings.balance == "logit-adjusted" and c in balanced else None
        for c, p in prior.items()
    }
    weight = {
        c: torch.exp(-settings.tau * p) if settings.balance == "weighted" and c in balanced else None
        for c, p in prior.items()
    }
    smoothing = {c: 0.0 if c in balanced else settings.smoothing for c in prior}
    for c, w in weight.items():
        if w is not None:  # the mean weight of a training row stays 1
            weight[c] = w / (w * torch.exp(prior[c])).sum()
    draw_weights = None
    if settings.balance == "sampled" and "articleType" in targets:
        article = y["articleType"]
        per_class = torch.exp(-settings.tau * prior["articleType"])
        draw_weights = torch.where(article >= 0, per_class[article.clamp(min=0)], per_class.mean())
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
    size = min(settings.batch, len(x))
    for _ in range(steps):
        if draw_weights is None:
            batch = torch.randint(0, len(x), (size,), generator=draws)
        else:
            batch = torch.multinomial(draw_weights.cpu(), size, replacement=True, generator=draws)
        batch = batch.to(device)
        optimiser.zero_grad()
        losses = []
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = trunk(x[batch])
            for column in targets:
                labels = y[column][batch]  # -1: not one of this head's classes, left out of its loss
                if (labels >= 0).any():
                    logits = outputs[column](hidden).float()
                    if adjust[column] is not None:
                        logits = logits + adjust[column]
                    losses.append(
                        torch.nn.functional.cross_entropy(
                            logits, labels, weight[column], ignore_index=-1, label_smoothing=smoothing[column]
                        )
                    )
        torch.stack(losses).sum().backward()
        optimiser.step()
        schedule.step()
    linear = trunk[1]
    hidden_weight = (linear.weight.detach().cpu().numpy() / scale).astype(np.float32)
    hidden_bias = (linear.bias.detach().cpu().numpy() - hidden_weight @ mean).astype(np.float32)
    return Heads(
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


def _standardised(
    descriptors: np.ndarray, rows: np.ndarray, extra: np.ndarray | None, dtype: torch.dtype
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(the `rows` of `descriptors`, then the `extra` rows, standardised, as a `dtype` tensor; the mean and
    scale). Read a chunk at a time, so memory holds one copy of the rows in `dtype` and no float32 one."""

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(rows), CHUNK_ROWS):
            yield np.asarray(descriptors[rows[start : start + CHUNK_ROWS]], np.float32)
        if extra is not None:
            yield from (extra[start : start + CHUNK_ROWS] for start in range(0, len(extra), CHUNK_ROWS))

    total = np.zeros(descriptors.shape[1], np.float64)
    squares = np.zeros_like(total)
    for chunk in chunks():
        total += chunk.sum(0, dtype=np.float64)
        squares += np.square(chunk, dtype=np.float64).sum(0)
    count = len(rows) + (0 if extra is None else len(extra))
    mean = total / count
    scale = np.sqrt(np.maximum(squares / count - mean**2, 0.0)) + 1e-6
    mean, scale = mean.astype(np.float32), scale.astype(np.float32)
    x = torch.empty((count, descriptors.shape[1]), dtype=dtype)
    start = 0
    for chunk in chunks():
        x[start : start + len(chunk)] = torch.from_numpy((chunk - mean) / scale)
        start += len(chunk)
    return x, mean, scale


def _scores_in_chunks(heads: Heads, descriptors: np.ndarray, rows: np.ndarray, columns) -> dict[str, np.ndarray]:
    """`heads.scores` of `rows`, a chunk at a time (the held-out part grows with the catalog)."""
    parts = [heads.scores(descriptors[rows[i : i + CHUNK_ROWS]]) for i in range(0, len(rows), CHUNK_ROWS)]
    return {c: np.concatenate([part[c] for part in parts]) if parts else np.zeros((0, 1)) for c in columns}
