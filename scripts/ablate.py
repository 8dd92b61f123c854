"""Ablations behind the shipped search space, each on the held-out part of the split by product id.

    python scripts/ablate.py --index DIR --data ../shared/data/fashion-dev [--weights PATH] [--out FILE.json]
                             [--rows 3000] [--photos 500]

Part 1 (embedding): on the first --rows catalog rows, raw CNN features with regional GeM vs GeM vs average pooling,
trimming the background vs not, and the input shape (3:4 vs square, 224 / 160 / 128 px high); P@10
articleType of the held-out rows among them and shopper-photo rank-1.
Part 2 (search space): on the built index's descriptors, retrains the projection without synthetic
views, without or with a stronger instance loss, with other PCA sizes, colour and heads weights, and
with the plain ranking."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recommender import artifacts
from recommender.augment import gets_view, shopper_view
from recommender.backbones import INPUT_SIZE
from recommender.cli import add_model_options, run_main
from recommender.embedder import Embedder
from recommender.evaluation import leave_one_out_precision, shopper_photo
from recommender.heads import Heads
from recommender.hnsw import top_k
from recommender.images import load_image
from recommender.metadata import Metadata
from recommender.pooling import gem_pool, regional_gem
from recommender.runtime import configure_runtime
from recommender.search_space import SearchSpaceSettings, _unit, fit_search_space
from recommender.serve.ranking import POOL, promote_closest
from recommender.split import heldout_mask

SHIPPED = SearchSpaceSettings()


def rank1(
    catalog: np.ndarray, photos: np.ndarray, rows: np.ndarray, sha: np.ndarray, appearance_dims: int = 0
) -> float:
    """Share of shopper photos whose own product (or a byte-identical twin) is the top match; with
    `appearance_dims`, after ranking.promote_closest as in the app."""
    catalog, photos = _unit(catalog), _unit(photos)
    scores = photos @ catalog.T
    hits = []
    for i, row in enumerate(rows):
        top = top_k(scores[i], POOL)
        if appearance_dims:
            top, _ = promote_closest(top, scores[i, top], catalog, photos[i], appearance_dims)
        hits.append(top[0] == row or (sha[row] and sha[top[0]] == sha[row]))
    return round(float(np.mean(hits)), 4)


def embed_images(embedder: Embedder, images: list, trim: bool, desc: str) -> dict[str, np.ndarray]:
    """Average-, GeM- and regional-GeM-pooled unit features of images, with or without trimming the background."""
    out = {"avg": [], "gem": [], "regional gem": []}
    for start in tqdm(range(0, len(images), 32), desc=desc, unit="batch"):
        chunk = images[start : start + 32]
        batch = np.stack([embedder.model_input(i, trim) for i in chunk])
        maps, _ = embedder.feature_maps(batch)  # the last stage (pooling is compared on it)
        out["avg"].append(torch.nn.functional.normalize(maps.mean((2, 3)), dim=1).numpy())
        out["gem"].append(torch.nn.functional.normalize(gem_pool(maps), dim=1).numpy())
        out["regional gem"].append(regional_gem(maps).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    add_model_options(parser, text=False)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--photos", type=int, default=500)
    args = parser.parse_args(argv)
    configure_runtime()
    embedder = Embedder(args.weights)
    built = artifacts.read_manifest(args.index, verify=False)["model"]  # one sentence if there is no index
    embedder.follow(built, args.index)  # the index's path (int8 with its calibration, or float)
    md = Metadata.load(args.index / artifacts.METADATA)
    descriptors = np.load(args.index / artifacts.FEATURES)
    images = [load_image(args.data / "images" / f"{i}.jpg") for i in tqdm(md.ids, desc="decode", unit="img")]
    held = np.flatnonzero(heldout_mask(md.ids))
    rng = random.Random(0)  # the evaluation's shopper photos: held-out products, scripts/evaluate.py protocol
    photo_rows = np.array(rng.sample(list(held), min(args.photos, len(held))))
    photos = [shopper_photo(images[r], rng) for r in photo_rows]
    report: dict = {"embedding": {}, "search_space": {}}

    # Part 1: pooling and trimming, raw CNN features of the first --rows rows.
    n = min(args.rows, len(md))
    sub = Metadata(md.ids[:n], {c: md.columns[c][:n] for c in md.columns}, md.image_sha[:n])
    queries = np.flatnonzero(heldout_mask(sub.ids))
    sub_photos = photo_rows < n
    sub_shots = [p for p, keep in zip(photos, sub_photos) if keep]
    shipped = (True, "regional gem")
    shapes = {
        INPUT_SIZE: [shipped, (True, "gem"), (True, "avg"), (False, "regional gem"), (False, "gem"), (False, "avg")],
        (224, 224): [shipped, (True, "gem")],
        (160, 120): [shipped],
        (128, 96): [shipped],
    }
    for shape, settings in shapes.items():
        if shape == INPUT_SIZE:
            shaped = embedder
        else:
            shaped = Embedder(args.weights, input_size=shape)
            shaped.follow(built, args.index)
        for trim in sorted({t for t, _ in settings}, reverse=True):
            catalog = embed_images(shaped, images[:n], trim, f"catalog {shape} trim={trim}")
            shots = embed_images(shaped, sub_shots, trim, f"photos {shape} trim={trim}")
            for pooling in [p for t, p in settings if t == trim]:
                name = f"{shape[0]}x{shape[1]} (h x w), {'trimmed' if trim else 'whole photo'}, {pooling}"
                report["embedding"][name] = {
                    "P@10 articleType": round(
                        leave_one_out_precision(catalog[pooling], sub, "articleType", 10, queries), 4
                    ),
                    "shopper rank-1": rank1(catalog[pooling], shots[pooling], photo_rows[sub_photos], sub.image_sha),
                }
                print(name, report["embedding"][name], flush=True)

    # Part 2: the search space, on the index's own descriptors; views re-made exactly as precompute makes them.
    d = embedder.feature_dim  # the CNN features the search space reads (not the heads' grid)
    view_rows = np.array([r for r, i in enumerate(md.ids) if gets_view(int(i), r)])
    views = embedder.embed(
        [shopper_view(images[r], seed=int(md.ids[r])) for r in tqdm(view_rows, desc="views", unit="img")]
    )
    photo_descriptors = embedder.embed(photos)
    queries = held

    manifest = artifacts.read_manifest(args.index)
    heads = Heads.load(args.index / artifacts.HEADS, manifest["heads"])  # trained on the fit part

    def measure(vectors: np.ndarray, photo_vectors: np.ndarray, appearance: int = 0) -> dict:
        out = {
            f: round(leave_one_out_precision(vectors, md, f, 10, queries, appearance), 4)
            for f in ("articleType", "gender", "baseColour")
        }
        out["shopper rank-1"] = rank1(vectors, photo_vectors, photo_rows, md.image_sha, appearance)
        return out

    def space(**kwargs) -> dict:
        use_views, promote = kwargs.pop("views", True), kwargs.pop("promote", True)
        fitted = fit_search_space(
            descriptors,
            md.ids,
            md.columns,
            views if use_views else None,
            md.ids[view_rows] if use_views else None,
            heads,
            dataclasses.replace(SHIPPED, **{"feature_dims": d, **kwargs}),
        )
        return measure(
            fitted.project(descriptors, heads),
            fitted.project(photo_descriptors, heads),
            fitted.appearance_dims if promote else 0,
        )

    variants = {
        "CNN features only (regional GeM)": lambda: measure(descriptors[:, :d], photo_descriptors[:, :d]),
        f"shipped: PCA {SHIPPED.raw_dims} + projection (views, instance loss {SHIPPED.instance_weight}) + colour "
        f"{SHIPPED.colour_weight} + heads {dict(SHIPPED.semantic_weights)}, "
        "closest in appearance first": lambda: space(),
        "same, without moving the closest in appearance first": lambda: space(promote=False),
        "heads weight 0 (appearance only)": lambda: space(semantic_weights={}),
        "heads weight 0.3 (all three)": lambda: space(semantic_weights=dict.fromkeys(SHIPPED.semantic_weights, 0.3)),
        "heads weight 0.5 (all three)": lambda: space(semantic_weights=dict.fromkeys(SHIPPED.semantic_weights, 0.5)),
        "heads weight 0.7 (all three)": lambda: space(semantic_weights=dict.fromkeys(SHIPPED.semantic_weights, 0.7)),
        "gender head weight 1.0": lambda: space(semantic_weights=dict(SHIPPED.semantic_weights, gender=1.0)),
        "articleType head weight 0.5": lambda: space(semantic_weights=dict(SHIPPED.semantic_weights, articleType=0.5)),
        "projection trained without synthetic views": lambda: space(views=False),
        "instance loss weight 0": lambda: space(instance_weight=0.0),
        "instance loss weight 1": lambda: space(instance_weight=1.0),
        "PCA 256": lambda: space(raw_dims=256),
        f"PCA {d} (all)": lambda: space(raw_dims=d),
        "projection on the last stage's 2048 features only": lambda: space(feature_dims=2048),
        "colour weight 0": lambda: space(colour_weight=0.0),
        "colour weight 0.85": lambda: space(colour_weight=0.85),
    }
    for name, run in variants.items():
        report["search_space"][name] = run()
        print(name, report["search_space"][name], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
