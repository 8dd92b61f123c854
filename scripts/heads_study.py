"""The attribute heads' study: class balancing, synthetic shopper views, mirror images of the training
photos and calibration, each trained on a built index's own descriptors and measured on products no
variant was fitted on.

    python scripts/heads_study.py --index DIR --data ../shared/data/fashion-dev
                                  [--real-photos ../shared/data/fashion-dev-hires] [--cache FILE.npz]
                                  [--inner | --folds K] [--variants 'NAME;...'] [--out FILE.json]

Per variant: article type accuracy, macro-F1, the mean accuracy of the 20 least accurate article types,
women's and men's accuracy, every head's accuracy, and the expected calibration error (ECE) of the top
label before and after its temperature, on the held-out catalog photos and on real higher-resolution
photos of the same products. --inner measures on a fifth of the fit part instead (the rest trains): the
split on which a variant is chosen, so the held-out products only report it. --folds K measures every
fit product once instead, by heads trained on the other K-1 folds of the fit part: K times the training,
five times as many products measured as --inner, so a point of macro-F1 is less often a few photos of a
rare type; the heads are not calibrated there (a temperature changes no label). The descriptors of the
synthetic views, of the mirror images and of the real photos are computed once (through the index's own
model) and kept in --cache."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import ImageOps
from tqdm import tqdm

from recommender import Recommender, artifacts
from recommender.augment import gets_view, shopper_view
from recommender.cli import add_model_options, run_main
from recommender.errors import UserError
from recommender.evaluation import WORST, classification_report
from recommender.heads import HeadSettings, train_heads
from recommender.images import load_image
from recommender.runtime import configure_runtime
from recommender.split import heldout_mask

SHIPPED = HeadSettings()
# Balancing applies to the article type head only, which then trains without label smoothing
# (HeadSettings.balanced); "refit" calibration unless named; no views and no mirror images unless named.
VARIANTS = {
    "plain: no temperature": dict(balance="none", calibration="none"),
    "plain + temperature held back": dict(balance="none", calibration="held-back"),
    "plain + temperature refit": dict(balance="none", calibration="refit"),
    "views": dict(balance="none", views=True, calibration="refit"),
    "article type: no smoothing": dict(balance="weighted", tau=0.0, calibration="none"),
    "article type: logit-adjusted tau 1": dict(balance="logit-adjusted", tau=1.0, calibration="none"),
    "article type: weighted tau 0.5": dict(balance="weighted", tau=0.5, calibration="none"),
    "article type: weighted tau 1": dict(balance="weighted", tau=1.0, calibration="none"),
    "article type: sampled tau 0.5": dict(balance="sampled", tau=0.5, calibration="none"),
    "article type: weighted tau 0.5, refit": dict(balance="weighted", tau=0.5, calibration="refit"),
    "article type: weighted tau 0.5, views, refit": dict(balance="weighted", tau=0.5, views=True, calibration="refit"),
    "mirrors": dict(balance="none", mirrors=True, calibration="none"),
    "article type: weighted tau 0.5, mirrors": dict(balance="weighted", tau=0.5, mirrors=True, calibration="none"),
}


def inner_mask(ids: np.ndarray) -> np.ndarray:
    """A fifth of the products by a hash of the id, salted apart from the split's."""
    keys = (hashlib.sha1(f"inner:{int(i)}".encode()).digest() for i in ids)
    return np.fromiter((int.from_bytes(k[:4], "little") % 100 < 20 for k in keys), bool, len(ids))


def folds_of(ids: np.ndarray, k: int) -> np.ndarray:
    """Each product's fold, 0 to k-1, by a hash of the id, salted apart from the split's and --inner's."""
    keys = (hashlib.sha1(f"cv:{int(i)}".encode()).digest() for i in ids)
    return np.fromiter((int.from_bytes(key[:4], "little") % k for key in keys), np.int64, len(ids))


def compact(report: dict) -> dict:
    """`classification_report` without the confusion matrix."""
    return {h: {k: v for k, v in r.items() if k not in ("classes", "confusion")} for h, r in report.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the Kaggle-style folder the index was built from")
    parser.add_argument("--real-photos", type=Path, help="higher-resolution photos (images/<id>.jpg)")
    parser.add_argument(
        "--cache", type=Path, help="where the views', mirror images' and real photos' descriptors are kept"
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--inner", action="store_true", help="measure on a fifth of the fit part (choosing)")
    how.add_argument("--folds", type=int, help="measure every fit product by K-fold cross-validation (choosing)")
    parser.add_argument("--variants", help="names separated by semicolons (default: all)")
    parser.add_argument("--out", type=Path)
    add_model_options(parser)
    args = parser.parse_args(argv)
    names = args.variants.split(";") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UserError(f"No variant is named {unknown[0]!r}; the variants are: {'; '.join(VARIANTS)}.")
    configure_runtime()

    rec = Recommender.load(args.index, weights=args.weights, text_model=args.text_model)
    md, ids = rec.metadata, rec.metadata.ids
    features = np.load(args.index / artifacts.FEATURES, mmap_mode="r")
    real = args.real_photos or args.data.with_name(args.data.name + "-hires")

    def photo(item_id: int) -> Path:
        return args.data / "images" / f"{int(item_id)}.jpg"

    def embedded(images: list, desc: str) -> np.ndarray:
        return np.concatenate(
            [
                rec.embedder.embed([make() for make in images[s : s + 64]])
                for s in tqdm(range(0, len(images), 64), desc=desc, unit="64")
            ]
        )

    cached = dict(np.load(args.cache)) if args.cache and args.cache.is_file() else {}
    made = not cached
    if made:  # views re-made as precompute makes them; real photos of every product measured
        view_ids = ids[[r for r, i in enumerate(ids) if gets_view(int(i), r)]]
        ever_measured = heldout_mask(ids) | inner_mask(ids)
        real_ids = np.array([int(i) for i in ids[ever_measured] if (real / "images" / f"{int(i)}.jpg").is_file()])
        cached.update(
            view_ids=view_ids,
            views=embedded([lambda i=i: shopper_view(load_image(photo(i)), seed=int(i)) for i in view_ids], "views"),
            real_ids=real_ids,
            real=embedded([lambda i=i: real / "images" / f"{int(i)}.jpg" for i in real_ids], "real photos"),
        )
    if "mirrors" not in cached and any(VARIANTS[name].get("mirrors") for name in names):
        made = True  # every fit product's photo, mirrored (the `mirrors` variants train on them)
        mirror_ids = ids[~heldout_mask(ids)]
        cached.update(
            mirror_ids=mirror_ids,
            mirrors=embedded([lambda i=i: ImageOps.mirror(load_image(photo(i))) for i in mirror_ids], "mirror images"),
        )
    if made and args.cache:
        np.savez(args.cache, **cached)
    view_ids, views, real_ids, real_x = (cached[k] for k in ("view_ids", "views", "real_ids", "real"))
    mirrors, mirror_ids = cached.get("mirrors"), cached.get("mirror_ids")

    heldout = heldout_mask(ids)
    if args.folds:
        if args.folds < 2:
            raise UserError(f"--folds must be at least 2 (got {args.folds}).")
        fold = folds_of(ids, args.folds)
        splits = [(~heldout & (fold != f), ~heldout & (fold == f)) for f in range(args.folds)]
    elif args.inner:
        splits = [(~heldout & ~inner_mask(ids), ~heldout & inner_mask(ids))]
    else:
        splits = [(~heldout, heldout)]
    measured = np.logical_or.reduce([part for _, part in splits])
    rows = np.flatnonzero(measured)
    row_of = {int(i): r for r, i in enumerate(ids)}
    real_rows = np.array([row_of[int(i)] for i in real_ids])
    on_real = measured[real_rows]
    x = np.asarray(features[rows], np.float32)
    columns = {c: np.asarray(md.columns[c])[rows] for c in md.columns}
    real_columns = {c: np.asarray(md.columns[c])[real_rows[on_real]] for c in md.columns}

    results = {}
    for name in names:
        settings = dataclasses.replace(SHIPPED, **{"views": False, "mirrors": False, **VARIANTS[name]})
        if args.folds:
            settings = dataclasses.replace(settings, calibration="none")
        t0 = time.perf_counter()
        # Each measured product's logits, from the heads of the split that measured it.
        logits: dict[str, np.ndarray] = {}
        real_logits: dict[str, np.ndarray] = {}
        for fit, part in splits:
            heads = train_heads(
                features,
                ids,
                md.columns,
                settings,
                fit=fit,
                heldout=part,
                views=views,
                view_ids=view_ids,
                mirrors=mirrors,
                mirror_ids=mirror_ids,
            )
            for into, source, mine in (
                (logits, x, part[rows]),
                (real_logits, real_x[on_real], part[real_rows[on_real]]),
            ):
                for column, scores in heads.scores(source[mine]).items():
                    into.setdefault(column, np.zeros((len(source), scores.shape[1]), np.float32))[mine] = scores
        results[name] = {
            "train_s": round(time.perf_counter() - t0, 1),
            "catalog": compact(classification_report(heads, x, columns, logits)),
            "real": compact(classification_report(heads, real_x[on_real], real_columns, real_logits)),
            "temperatures": {c: heads[c].temperature for c in heads},
        }
        a, r = results[name]["catalog"]["articleType"], results[name]["real"]["articleType"]
        print(
            f"{name}: acc {a['accuracy']:.4f} macro-F1 {a['macro_f1']:.4f} worst{WORST} {a[f'worst{WORST}_mean']:.4f} "
            f"women {a['accuracy_women']:.4f} men {a['accuracy_men']:.4f} "
            f"ECE {a['ece_uncalibrated']:.4f}->{a['ece']:.4f} | real acc {r['accuracy']:.4f} "
            f"ECE {r['ece_uncalibrated']:.4f}->{r['ece']:.4f} | {results[name]['train_s']} s",
            flush=True,
        )
    summary = {
        "index": str(args.index),
        "measured_on": (
            f"{args.folds}-fold cross-validation over the fit part"
            if args.folds
            else "inner fifth of the fit part"
            if args.inner
            else "held-out products"
        ),
        "measured_products": int(len(rows)),
        "real_photos": int(on_real.sum()),
        "variants": results,
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
