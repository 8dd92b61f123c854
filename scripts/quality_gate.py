"""CI quality floor: fail when P@10 of articleType on a built index drops below --min.

Queries are the held-out part of the split by product id (nothing was fitted on them), searched
against the whole index with the query and byte-identical images excluded.

    python scripts/quality_gate.py --index DIR --min 0.72
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import artifacts  # noqa: E402
from recommender.evaluation import leave_one_out_precision  # noqa: E402
from recommender.metadata import Metadata  # noqa: E402
from recommender.split import heldout_mask  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--field", default="articleType")
    parser.add_argument("--min", type=float, required=True, help="the floor for P@10")
    args = parser.parse_args(argv)
    artifacts.read_manifest(args.index)
    embeddings = np.load(args.index / artifacts.EMBEDDINGS)
    metadata = Metadata.load(args.index / artifacts.METADATA)
    queries = np.flatnonzero(heldout_mask(metadata.ids))
    p10 = leave_one_out_precision(embeddings, metadata, args.field, 10, queries)
    verdict = "PASS" if p10 >= args.min else "FAIL"
    print(f"quality gate: P@10 {args.field} = {p10:.4f}, {len(queries)} held-out queries against {len(metadata)} items "
          f"(floor {args.min}): {verdict}")
    return 0 if p10 >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
