"""Measure a built index on real data, on the held-out part of the split by product id.

    python scripts/evaluate.py --index DIR --data ../shared/data/fashion-dev --out reports/eval [--weights PATH]
                               [--text-model DIR]
                               [--real-photos ../shared/data/fashion-dev-hires] [--ablations ABLATE.json]

Writes report.json, report.md and PNG plots to --out; with --ablations (the output of scripts/ablate.py)
also the effect of each setting, as a plot and tables. Real photos: the same products photographed at a
higher resolution (`DIR/images/<id>.jpg`), by default the folder `<data>-hires` beside --data if there
is one. Two products on one photo, searched whole and cropped to one of them (the `crop` section). Search
by words: queries in shoppers' everyday words and 55 written by hand, beside BM25, and photo + words (the
`text` section)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from recommender import Recommender, artifacts
from recommender.cli import add_model_options, run_cli
from recommender.embedding_map import neighbours_kept
from recommender.errors import UserError
from recommender.evaluation import (
    WORST,
    classification_report,
    crop_report,
    feedback_lift,
    filtered_recall,
    real_photo_report,
    retrieval_report,
    shopper_photo_robustness,
)
from recommender.runtime import configure_runtime
from recommender.serve.ranking import rocchio
from recommender.split import heldout_mask
from recommender.text_evaluation import text_report

FIELDS = ("articleType", "subCategory", "gender", "masterCategory", "baseColour")


def plots(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_type = report["retrieval"]["per_articleType_P@10"]
    names = sorted(per_type, key=per_type.get)
    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(names))))
    ax.barh(names, [per_type[n] for n in names], color="#f97316")
    ax.set_xlabel("P@10 (same article type), held-out queries")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(out / "per_article_type_p10.png", dpi=110)
    plt.close(fig)

    head = report["heads"]["articleType"]
    confusion = np.array(head["confusion"], np.float64)
    confusion /= np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(11, 10))
    ax.imshow(confusion, cmap="Oranges", vmin=0, vmax=1)
    ax.set_xticks(range(len(head["classes"])), head["classes"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(head["classes"])), head["classes"], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"articleType head, held-out accuracy {head['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion_article_type.png", dpi=110)
    plt.close(fig)

    if report.get("ablations"):  # one panel per part of scripts/ablate.py, bars per metric
        parts = report["ablations"]
        fig, axes = plt.subplots(len(parts), 1, figsize=(10, 2 + 0.5 * sum(len(v) for v in parts.values())))
        for ax, (part, settings) in zip(np.atleast_1d(axes), parts.items()):
            names, metrics = list(settings), list(next(iter(settings.values())))
            for j, metric in enumerate(metrics):
                ax.barh(
                    np.arange(len(names)) + j / (len(metrics) + 1),
                    [settings[n][metric] for n in names],
                    height=1 / (len(metrics) + 1),
                    label=metric,
                )
            ax.set_yticks(np.arange(len(names)) + 0.3, [n[:70] for n in names], fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0.3, 1)
            ax.set_title(f"{part} (held-out)", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "settings_effect.png", dpi=110)
        plt.close(fig)


def markdown(report: dict) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Index: `{report['index']}` ({report['catalog_items']} items); "
        f"{report['heldout_queries']} held-out queries (split by product id).",
        "",
        "| field | P@1 | P@5 | P@10 | mAP@10 |",
        "|---|---|---|---|---|",
    ]
    for field in FIELDS:
        r = report["retrieval"][field]
        lines.append(f"| {field} | {r['P@1']:.3f} | {r['P@5']:.3f} | {r['P@10']:.3f} | {r['mAP@10']:.3f} |")
    lines += [
        "",
        f"Shopper photos: rank-1 {report['shopper_photo']['rank1']:.3f}, top-10 {report['shopper_photo']['top10']:.3f} "
        f"({report['shopper_photo']['queries']} queries).",
        "",
    ]
    if "real_photo" in report:
        r = report["real_photo"]
        lines += [
            f"Real photos: rank-1 {r['rank1']:.3f}, top-10 {r['top10']:.3f} ({r['queries']} queries); P@10 "
            + ", ".join(f"{f} {v:.3f}" for f, v in r["P@10"].items())
            + "; heads "
            + ", ".join(f"{h} {v['accuracy']:.3f} (ECE {v['ece']:.3f})" for h, v in r["heads"].items())
            + ".",
            "",
        ]
    c = report["crop"]
    lines += [
        f"Two products on one photo ({c['queries']} queries): the target first for the whole photo "
        f"{c['whole_rank1']:.3f}, for the photo cropped to it {c['cropped_rank1']:.3f}.",
        "",
        f"HNSW recall@10 vs exact: {report['hnsw_recall@10']:.4f}",
        "",
        "| filter | recall@10 |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.4f} |" for name, value in report["filtered_recall@10"].items()]
    lines += ["", "| head | accuracy | macro-F1 | ECE (without its temperature) |", "|---|---|---|---|"]
    lines += [
        f"| {h} | {v['accuracy']:.3f} | {v['macro_f1']:.3f} | {v['ece']:.3f} ({v['ece_uncalibrated']:.3f}) |"
        for h, v in report["heads"].items()
    ]
    a = report["heads"]["articleType"]
    lines += [
        "",
        f"Article type: the {WORST} least accurate types' mean accuracy {a[f'worst{WORST}_mean']:.3f}; women's "
        f"products {a.get('accuracy_women', float('nan')):.3f}, men's {a.get('accuracy_men', float('nan')):.3f}.",
    ]
    t = report["text"]
    lines += ["", "| words: queries | method | P@10 all stated | per attribute |", "|---|---|---|---|"]
    for name in ("everyday", "handwritten"):
        for method, r in t[name].items():
            if method == "P@10_all_ceiling":
                lines.append(f"| {name} | best any ranking can do | {r:.3f} | |")
                continue
            per = ", ".join(f"{k[5:]} {v:.3f}" for k, v in r.items() if k.startswith("P@10_") and k != "P@10_all")
            lines.append(f"| {name} ({r['queries']}) | {method} | {r['P@10_all']:.3f} | {per} |")
    p = t["photo_plus_words"]
    lines += [
        "",
        f"Photo + words: P@10 of same type with the asked colour/gender {p['P@10']:.3f} "
        f"(colour: {p['colour']['words']:.3f} vs photo alone {p['colour']['photo_only']:.3f}; "
        f"gender: {p['gender']['words']:.3f} vs photo alone {p['gender']['photo_only']:.3f}).",
    ]
    m = report["map"]
    lines += [
        "",
        f"Embedding map ({m['method']}): neighbours_kept@10 {m['neighbours_kept@10']:.3f} — the share of an item's "
        f"10 nearest on the map among its 50 nearest in the search space ({m['queries']} held-out items).",
    ]
    f = report["personalisation"]
    lines += [
        "",
        f"Feedback (Rocchio, {f['rounds']} rounds): P@10 of same type and colour "
        f"{f['P@10_type_and_colour_before']:.3f} → {f['P@10_type_and_colour_after']:.3f}.",
    ]
    for part, settings in report.get("ablations", {}).items():
        metrics = list(next(iter(settings.values())))
        lines += ["", f"| {part} setting | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{v[m]:.4f}" for m in metrics) + " |" for name, v in settings.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-style folder the index was built from")
    parser.add_argument("--out", type=Path, required=True)
    add_model_options(parser)
    parser.add_argument("--shopper-photos", type=int, default=500)
    parser.add_argument("--real-photos", type=Path, help="folder of higher-resolution photos (images/<id>.jpg)")
    parser.add_argument(
        "--ablations", type=Path, metavar="ABLATE.json", help="scripts/ablate.py's output, to plot and tabulate"
    )
    args = parser.parse_args(argv)

    configure_runtime()

    def run() -> dict:
        try:  # checked first: the plots come after minutes of work
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError(
                "scripts/evaluate.py draws its plots with matplotlib, which is not installed; "
                "run `pip install -r requirements-dev.txt` first."
            ) from None
        if not (args.data / "images").is_dir():
            raise UserError(
                f"{args.data} has no images/ folder; pass the Kaggle-style folder the index was built from."
            )
        real_photos = args.real_photos or args.data.with_name(args.data.name + "-hires")
        if args.real_photos and not (real_photos / "images").is_dir():
            raise UserError(f"{real_photos} has no images/ folder; pass a folder of photos named images/<id>.jpg.")
        if args.ablations and not args.ablations.is_file():
            raise UserError(f"{args.ablations} does not exist; run scripts/ablate.py --out {args.ablations} first.")
        started = time.perf_counter()
        rec = Recommender.load(args.index, weights=args.weights, text_model=args.text_model)
        rows = np.flatnonzero(heldout_mask(rec.metadata.ids))
        embeddings = np.asarray(rec.index.embeddings)  # the search space
        features = np.load(args.index / artifacts.FEATURES, mmap_mode="r")  # descriptors, what heads read
        report = {"index": str(args.index), "catalog_items": len(rec.metadata), "heldout_queries": int(len(rows))}
        print("retrieval …", flush=True)
        # Ordered as the app orders results: the closest in appearance first (ranking.promote_closest).
        report["retrieval"] = retrieval_report(
            embeddings, rec.metadata, rows, FIELDS, appearance_dims=rec.space.appearance_dims
        )
        report["shopper_photo"] = shopper_photo_robustness(rec, args.data, rows, args.shopper_photos)
        if (real_photos / "images").is_dir():
            report["real_photo"] = real_photo_report(rec, real_photos, rows)
        report["crop"] = crop_report(rec, real_photos if (real_photos / "images").is_dir() else args.data, rows)
        print("filtered recall …", flush=True)
        recall = filtered_recall(rec, rows)
        report["hnsw_recall@10"] = recall.pop("none")
        report["filtered_recall@10"] = recall
        columns = {c: rec.metadata.columns[c][rows] for c in rec.metadata.columns}
        report["heads"] = classification_report(rec.heads, features[rows], columns)
        cnn = np.asarray(features[:, : rec.embedder.feature_dim])  # the GeM ResNet50 part, no colour, no projection
        report["retrieval_raw_features"] = {
            f: v for f, v in retrieval_report(cnn, rec.metadata, rows, FIELDS, (10,)).items() if f in FIELDS
        }
        print("search by words …", flush=True)
        report["text"] = text_report(rec, rows, real_photos if (real_photos / "images").is_dir() else None)
        print("embedding map …", flush=True)
        report["map"] = {
            "method": rec.manifest["map"]["method"],
            "neighbours_kept@10": round(neighbours_kept(rec.positions, embeddings, rows[:1000]), 4),
            "queries": int(min(len(rows), 1000)),
        }
        print("feedback simulation …", flush=True)
        report["personalisation"] = feedback_lift(embeddings, rec.metadata, rows, rocchio)
        if args.ablations:
            report["ablations"] = json.loads(args.ablations.read_text())
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
        (args.out / "report.md").write_text(markdown(report))
        plots(report, args.out)
        return report

    report = run_cli(run)
    if report is None:
        return 2
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
