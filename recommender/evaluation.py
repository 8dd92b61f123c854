"""Quality measured on a built index: retrieval precision, robustness to shopper photos, filtered
recall, head accuracy and the lift from feedback. Queries never count themselves or byte-identical
copies of their image."""
from __future__ import annotations

import io
import random
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance

from .metadata import Metadata


def neighbours(embeddings: np.ndarray, metadata: Metadata, rows: np.ndarray, k: int, batch: int = 512) -> np.ndarray:
    """(len(rows), k) exact top-k catalog rows per query row, without the query or identical images."""
    embeddings = np.asarray(embeddings, np.float32)
    sha = metadata.image_sha
    out = np.empty((len(rows), k), np.int64)
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        scores = embeddings[chunk] @ embeddings.T
        scores[np.arange(len(chunk)), chunk] = -np.inf
        for i, row in enumerate(chunk):
            if sha[row]:
                scores[i, sha == sha[row]] = -np.inf
            top = np.argpartition(-scores[i], k)[:k]
            out[start + i] = top[np.argsort(-scores[i, top], kind="stable")]
    return out


def precision_and_map(hits: np.ndarray, relevant: np.ndarray, k: int) -> tuple[float, float]:
    """P@k and mAP@k from a (queries, >=k) boolean hit matrix and each query's count of relevant items."""
    h = hits[:, :k].astype(np.float64)
    precision = h.mean(axis=1)
    precision_at_i = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    normaliser = np.maximum(np.minimum(relevant, k), 1)
    ap = (precision_at_i * h).sum(axis=1) / normaliser
    return float(precision.mean()), float(ap.mean())


def leave_one_out_precision(embeddings: np.ndarray, metadata: Metadata, field: str, k: int = 10,
                            queries: np.ndarray | None = None) -> float:
    """Mean share of a query's top-k neighbours that share its `field` value (the CI gate's number)."""
    rows = np.arange(len(metadata)) if queries is None else np.asarray(queries)
    labels = metadata.columns[field]
    top = neighbours(embeddings, metadata, rows, k)
    return float((labels[top] == labels[rows][:, None]).mean())


def retrieval_report(embeddings: np.ndarray, metadata: Metadata, rows: np.ndarray, fields: tuple[str, ...],
                     ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    top = neighbours(embeddings, metadata, rows, max(ks))
    report = {}
    for field in fields:
        labels = metadata.columns[field]
        values, counts = np.unique(labels, return_counts=True)
        frequency = dict(zip(values, counts))
        relevant = np.array([frequency[labels[r]] - 1 for r in rows])
        hits = labels[top] == labels[rows][:, None]
        report[field] = {}
        for k in ks:
            p, m = precision_and_map(hits, relevant, k)
            report[field][f"P@{k}"], report[field][f"mAP@{k}"] = round(p, 4), round(m, 4)
    article = metadata.columns["articleType"]
    hits10 = (article[top[:, :10]] == article[rows][:, None]).mean(axis=1)
    report["per_articleType_P@10"] = {str(t): round(float(hits10[article[rows] == t].mean()), 4)
                                      for t in np.unique(article[rows]) if (article[rows] == t).sum() >= 5}
    return report


def shopper_photo(image: Image.Image, rng: random.Random) -> Image.Image:
    """A catalog photo as a shopper might photograph it: upscaled to 240x320 and JPEG q70, 10% random
    crop, extra white margin, a small rotation, brightness/contrast change."""
    img = image.convert("RGB").resize((240, 320), Image.Resampling.BICUBIC)
    w, h = img.size
    dx, dy = int(w * 0.1 * rng.random()), int(h * 0.1 * rng.random())
    img = img.crop((dx, dy, dx + int(w * 0.9), dy + int(h * 0.9)))
    margin = int(0.15 * max(img.size))
    canvas = Image.new("RGB", (img.width + 2 * margin, img.height + 2 * margin), "white")
    canvas.paste(img, (margin, margin))
    img = canvas.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue()))


def classification_report(heads: dict[str, dict], embeddings: np.ndarray, metadata: Metadata, rows: np.ndarray) -> dict:
    report = {}
    x = np.asarray(embeddings[rows], np.float32)
    for column, head in heads.items():
        lookup = {c: i for i, c in enumerate(head["classes"])}
        truth = np.array([lookup.get(str(v), -1) for v in metadata.columns[column][rows]])
        known = truth >= 0
        predicted = np.argmax(x[known] @ head["weight"].T + head["bias"], axis=1)
        f1s = []
        for c in range(len(head["classes"])):
            tp = np.sum((predicted == c) & (truth[known] == c))
            fp, fn = np.sum((predicted == c) & (truth[known] != c)), np.sum((predicted != c) & (truth[known] == c))
            if tp + fn:
                f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
        report[column] = {"accuracy": round(float((predicted == truth[known]).mean()), 4),
                          "macro_f1": round(float(np.mean(f1s)), 4), "rows": int(known.sum())}
        if column == "articleType":
            confusion = np.zeros((len(head["classes"]),) * 2, np.int64)
            np.add.at(confusion, (truth[known], predicted), 1)
            report[column]["classes"], report[column]["confusion"] = head["classes"], confusion.tolist()
    return report


def feedback_lift(embeddings: np.ndarray, metadata: Metadata, rows: np.ndarray,
                  update: Callable[[np.ndarray, list[np.ndarray], list[np.ndarray]], np.ndarray],
                  k: int = 10, rounds: int = 2) -> dict:
    """A simulated shopper likes the results with the query's article type and colour, dislikes the
    rest, for `rounds` rounds; P@10 (same type and colour) before and after."""
    embeddings = np.asarray(embeddings, np.float32)
    article, colour, sha = metadata.columns["articleType"], metadata.columns["baseColour"], metadata.image_sha
    before, after = [], []
    for row in rows:
        excluded = (sha == sha[row]) if sha[row] else np.zeros(len(sha), bool)
        excluded[row] = True
        wanted = (article == article[row]) & (colour == colour[row])
        query, liked, disliked = embeddings[row], [], []
        for round_ in range(rounds + 1):
            scores = embeddings @ query
            scores[excluded] = -np.inf
            top = np.argpartition(-scores, k)[:k]
            precision = float(wanted[top].mean())
            if round_ == 0:
                before.append(precision)
            if round_ == rounds:
                after.append(precision)
                break
            liked += [embeddings[t] for t in top if wanted[t]]
            disliked += [embeddings[t] for t in top if not wanted[t]]
            query = update(embeddings[row], liked, disliked)
    return {"P@10_type_and_colour_before": round(float(np.mean(before)), 4),
            "P@10_type_and_colour_after": round(float(np.mean(after)), 4), "rounds": rounds, "queries": len(rows)}
