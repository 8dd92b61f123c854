"""Where the embed stage's time goes: decoding alone, the model alone, and the real pipeline, side by side.

    python scripts/throughput.py --data DIR [--images N] [--workers 1 4 16] [--batch-sizes 32 128]
                                 [--decode cpu device] [--device cuda] [--weights PATH] [--repeats 3]
                                 [--out FILE.json]

"prepare" is everything precompute does to an item before the model (decode, trim, colour histogram,
thumbnail, checksum, the synthetic view of one fit item in three, resize, normalise) in N decode
processes, the inputs' trip back included — with `--decode device`, the catalog's JPEGs are decoded and
preprocessed on the model's device instead, in the main process (what a GPU build does); "model" is the
forward pass with pooling and the copy back, on inputs already prepared; "pipeline" is `embed_catalog`,
both overlapped, writing shards. Whichever of the first two is slower bounds the third. Medians over
repeats, items per second (catalog items; the pipeline also reports forward passes/s, which count the
views)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recommender.build.decode import decode_pool, device_preprocessor, prepare_item, prepared_batches
from recommender.build.runner import calibrate_int8, embed_catalog
from recommender.catalog import CatalogItem, CatalogSource
from recommender.cli import add_model_options, run_main
from recommender.embedder import Embedder
from recommender.model_paths import INT8_PATHS
from recommender.text_model import TextEncoder


def prepare_rate(items: list[CatalogItem], embedder: Embedder, workers: int, batch_size: int, on_device: bool) -> float:
    """Items/s of the decode processes alone (pool start included, as in a build), and of the device's
    decoder after them where `on_device`."""
    t0 = time.perf_counter()
    pool = decode_pool(embedder, workers, on_device)
    preprocess = device_preprocessor(embedder) if on_device else None
    try:
        for batch in prepared_batches(items, batch_size, pool, workers):
            if preprocess is not None:
                preprocess([p.item.data for p in batch if p.on_device])
        if embedder.device.type == "cuda":
            torch.cuda.synchronize()
    finally:
        pool.shutdown()
    return len(items) / (time.perf_counter() - t0)


def model_rate(items: list[CatalogItem], embedder: Embedder, batch_size: int, seconds: float = 2.0) -> float:
    batch = np.stack(
        [
            prepare_item(item, embedder.preprocessor).input[0]
            for item in itertools.islice(itertools.cycle(items), batch_size)
        ]
    )
    embedder.forward(batch)  # traces the backbone / picks the kernels for this shape
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        embedder.forward(batch)  # ends with a copy to host memory, so the GPU work is finished too
        done += batch_size
    return done / (time.perf_counter() - t0)


def pipeline_rate(
    data: Path,
    images: int,
    embedder: Embedder,
    text_encoder: TextEncoder,
    batch_size: int,
    workers: int,
    on_device: bool,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        timings = embed_catalog(
            CatalogSource(str(data), images),
            Path(tmp),
            embedder,
            text_encoder,
            batch_size,
            progress=False,
            workers=workers,
            decode_on_device=on_device,
        )
    wall = timings["wall_s"]
    return {
        "items_s": timings["images"] / wall,
        "forward_s": (timings["images"] + timings["views"]) / wall,
        "model_share": timings["model_s"] / wall,
        "text_model_share": timings["text_s"] / wall,
    }


def median_of(runs: list, key: str | None = None) -> float:
    return round(statistics.median(r[key] if key else r for r in runs), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="Kaggle-style catalog folder (styles.csv + images/)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument(
        "--decode",
        nargs="+",
        choices=["cpu", "device"],
        help="where the catalog's JPEGs are decoded: CPU processes, or the model's device (default: both on "
        "a GPU, cpu elsewhere)",
    )
    parser.add_argument("--device", help="cpu or cuda; default cuda when there is one")
    add_model_options(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    embedder = Embedder(args.weights, device=args.device)
    if embedder.build_precision in INT8_PATHS:  # as a build does, before its first batch
        calibrate_int8(CatalogSource(str(args.data), args.images), embedder)
    text_encoder = TextEncoder(args.text_model, device=embedder.device)
    items = [i for i in CatalogSource(str(args.data), args.images) if i.data]
    report = {
        "device": torch.cuda.get_device_name() if embedder.device.type == "cuda" else platform.processor() or "cpu",
        "cpu_cores": os.cpu_count(),
        "precision": embedder.precision,
        "items": len(items),
        "torch": torch.__version__,
        "prepare": {},
        "model": {},
        "pipeline": {},
    }
    decodes = args.decode or (["cpu", "device"] if embedder.device.type == "cuda" else ["cpu"])
    for decode, workers in itertools.product(decodes, args.workers):
        runs = [
            prepare_rate(items, embedder, workers, max(args.batch_sizes), decode == "device")
            for _ in range(args.repeats)
        ]
        name = f"decode={decode} workers={workers}"
        report["prepare"][name] = median_of(runs)
        print(f"prepare   {name:<30s} {report['prepare'][name]:8.1f} items/s", flush=True)
    for batch_size in args.batch_sizes:
        report["model"][batch_size] = median_of([model_rate(items, embedder, batch_size) for _ in range(args.repeats)])
        print(f"model              batch={batch_size:<5d} {report['model'][batch_size]:8.1f} img/s", flush=True)
    for decode, workers, batch_size in itertools.product(decodes, args.workers, args.batch_sizes):
        runs = [
            pipeline_rate(args.data, args.images, embedder, text_encoder, batch_size, workers, decode == "device")
            for _ in range(args.repeats)
        ]
        result = {
            k: median_of(runs, k) if not k.endswith("share") else round(statistics.median(r[k] for r in runs), 2)
            for k in runs[0]
        }
        name = f"decode={decode} workers={workers} batch={batch_size}"
        report["pipeline"][name] = result
        print(
            f"pipeline  {name:<40s} {result['items_s']:8.1f} items/s "
            f"{result['forward_s']:8.1f} passes/s  model busy {result['model_share']:.0%}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
