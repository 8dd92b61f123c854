"""Build the artifacts directory: stream a catalog through ResNet50 into an HNSW index with heads, and
each product's text through the text model.

python scripts/precompute.py --source SRC --out DIR [--limit N] [--weights PATH] [--text-model DIR]
                             [--precision auto|fp32|bf16|int8|ort-int8] [--batch-size N] [--workers N]
                             [--decode auto|cpu|device]
                             [--engine local|ray [--ray-address ADDR] [--ray-actors N]]
python scripts/precompute.py --source SRC --out DIR --update [--refit]

--update brings the index at DIR to the catalog SRC is now: products matched by id and image checksum,
only new photos embedded, removed products dropped, published as a new version (the app serving DIR
swaps to it). --refit also trains the heads, search space and map again from the stored descriptors.

--engine ray decodes and embeds on a Ray cluster (pip install -r requirements-scale.txt): ADDR of a
running one (`ray start --head` prints it; "auto" inside a `ray job submit`), or none for a local Ray.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from recommender.build.shards import SHARD_SIZE
from recommender.catalog import DEFAULT_SOURCE, CatalogSource
from recommender.cli import add_model_options, add_precision_option, run_cli
from recommender.errors import UserError
from recommender.runtime import configure_runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="Hub dataset id, Kaggle-style folder or saved dataset")
    parser.add_argument("--out", required=True, type=Path, help="artifacts directory to create (replaced atomically)")
    parser.add_argument("--limit", type=int, help="only the first N catalog rows")
    add_model_options(parser)
    add_precision_option(
        parser,
        "the fastest this hardware runs at equal quality (int8 on x86 CPUs: PyTorch's with AVX-512 VNNI, ONNX "
        "Runtime's (ort-int8) without)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="default: the fastest measured for the device (16 on a CPU, 128 on a GPU)"
    )
    parser.add_argument(
        "--workers", type=int, help="decode processes; default 1 on a CPU, one per core but one on a GPU"
    )
    parser.add_argument(
        "--decode",
        choices=("auto", "cpu", "device"),
        default="auto",
        help="where the catalog's JPEGs are decoded and preprocessed: CPU processes, or the model's device "
        "(auto: the device where it is a GPU)",
    )
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="rows per resumable shard")
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="embed on this machine or on a Ray cluster"
    )
    parser.add_argument("--ray-address", help="a running Ray cluster's address (default: start a local Ray)")
    parser.add_argument(
        "--ray-actors", type=int, help="Embedder actors on the cluster (default: one per GPU, else 3/4 of the CPUs)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--update", action="store_true", help="update the index at --out from the changed catalog")
    parser.add_argument("--refit", action="store_true", help="with --update: train the fitted parts again")
    args = parser.parse_args(argv)
    configure_runtime(build=True)  # before torch loads (the imports below)
    # Over a file-size limit (ulimit -f) a write fails like one on a full disk, with its sentence, instead
    # of the signal killing the build.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def run() -> dict:
        from recommender.build import precompute

        for name in ("limit", "batch_size", "workers", "ray_actors", "shard_size"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1.")
        if args.engine == "ray" and args.decode == "device":
            raise UserError("--decode device is for --engine local; on Ray the photos are decoded by its tasks.")
        if args.refit and not args.update:
            raise UserError("--refit goes with --update (a full build fits everything anyway).")
        if args.update and (args.engine == "ray" or args.limit is not None):
            raise UserError("--update reads the whole catalog on this machine; leave out --engine ray and --limit.")
        source = CatalogSource(args.source, args.limit)
        from recommender.embedder import Embedder
        from recommender.text_model import TextEncoder

        engine = None
        if args.engine == "ray":
            from recommender.build.ray_engine import RayEngine

            engine = RayEngine(args.weights, args.text_model, args.ray_address, args.ray_actors)
        embedder = Embedder(args.weights, precision=args.precision)
        text_encoder = TextEncoder(args.text_model, device=embedder.device)  # a GPU build encodes texts there
        if args.update:
            from recommender.build.update import update

            return update(source, args.out, embedder, text_encoder, refit=args.refit, progress=not args.quiet)
        print(
            f"Model: {embedder.weights_info['source']} ({embedder.build_precision} on {embedder.device.type}); "
            f"text model: {text_encoder.source}; source: {source.kind} {args.source}",
            flush=True,
        )
        return precompute(
            source,
            args.out,
            embedder,
            text_encoder,
            args.batch_size,
            shard_size=args.shard_size,
            progress=not args.quiet,
            workers=args.workers,
            engine=engine,
            decode_on_device=None if args.decode == "auto" else args.decode == "device",
        )

    result = run_cli(run)
    if result is None:
        return 2
    print(
        json.dumps(
            {
                "out": str(args.out),
                "count": result["count"],
                "skipped": result["skipped"]["counts"],
                "heads_heldout_accuracy": {h: v["heldout_accuracy"] for h, v in result["heads"].items()},
                "throughput_img_s": result["build"].get("throughput_img_s"),
            }
            | (
                {"update": {k: v for k, v in result["update"].items() if k not in ("ids", "removed_ids")}}
                if "update" in result
                else {}
            ),
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
