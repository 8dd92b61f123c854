"""Quality measured on a built index: retrieval precision, robustness to shopper photos, filtered
recall, head accuracy and the lift from feedback. Queries never count themselves or byte-identical
copies of their image."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .augment import rephotograph
from .heads import Heads, calibration_error, softmax
from .hnsw import top_k
from .images import load_image
from .metadata import Metadata
from .serve.ranking import POOL, promote_closest

if TYPE_CHECKING:
    from .serve.recommender import Recommender


def neighbours(
    embeddings: np.ndarray, metadata: Metadata, rows: np.ndarray, k: int, batch: int = 512, appearance_dims: int = 0
) -> np.ndarray:
    """(len(rows), k) exact top-k catalog rows per query row, without the query or identical images;
    with `appearance_dims`, ordered as the app orders them (ranking.promote_closest)."""
    embeddings = np.asarray(embeddings, np.float32)
    sha = metadata.image_sha
    pool = min(max(k, POOL) if appearance_dims else k, len(embeddings) - 1)  # the query itself is never among them
    out = np.empty((len(rows), k), np.int64)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        scores = embeddings[chunk] @ embeddings.T
        scores[np.arange(len(chunk)), chunk] = -np.inf
        for i, row in enumerate(chunk):
            if sha[row]:
                scores[i, sha == sha[row]] = -np.inf
            top = top_k(scores[i], pool)
            if appearance_dims:
                top, _ = promote_closest(top, scores[i, top], embeddings, embeddings[row], appearance_dims)
            out[start + i] = top[:k]
    return out


def precision_and_map(hits: np.ndarray, relevant: np.ndarray, k: int) -> tuple[float, float]:
    """P@k and mAP@k from a (queries, >=k) boolean hit matrix and each query's count of relevant items."""
    h = hits[:, :k].astype(np.float64)
    precision = h.mean(axis=1)
    precision_at_i = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    normaliser = np.maximum(np.minimum(relevant, k), 1)
    ap = (precision_at_i * h).sum(axis=1) / normaliser
    return float(precision.mean()), float(ap.mean())


def leave_one_out_precision(
    embeddings: np.ndarray,
    metadata: Metadata,
    field: str,
    k: int = 10,
    queries: np.ndarray | None = None,
    appearance_dims: int = 0,
) -> float:
    """Mean share of a query's top-k neighbours that share its `field` value (the CI gate's number)."""
    rows = np.arange(len(metadata)) if queries is None else np.asarray(queries)
    labels = metadata.columns[field]
    top = neighbours(embeddings, metadata, rows, k, appearance_dims=appearance_dims)
    return float((labels[top] == labels[rows][:, None]).mean())


def retrieval_report(
    embeddings: np.ndarray,
    metadata: Metadata,
    rows: np.ndarray,
    fields: tuple[str, ...],
    ks: tuple[int, ...] = (1, 5, 10),
    appearance_dims: int = 0,
) -> dict:
    top = neighbours(embeddings, metadata, rows, max(ks), appearance_dims=appearance_dims)
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
    report["per_articleType_P@10"] = {
        str(t): round(float(hits10[article[rows] == t].mean()), 4)
        for t in np.unique(article[rows])
        if (article[rows] == t).sum() >= 5
    }
    return report


def shopper_photo(image: Image.Image, rng: random.Random) -> Image.Image:
    """A catalog photo as a shopper might photograph it: upscaled to 240x320 and JPEG q70, 10% random
    crop, extra white margin, a small rotation, brightness/contrast change."""
    img = image.convert("RGB").resize((240, 320), Image.Resampling.BICUBIC)
    w, h = img.size
    dx, dy = int(w * 0.1 * rng.random()), int(h * 0.1 * rng.random())
    img = img.crop((dx, dy, dx + int(w * 0.9), dy + int(h * 0.9)))
    return rephotograph(img, 0.15, rng.uniform(-8, 8), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2), 70)


def shopper_photo_robustness(rec: "Recommender", data: Path, rows: np.ndarray, n: int, seed: int = 0) -> dict:
    """Shopper photos of held-out products through the full query path: same product at rank 1 / in top 10."""
    rng = random.Random(seed)
    chosen = rng.sample(list(rows), min(n, len(rows)))
    sha = rec.metadata.image_sha
    rank1 = top10 = 0
    for row in tqdm(chosen, desc="shopper photos", unit="q"):
        item_id = int(rec.metadata.ids[row])
        photo = shopper_photo(load_image(data / "images" / f"{item_id}.jpg"), rng)
        found = [rec.metadata.row_of(m.id) for m in rec.search(photo, 10)]
        same = [r == row or (sha[row] and sha[r] == sha[row]) for r in found]  # a byte-identical twin counts
        rank1 += bool(same and same[0])
        top10 += any(same)
    return {"rank1": round(rank1 / len(chosen), 4), "top10": round(top10 / len(chosen), 4), "queries": len(chosen)}


def real_photo_report(
    rec: "Recommender",
    photos: Path,
    rows: np.ndarray,
    fields: tuple[str, ...] = ("articleType", "gender", "baseColour"),
) -> dict:
    """Real higher-resolution photos of held-out products (`photos/images/<id>.jpg`) through the full
    query path: the product itself (or a byte-identical catalog image) first / in the top 10; P@10 of
    the other results per field; the heads on the photos (`classification_report`, no confusion matrix)."""
    md, sha = rec.metadata, rec.metadata.image_sha
    rows = np.array([r for r in rows if (photos / "images" / f"{int(md.ids[r])}.jpg").is_file()], np.int64)
    rank1 = top10 = 0
    precision: dict[str, list[float]] = {f: [] for f in fields}
    descriptors = []
    for row in tqdm(rows, desc="real photos", unit="q"):
        query = rec.query(load_image(photos / "images" / f"{int(md.ids[row])}.jpg"))
        found = [md.row_of(m.id) for m in rec.search_vector(query.vector, 11)]
        same = [r == row or bool(sha[row] and sha[r] == sha[row]) for r in found]
        rank1 += same[0]
        top10 += any(same[:10])
        others = [r for r, s in zip(found, same) if not s][:10]
        for field in fields:
            precision[field].append(float(np.mean([md.columns[field][r] == md.columns[field][row] for r in others])))
        descriptors.append(query.descriptor)
    n = max(len(rows), 1)
    x = np.stack(descriptors) if descriptors else np.zeros((0, rec.heads.hidden_weight.shape[1]), np.float32)
    heads = classification_report(rec.heads, x, {c: md.columns[c][rows] for c in md.columns})
    for entry in heads.values():
        entry.pop("confusion", None), entry.pop("classes", None)
    return {
        "rank1": round(rank1 / n, 4),
        "top10": round(top10 / n, 4),
        "queries": int(len(rows)),
        "P@10": {f: round(float(np.mean(v)), 4) for f, v in precision.items()},
        "heads": heads,
    }


def two_item_photo(target: Image.Image, other: Image.Image, rng: random.Random) -> tuple[Image.Image, tuple]:
    """Two product photos side by side on one white canvas (the target left or right, a random gap and
    height offset), rephotographed as a whole; and the box a shopper would draw round the target: its
    edges off by up to 8% of its size either way, as hands draw them."""
    a, b = (img.convert("RGB") for img in (target, other))
    a, b = (img.resize((round(img.width * 320 / img.height), 320), Image.Resampling.BICUBIC) for img in (a, b))
    gap, drop = rng.randint(0, 40), rng.randint(0, 40)
    canvas = Image.new("RGB", (a.width + b.width + gap, 320 + drop), "white")
    left = rng.random() < 0.5
    xa, ya = (0, rng.choice((0, drop))) if left else (b.width + gap, rng.choice((0, drop)))
    canvas.paste(a, (xa, ya))
    canvas.paste(b, (a.width + gap, drop - ya) if left else (0, drop - ya))
    margin_share = 0.04
    photo = rephotograph(canvas, margin_share, rng.uniform(-3, 3), rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), 75)
    margin = int(margin_share * max(canvas.size))

    def edge(at: int, size: int) -> int:
        return at + margin + round(rng.uniform(-0.08, 0.08) * size)

    box = (edge(xa, a.width), edge(ya, a.height), edge(xa + a.width, a.width), edge(ya + a.height, a.height))
    return photo, (max(box[0], 0), max(box[1], 0), min(box[2], photo.width), min(box[3], photo.height))


def crop_report(rec: "Recommender", photos: Path, rows: np.ndarray, n: int = 200, seed: int = 0) -> dict:
    """Photos of two held-out products of different types side by side: is the target the first result
    for the whole photo, and for the photo cropped to the target as a shopper would crop it in the app?"""
    md, sha = rec.metadata, rec.metadata.image_sha
    rng = random.Random(seed)
    rows = [r for r in rows if (photos / "images" / f"{int(md.ids[r])}.jpg").is_file()]
    article = md.columns["articleType"]
    whole = cropped = 0
    chosen = rng.sample(rows, min(n, len(rows)))
    for row in tqdm(chosen, desc="cropped photos", unit="q"):
        partner = rng.choice([r for r in rng.sample(rows, 20) if article[r] != article[row]] or rows)
        photo, box = two_item_photo(
            *(load_image(photos / "images" / f"{int(md.ids[r])}.jpg") for r in (row, partner)), rng
        )

        def first_is_target(image: Image.Image) -> int:
            first = md.row_of(rec.search(image, 1)[0].id)
            return int(first == row or bool(sha[row] and sha[first] == sha[row]))

        whole += first_is_target(photo)
        cropped += first_is_target(photo.crop(box))
    n_ = max(len(chosen), 1)
    return {"whole_rank1": round(whole / n_, 4), "cropped_rank1": round(cropped / n_, 4), "queries": len(chosen)}


# The worst-N mean: the mean accuracy of this many least accurate article types, among those with at
# least WORST_MIN_ROWS measured products (fewer would make it the noise of a handful of photos).
WORST = 20
WORST_MIN_ROWS = 5


def classification_report(
    heads: Heads, descriptors: np.ndarray, columns: dict[str, np.ndarray], logits: dict[str, np.ndarray] | None = None
) -> dict:
    """Per head, on (n, d) `descriptors` whose true labels are `columns` (n each): accuracy, macro-F1 and
    the expected calibration error of the top label with its temperature (`ece`) and without
    (`ece_uncalibrated`); for article type also the worst-20 mean, the accuracy on women's and on men's
    products, and the confusion matrix. `logits`: the heads' scores of the descriptors where they were
    computed already (by other heads of the same classes: a cross-validation's folds)."""
    report = {}
    logits = heads.scores(np.asarray(descriptors, np.float32)) if logits is None else logits
    for column in heads:
        classes = heads[column].classes
        lookup = {c: i for i, c in enumerate(classes)}
        truth = np.array([lookup.get(str(v), -1) for v in columns[column]])
        known = truth >= 0
        scores, truth = logits[column][known], truth[known]
        predicted = np.argmax(scores, axis=1)
        f1s, accuracies = [], []
        for c in range(len(classes)):
            tp = np.sum((predicted == c) & (truth == c))
            fp, fn = np.sum((predicted == c) & (truth != c)), np.sum((predicted != c) & (truth == c))
            if tp + fn:
                f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
            if (truth == c).sum() >= WORST_MIN_ROWS:
                accuracies.append(float((predicted[truth == c] == c).mean()))
        report[column] = {
            "accuracy": round(float((predicted == truth).mean()), 4),
            "macro_f1": round(float(np.mean(f1s)), 4),
            "ece": round(calibration_error(softmax(scores / heads[column].temperature), truth), 4),
            "ece_uncalibrated": round(calibration_error(softmax(scores), truth), 4),
            "rows": int(known.sum()),
        }
        if column == "articleType":
            entry = report[column]
            entry[f"worst{WORST}_mean"] = round(float(np.mean(sorted(accuracies)[:WORST])), 4)
            gender = np.asarray(columns["gender"])[known]
            for who in ("Women", "Men"):
                if (mine := gender == who).any():
                    entry[f"accuracy_{who.lower()}"] = round(float((predicted[mine] == truth[mine]).mean()), 4)
            confusion = np.zeros((len(classes),) * 2, np.int64)
            np.add.at(confusion, (truth, predicted), 1)
            entry["classes"], entry["confusion"] = classes, confusion.tolist()
    return report


def feedback_lift(
    embeddings: np.ndarray,
    metadata: Metadata,
    rows: np.ndarray,
    update: Callable[[np.ndarray, list[np.ndarray], list[np.ndarray]], np.ndarray],
    k: int = 10,
    rounds: int = 2,
) -> dict:
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
            top = top_k(scores, k)
            precision = float(wanted[top].mean())
            if round_ == 0:
                before.append(precision)
            if round_ == rounds:
                after.append(precision)
                break
            liked += [embeddings[t] for t in top if wanted[t]]
            disliked += [embeddings[t] for t in top if not wanted[t]]
            query = update(embeddings[row], liked, disliked)
    return {
        "P@10_type_and_colour_before": round(float(np.mean(before)), 4),
        "P@10_type_and_colour_after": round(float(np.mean(after)), 4),
        "rounds": rounds,
        "queries": len(rows),
    }


def filtered_recall(rec: "Recommender", rows: np.ndarray, n: int = 200, k: int = 10) -> dict:
    """Recall@k of the shipped search path against exact filtered brute force, with no filter, common
    filters, the rarest article type with at least k items and a combined filter."""
    md = rec.metadata
    article_counts = {v: int((md.columns["articleType"] == v).sum()) for v in md.values("articleType")}
    rare = min((v for v, c in article_counts.items() if c >= k), key=article_counts.get)
    cases = {
        "none": None,
        "common: gender=Men": {"gender": "Men"},
        "common: masterCategory=Apparel": {"masterCategory": "Apparel"},
        f"rare: articleType={rare} ({article_counts[rare]} items)": {"articleType": rare},
        "combined: Women + Footwear": {"gender": "Women", "masterCategory": "Footwear"},
    }
    out = {}
    for name, filters in cases.items():
        mask = md.mask(filters)
        allowed = np.arange(len(md)) if mask is None else np.flatnonzero(mask)
        recalls = []
        for row in rows[:n]:
            q = np.asarray(rec.index.embeddings[row], np.float32)
            got = rec.index.search(q, k, mask)[0]
            exact = rec.index.exact(q, k, allowed)[0]
            recalls.append(len(set(got) & set(exact)) / len(exact))
        out[name] = round(float(np.mean(recalls)), 4)
    return out


def phone_photo(photo, side: int, seed: int) -> bytes:
    """A photo scaled to `side` on its longer side with a camera's grain (Gaussian, sigma 2 levels: a
    phone photo's pixels do not compress like a smooth upscale), as a JPEG."""
    scale = side / max(photo.size)
    big = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
    grain = np.random.default_rng(seed).normal(0, 2, (big.height, big.width, 1))
    buffer = io.BytesIO()
    pixels = (np.asarray(big, np.float32) + grain).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
