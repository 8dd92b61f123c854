"""The living catalog's price and quality: an index updated with products that arrived later, against a
full rebuild of the same final catalog, in one run.

    python scripts/update_study.py --data ../shared/data/fashion-dev --work DIR [--late 1000] [--out FILE.json]
                                   [--real-photos ../shared/data/fashion-dev-hires]

The `--late` products (chosen by a hash of the id) are left out of a base catalog; the base is built, then
updated with the whole catalog (they arrive), and the whole catalog is built from scratch. Then the same
number are removed again by an update of (a copy of) the rebuilt index. Every step is the command a user runs
(`scripts/precompute.py`, with its own process and model loading), timed by its wall clock. Quality, on
the held-out products of the split (nothing was fitted on them): P@10 articleType of catalog photos,
rank-1 of real photos, P@10 of all stated attributes of everyday-words queries, for the updated index
and the rebuilt one.

    python scripts/update_study.py --data ../shared/data/fashion-dev --work DIR --shares 0.05 0.1 0.2 0.4

When a refit pays: for each share of products arriving late, a base index is made from the whole rebuilt
index by an update to the base catalog with --refit (its fitted parts trained on the base products alone,
from the stored descriptors, as a base build fits them), then updated to the whole catalog without a
refit; its quality's gap to the rebuilt index is what a refit (or a full build) wins back. Then the refit
the update says is due (`--update --refit`), and its gap."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from recommender import Recommender
from recommender.cli import add_model_options, run_main
from recommender.errors import UserError
from recommender.evaluation import leave_one_out_precision, real_photo_report
from recommender.runtime import configure_runtime
from recommender.split import heldout_mask
from recommender.text_evaluation import generated_queries, precision_report, rankings

ROOT = Path(__file__).resolve().parents[1]


def late(item_id: str, share: float) -> bool:
    digest = hashlib.sha1(f"late:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < share


def subset(data: Path, folder: Path, keep) -> int:
    """A Kaggle-style catalog at `folder` holding the rows of `data` that `keep(id)` accepts (photos linked)."""
    with open(data / "styles.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    kept = [r for r in rows if keep(r[0])]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "styles.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    for row in kept:
        photo = data / "images" / f"{row[0]}.jpg"
        if photo.is_file() and not (folder / "images" / photo.name).exists():
            (folder / "images" / photo.name).symlink_to(photo.resolve())
    return len(kept)


def timed(args: list[str], model: list[str]) -> float:
    """Seconds of wall clock for one precompute command."""
    return run_precompute(args, model)[0]


def run_precompute(args: list[str], model: list[str]) -> tuple[float, str]:
    """Seconds of wall clock for one precompute command, and what it printed (echoed)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "precompute.py"), *args, *model, "--quiet"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    print(done.stdout, end="", flush=True)
    return round(time.perf_counter() - started, 1), done.stdout


def quality(index: Path, real: Path | None, weights: str | None, text_model: str | None) -> dict:
    rec = Recommender.load(index, weights=weights, text_model=text_model)
    rows = np.flatnonzero(heldout_mask(rec.metadata.ids))
    out = {
        "P@10_articleType": round(
            leave_one_out_precision(
                rec.index.embeddings, rec.metadata, "articleType", 10, rows, rec.space.appearance_dims
            ),
            4,
        )
    }
    if real is not None:
        out["real_photo_rank1"] = real_photo_report(rec, real, rows)["rank1"]
    everyday = generated_queries(rec, rows, 500)
    out["words_P@10_all"] = precision_report(rec, everyday, rankings(rec, everyday)["product"])["P@10_all"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a Kaggle-style catalog folder")
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder for the catalogs and indexes")
    parser.add_argument("--late", type=int, default=1000, help="products that arrive after the base build")
    parser.add_argument("--real-photos", type=Path, help="higher-resolution photos (default: <data>-hires)")
    parser.add_argument(
        "--shares", type=float, nargs="+", help="shares of late products: measure the gap a refit closes at each"
    )
    parser.add_argument("--out", type=Path)
    add_model_options(parser)
    args = parser.parse_args(argv)
    configure_runtime()
    if not (args.data / "styles.csv").is_file():
        raise UserError(f"{args.data} has no styles.csv; pass a Kaggle-style catalog folder.")
    real = args.real_photos or args.data.with_name(args.data.name + "-hires")
    real = real if (real / "images").is_dir() else None
    model = [f"--weights={args.weights}"] if args.weights else []
    model += [f"--text-model={args.text_model}"] if args.text_model else []
    with open(args.data / "styles.csv", newline="") as handle:
        total = sum(1 for _ in handle) - 1
    if args.shares:
        report = refit_curve(args.data, args.work, args.shares, real, model, args.weights, args.text_model)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))
        return 0
    share = args.late / total
    work = args.work
    base_n = subset(args.data, work / "base", lambda i: not late(i, share))
    full_n = subset(args.data, work / "full", lambda i: True)
    print(f"base catalog {base_n} products, full {full_n}: {full_n - base_n} arrive later", flush=True)
    steps = {}
    steps["base build"] = timed(["--source", str(work / "base"), "--out", str(work / "updated")], model)
    steps["update: add"] = timed(["--source", str(work / "full"), "--out", str(work / "updated"), "--update"], model)
    steps["full rebuild"] = timed(["--source", str(work / "full"), "--out", str(work / "rebuilt")], model)
    shutil.copytree(work / "rebuilt", work / "removed")  # the rebuilt index stays for the quality check
    steps["update: remove"] = timed(["--source", str(work / "base"), "--out", str(work / "removed"), "--update"], model)
    report = {
        "products": {"base": base_n, "full": full_n, "late": full_n - base_n},
        "seconds": steps,
        "add_vs_rebuild": round(steps["update: add"] / steps["full rebuild"], 3),
        "remove_vs_rebuild": round(steps["update: remove"] / steps["full rebuild"], 3),
    }
    print(json.dumps(report), flush=True)
    report["quality"] = {
        "updated": quality(work / "updated", real, args.weights, args.text_model),
        "rebuilt": quality(work / "rebuilt", real, args.weights, args.text_model),
    }
    print(json.dumps(report), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


def refit_curve(
    data: Path,
    work: Path,
    shares: list[float],
    real: Path | None,
    model: list[str],
    weights: str | None,
    text_model: str | None,
) -> dict:
    """Per share of late products: the updated index's quality against the rebuilt one's, the seconds of
    the update, and whether the update said a refit is due."""
    full_n = subset(data, work / "full", lambda i: True)
    rebuilt = work / "rebuilt"
    if not (rebuilt / "manifest.json").is_file():
        timed(["--source", str(work / "full"), "--out", str(rebuilt)], model)
    reference = quality(rebuilt, real, weights, text_model)
    report: dict = {"products": full_n, "rebuilt": reference, "shares": {}}
    for share in shares:
        name = f"{share:g}"
        base = work / f"base-{name}"
        base_n = subset(data, base, lambda i: not late(i, share))
        index = work / f"share-{name}"
        for stale in (index, index.with_name(index.name + ".versions"), index.with_name(index.name + ".lock")):
            if stale.is_symlink() or stale.is_file():  # an index published by an earlier run is a link
                stale.unlink()
            elif stale.is_dir():
                shutil.rmtree(stale)
        shutil.copytree(rebuilt, index, symlinks=True)
        print(f"share {name}: base {base_n} products, {full_n - base_n} arrive later", flush=True)
        base_s, _ = run_precompute(["--source", str(base), "--out", str(index), "--update", "--refit"], model)
        add_s, said = run_precompute(["--source", str(work / "full"), "--out", str(index), "--update"], model)
        measured = quality(index, real, weights, text_model)
        # What the update's advice gives: the refit it says is due, from the stored descriptors.
        refit_s, _ = run_precompute(["--source", str(work / "full"), "--out", str(index), "--update", "--refit"], model)
        refitted = quality(index, real, weights, text_model)
        report["shares"][name] = {
            "late": full_n - base_n,
            "base_refit_s": base_s,
            "update_s": add_s,
            "refit_said_due": "A refit is due" in said,
            "updated": measured,
            "gap_points": {k: round(100 * (reference[k] - v), 2) for k, v in measured.items()},
            "refit_s": refit_s,
            "refitted": refitted,
            "refitted_gap_points": {k: round(100 * (reference[k] - v), 2) for k, v in refitted.items()},
        }
        print(json.dumps({name: report["shares"][name]}), flush=True)
    return report


if __name__ == "__main__":
    sys.exit(run_main(main))
