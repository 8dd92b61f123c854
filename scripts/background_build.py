"""A lone shopper's query latency while the app builds the whole catalog in the background, for each way
the build can yield, against no build at all, in one run.

    python scripts/background_build.py --index DIR --source SRC --work W [--queries 40] [--gap 0.5]
                                       [--warmup 20] [--weights PATH] [--text-model DIR]

The app's own code serves DIR (Service, as the page's handlers run it: inside QUERIES.query()), and the
app's own background build (serve.grow.Growth: scripts/precompute.py in a child process) builds SRC under
W, one fresh build per policy. Queries are real photos (fashion-dev-hires, or the repository's test
photos), one at a time with `--gap` seconds between them (a shopper, not a load test), measured once the
build is embedding. Policies: none (no build), plain (the build as a user runs it: normal priority, both
cores), nice (lowest priority, one thread), idle (nice and the idle scheduling class), pause (idle, and
stopped while a query runs: the app's). Prints per policy
the p50 / p95 milliseconds, p50's ratio to the no-build baseline (measured first and last; their mean) and
the products the build indexed per minute meanwhile; writes JSON to W/background_build.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from PIL import Image

from recommender import Recommender
from recommender.cli import add_model_options, run_main
from recommender.errors import UserError
from recommender.runtime import configure_runtime, cpu_info
from recommender.serve.activity import QUERIES
from recommender.serve.grow import Growth, Yielding, build_command
from recommender.serve.service import Service

ROOT = Path(__file__).resolve().parents[1]
HIRES = ROOT.parent / "shared" / "data" / "fashion-dev-hires" / "images"
POLICIES = {
    "plain": Yielding(nice=0, idle=False, threads=2, pause=False),
    "nice": Yielding(nice=19, idle=False, threads=1, pause=False),
    "idle": Yielding(nice=19, idle=True, threads=1, pause=False),
    "pause": Yielding(),
}


def photos(n: int) -> list[Image.Image]:
    folder = HIRES if HIRES.is_dir() else ROOT / "tests" / "data" / "hires"
    paths = sorted(folder.glob("*.jpg"))[:n]
    if not paths:
        raise UserError(f"No query photos in {folder}.")
    return [Image.open(p).convert("RGB") for p in paths]


def lone_queries(service: Service, images: list[Image.Image], n: int, gap: float) -> list[float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        with QUERIES.query():
            service.recommend(images[i % len(images)], 12)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(gap)
    return times


def indexed(growth: Growth | None) -> int:
    progress = growth.progress() if growth is not None else None
    return progress.indexed if progress is not None else 0


def measure(name: str, args, service: Service, images: list[Image.Image]) -> dict:
    growth = None
    if name in POLICIES:
        out = args.work / name / "index"
        shutil.rmtree(out.parent, ignore_errors=True)
        command = build_command(
            ROOT / "scripts" / "precompute.py", args.source, out, args.weights, args.text_model, "auto"
        )
        growth = Growth(command, out, POLICIES[name]).start()
        deadline = time.monotonic() + 600
        while indexed(growth) == 0:  # past the child's start and int8 calibration
            if growth.state in ("failed", "done") or time.monotonic() > deadline:
                raise UserError(f"The background build ({name}) did not start embedding: {growth.failure}")
            time.sleep(0.5)
        time.sleep(args.warmup)
    try:
        before, started = indexed(growth), time.monotonic()
        times = lone_queries(service, images, args.queries, args.gap)
        rate = (indexed(growth) - before) / (time.monotonic() - started) * 60
    finally:
        if growth is not None:
            growth.stop()
    row = {
        "policy": name,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(sorted(times)[int(0.95 * (len(times) - 1))], 1),
        "build_products_per_min": round(rate) if growth is not None else None,
        "pauses": growth.pauses if growth is not None else None,
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="the index the app serves meanwhile")
    parser.add_argument("--source", required=True, help="the catalog the background build builds")
    parser.add_argument("--work", type=Path, required=True, help="where the builds go (one per policy)")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between a query's answer and the next")
    parser.add_argument("--warmup", type=float, default=20, help="seconds of build before the queries start")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    add_model_options(parser)
    args = parser.parse_args(argv)
    configure_runtime()

    def run() -> int:
        rec = Recommender.load(args.index, weights=args.weights, text_model=args.text_model)
        service = Service()
        service.set_recommender(rec)
        images = photos(args.queries)
        lone_queries(service, images, 5, 0)  # warm
        rows = [measure("none", args, service, images)]
        rows += [measure(name, args, service, images) for name in args.policies]
        rows.append(measure("none", args, service, images))
        baseline = statistics.mean([rows[0]["p50_ms"], rows[-1]["p50_ms"]])
        for row in rows:
            row["p50_vs_none"] = round(row["p50_ms"] / baseline, 2)
        print(f"{'policy':8} {'p50 ms':>8} {'p95 ms':>8} {'p50/none':>9} {'build/min':>10}")
        for row in rows:
            print(
                f"{row['policy']:8} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['p50_vs_none']:9.2f} "
                f"{row['build_products_per_min'] or 0:10d}"
            )
        args.work.mkdir(parents=True, exist_ok=True)
        report = {"cpu": cpu_info(), "queries": args.queries, "gap_s": args.gap, "rows": rows}
        (args.work / "background_build.json").write_text(json.dumps(report, indent=1))
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
