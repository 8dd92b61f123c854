"""CI quality floor: fail when P@10 of articleType on a built index drops below --min, or (with
--data) when the shopper-photo rank-1 drops below --min-rank1.

Queries are the held-out part of the split by product id (nothing was fitted on them), searched
against the whole index with the query and byte-identical images excluded; shopper photos are made of
held-out products (the evaluation's protocol) and go through the full query path.

    python scripts/quality_gate.py --index DIR --min 0.81 [--data DATA_DIR --min-rank1 0.85 --weights PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import Recommender, artifacts  # noqa: E402
from recommender.evaluation import leave_one_out_precision, shopper_photo_robustness  # noqa: E402
from recommender.metadata import Metadata  # noqa: E402
from recommender.projection import appearance_dims  # noqa: E402
from recommender.split import heldout_mask  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--field", default="articleType")
    parser.add_argument("--min", type=float, required=True, help="the floor for P@10")
    parser.add_argument("--data", type=Path, help="the Kaggle-style folder the index was built from (for shopper photos)")
    parser.add_argument("--min-rank1", type=float, default=0.0, help="the floor for shopper-photo rank-1")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--weights")
    args = parser.parse_args(argv)
    manifest = artifacts.read_manifest(args.index)
    embeddings = np.load(args.index / artifacts.EMBEDDINGS)
    metadata = Metadata.load(args.index / artifacts.METADATA)
    projection = artifacts.load_projection(args.index / artifacts.PROJECTION, manifest["projection"])
    queries = np.flatnonzero(heldout_mask(metadata.ids))
    # Ordered as the app orders results (the closest in appearance first).
    p10 = leave_one_out_precision(embeddings, metadata, args.field, 10, queries, appearance_dims(projection))
    passed = p10 >= args.min
    print(f"quality gate: P@10 {args.field} = {p10:.4f}, {len(queries)} held-out queries against {len(metadata)} items "
          f"(floor {args.min}): {'PASS' if passed else 'FAIL'}")
    if args.data:
        rec = Recommender.load(args.index, weights=args.weights, verify=False)  # read_manifest verified above
        rank1 = shopper_photo_robustness(rec, args.data, queries, args.photos)["rank1"]
        print(f"quality gate: shopper-photo rank-1 = {rank1:.4f}, {min(args.photos, len(queries))} photos of held-out "
              f"products (floor {args.min_rank1}): {'PASS' if rank1 >= args.min_rank1 else 'FAIL'}")
        passed = passed and rank1 >= args.min_rank1
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
