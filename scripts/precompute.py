"""Build the artifacts directory: stream a catalog through ResNet50 into an HNSW index with heads.

    python scripts/precompute.py --source SRC --out DIR [--limit N] [--weights PATH] [--batch-size N] [--workers N]
                                 [--num-shards N --shard-index I]
    python scripts/precompute.py --merge SLICE_DIR [SLICE_DIR ...] --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before torch loads: idle OpenMP threads sleep instead of spinning, so the decode thread gets a core
# without stalling the model's team. Pipeline 66 vs 56 forward passes/s on 2 cores (benchmark.py).
# Not for the app: there it doubles one query's latency (31 vs 17 ms).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.catalog import DEFAULT_SOURCE, CatalogSource  # noqa: E402
from recommender.pipeline import BATCH_SIZE, GPU_BATCH_SIZE, SHARD_SIZE  # noqa: E402
from recommender.cli import run_cli  # noqa: E402
from recommender.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="Hub dataset id, Kaggle-style folder or saved dataset")
    parser.add_argument("--out", required=True, type=Path, help="artifacts directory to create (replaced atomically)")
    parser.add_argument("--limit", type=int, help="only the first N catalog rows")
    parser.add_argument("--weights", help="ResNet50 weights file (.safetensors/.pth); default: $RECOMMENDER_WEIGHTS, then the Hub")
    parser.add_argument("--batch-size", type=int, help=f"default {BATCH_SIZE} on a CPU, {GPU_BATCH_SIZE} on a GPU (fastest measured)")
    parser.add_argument("--workers", type=int, help="decode processes; default 1 on a CPU, one per core but one on a GPU")
    parser.add_argument("--num-shards", type=int, default=1, help="split the stream into N slices (one per machine)")
    parser.add_argument("--shard-index", type=int, default=0, help="which slice this run embeds")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="rows per resumable shard")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="SLICE_DIR", help="join finished slices into --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def run() -> dict:
        from recommender.pipeline import merge_slices, precompute

        if args.merge:
            return merge_slices(args.merge, args.out)
        for name in ("limit", "batch_size", "workers"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1.")
        source = CatalogSource(args.source, args.limit)
        from recommender.embedder import Embedder

        embedder = Embedder(args.weights)
        print(f"Model: {embedder.weights_info['source']} ({embedder.precision} on {embedder.device.type}); source: {source.kind} {args.source}", flush=True)
        return precompute(source, args.out, embedder, args.batch_size, args.num_shards, args.shard_index,
                          shard_size=args.shard_size, progress=not args.quiet, workers=args.workers)

    result = run_cli(run)
    if result is None:
        return 2
    if "slice" in result:
        print(f"Slice written to {result['slice']}; merge all slices with --merge.")
    else:
        print(json.dumps({"out": str(args.out), "count": result["count"], "skipped": result["skipped"]["counts"],
                          "heads_heldout_accuracy": {h: v["heldout_accuracy"] for h, v in result["heads"].items()},
                          "throughput_img_s": result["build"].get("throughput_img_s")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
