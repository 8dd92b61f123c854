"""A full-size test catalog from a small one: its products repeated under new ids (image links, no copies)
until there are --count of them, so the real precompute can be timed at the full dataset's 44,072 items
where the Hub is unreachable.

    python scripts/repeat_catalog.py --source ../shared/data/fashion-dev --out /tmp/catalog-44k [--count 44072]
    /usr/bin/time python scripts/precompute.py --source /tmp/catalog-44k --out /tmp/index-44k --quiet

Copy k of product i gets id i + k * 1,000,000. Its held-out numbers mean nothing (copies of held-out
products are in the fit part); it is for timing and memory only."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path

from recommender.catalog import FULL_CATALOG, read_styles
from recommender.cli import run_cli
from recommender.errors import UserError, whole_number

ID_STRIDE = 1_000_000


def repeat_catalog(source: Path, out: Path, count: int) -> int:
    """Write `out`/styles.csv and `out`/images/ (links into `source`); returns the number of products."""
    count = whole_number(count, "--count", 1)
    styles = source / "styles.csv"
    if not styles.is_file() or not (source / "images").is_dir():
        raise UserError(
            f"{source} is not a catalog folder (styles.csv + images/); "
            "give the folder of fashion-dev or the Kaggle dataset."
        )
    if out.exists():
        raise UserError(f"{out} exists already; give a new folder.")
    # read_styles: the Kaggle file's names with unquoted commas come back whole (and are quoted on the way out).
    rows = [r for r in read_styles(styles) if (source / "images" / f"{r['id']}.jpg").is_file()]
    if not rows:
        raise UserError(f"{source} has no products with an image; nothing to repeat.")
    # Written beside `out` and renamed when complete: an interrupted run leaves no half catalog at `out`.
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    with (staging / "styles.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for n in range(count):
            row = dict(rows[n % len(rows)])
            original, row["id"] = row["id"], str(int(row["id"]) + (n // len(rows)) * ID_STRIDE)
            os.symlink((source / "images" / f"{original}.jpg").resolve(), staging / "images" / f"{row['id']}.jpg")
            writer.writerow(row)
    os.replace(staging, out)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=FULL_CATALOG)
    args = parser.parse_args(argv)
    written = run_cli(lambda: repeat_catalog(args.source, args.out, args.count))
    if written is None:
        return 2
    print(f"{written} products in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
