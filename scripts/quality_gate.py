"""CI quality floor: fail when P@10 of articleType on a built index drops below --min, (with --data)
when the shopper-photo rank-1 drops below --min-rank1, or (with --real-photos) when the rank-1 of real
higher-resolution photos drops below --min-real-rank1; search by words: when P@10 of all stated
attributes on queries in shoppers' everyday words drops below --min-text, or (with --real-photos) P@10
of photo + words below --min-photo-words, or the rank-1 of two-product photos cropped to one below
--min-crop; the article type head: when its macro-F1 on the held-out catalog photos drops below
--min-macro-f1 or its expected calibration error rises above --max-ece.

Queries are the held-out part of the split by product id (nothing was fitted on them), searched
against the whole index with the query and byte-identical images excluded; shopper photos are made of
held-out products (the evaluation's protocol) and go through the full query path, as do real photos.

    python scripts/quality_gate.py --index DIR --min 0.81 [--data DATA_DIR --min-rank1 0.85]
                                   [--real-photos HIRES_DIR --min-real-rank1 0.9 --min-photo-words 0.7
                                    --min-crop 0.9]
                                   [--min-text 0.85] [--min-macro-f1 0.8 --max-ece 0.07]
                                   [--weights PATH] [--text-model DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from recommender import Recommender, artifacts
from recommender.cli import add_model_options, run_cli
from recommender.evaluation import (
    classification_report,
    crop_report,
    leave_one_out_precision,
    real_photo_report,
    shopper_photo_robustness,
)
from recommender.runtime import configure_runtime
from recommender.split import heldout_mask
from recommender.text_evaluation import generated_queries, photo_plus_words, precision_report, rankings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--field", default="articleType")
    parser.add_argument("--min", type=float, required=True, help="the floor for P@10")
    parser.add_argument(
        "--data", type=Path, help="the Kaggle-style folder the index was built from (for shopper photos)"
    )
    parser.add_argument("--min-rank1", type=float, default=0.0, help="the floor for shopper-photo rank-1")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--real-photos", type=Path, help="folder of higher-resolution photos (images/<id>.jpg)")
    parser.add_argument("--min-real-rank1", type=float, default=0.0, help="the floor for real-photo rank-1")
    add_model_options(parser)
    parser.add_argument("--min-text", type=float, default=0.0, help="the floor for words' P@10 of all attributes")
    parser.add_argument("--min-photo-words", type=float, default=0.0, help="the floor for photo + words P@10")
    parser.add_argument(
        "--min-crop", type=float, default=0.0, help="the floor for rank-1 of two-product photos cropped to one"
    )
    parser.add_argument(
        "--min-macro-f1", type=float, default=0.0, help="the floor for the article type head's macro-F1"
    )
    parser.add_argument(
        "--max-ece", type=float, default=1.0, help="the ceiling for the article type head's calibration error"
    )
    args = parser.parse_args(argv)
    configure_runtime()
    rec = run_cli(lambda: Recommender.load(args.index, weights=args.weights, text_model=args.text_model))
    if rec is None:
        return 2
    metadata = rec.metadata
    queries = np.flatnonzero(heldout_mask(metadata.ids))
    # Ordered as the app orders results (the closest in appearance first).
    p10 = leave_one_out_precision(rec.index.embeddings, metadata, args.field, 10, queries, rec.space.appearance_dims)
    passed = p10 >= args.min
    print(
        f"quality gate: P@10 {args.field} = {p10:.4f}, {len(queries)} held-out queries against {len(metadata)} items "
        f"(floor {args.min}): {'PASS' if passed else 'FAIL'}"
    )
    features = np.load(args.index / artifacts.FEATURES, mmap_mode="r")
    columns = {c: metadata.columns[c][queries] for c in metadata.columns}
    head = classification_report(rec.heads, features[queries], columns)["articleType"]
    heads_pass = head["macro_f1"] >= args.min_macro_f1 and head["ece"] <= args.max_ece
    print(
        f"quality gate: article type head macro-F1 = {head['macro_f1']:.4f} (floor {args.min_macro_f1}), "
        f"ECE = {head['ece']:.4f} (ceiling {args.max_ece}; {head['ece_uncalibrated']:.4f} without its temperature), "
        f"accuracy {head['accuracy']:.4f}, {head['rows']} held-out products: {'PASS' if heads_pass else 'FAIL'}"
    )
    passed = passed and heads_pass
    if args.data:
        rank1 = shopper_photo_robustness(rec, args.data, queries, args.photos)["rank1"]
        print(
            f"quality gate: shopper-photo rank-1 = {rank1:.4f}, {min(args.photos, len(queries))} photos of held-out "
            f"products (floor {args.min_rank1}): {'PASS' if rank1 >= args.min_rank1 else 'FAIL'}"
        )
        passed = passed and rank1 >= args.min_rank1
    if args.real_photos:
        real = real_photo_report(rec, args.real_photos, queries)
        print(
            f"quality gate: real-photo rank-1 = {real['rank1']:.4f}, {real['queries']} photos of held-out products "
            f"(floor {args.min_real_rank1}): {'PASS' if real['rank1'] >= args.min_real_rank1 else 'FAIL'}"
        )
        passed = passed and real["queries"] > 0 and real["rank1"] >= args.min_real_rank1
        words = photo_plus_words(rec, queries, args.real_photos)
        print(
            f"quality gate: photo + words P@10 = {words['P@10']:.4f}, "
            f"{words['colour']['queries'] + words['gender']['queries']} real photos of held-out products "
            f"(floor {args.min_photo_words}): {'PASS' if words['P@10'] >= args.min_photo_words else 'FAIL'}"
        )
        passed = passed and words["P@10"] >= args.min_photo_words
        crop = crop_report(rec, args.real_photos, queries)
        print(
            f"quality gate: cropped rank-1 = {crop['cropped_rank1']:.4f} (whole photo {crop['whole_rank1']:.4f}), "
            f"{crop['queries']} two-product photos of held-out products (floor {args.min_crop}): "
            f"{'PASS' if crop['cropped_rank1'] >= args.min_crop else 'FAIL'}"
        )
        passed = passed and crop["cropped_rank1"] >= args.min_crop
    everyday = generated_queries(rec, queries, 500)
    text = precision_report(rec, everyday, rankings(rec, everyday)["product"])["P@10_all"]
    print(
        f"quality gate: words P@10 of all stated attributes = {text:.4f}, {len(everyday)} queries in everyday "
        f"words (floor {args.min_text}): {'PASS' if text >= args.min_text else 'FAIL'}"
    )
    passed = passed and text >= args.min_text
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
