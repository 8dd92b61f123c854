"""Speed and memory, side by side in one run (medians over repeats; this machine is noisy).

    python scripts/benchmark.py --index DIR --data ../shared/data/fashion-dev --out bench.json [--weights PATH]
                                [--text-model DIR] [--paths] [--path-rows 400] [--paths-only]
                                [--scale [1000000]] [--fit-sizes 44072,200000] [--scale-only]

By default it answers in minutes what a user asks first: search and words latency, the embed stage
against a naive loop, and the model's default path against fp32. --paths measures every path this CPU
runs; --scale adds the long studies (words at 44k, a synthetic 44k index, the fitting stages at
--fit-sizes, an HNSW of N vectors: about half an hour on 2 cores).

Measures: precompute throughput of the real pipeline vs a naive per-image fp32 loop on the same images; query
latency of Recommender.search, of HNSW alone and of exact brute force; index build time and app peak RSS for
the real catalog and for a synthetic full-size (44k) catalog in the index's dimension; `scale`: the build's
fitting stages (heads, search space and projection, map, index) on synthetic catalog-like shards of each
--fit-sizes size, with their peak RSS, and an HNSW index of --scale catalog-like vectors (build time and RSS,
index size, app RSS, query p50, recall@10 against exact search; benchmark_scale.py); search on phone-sized
JPEGs decoded whole and decoded smaller; from the 44k fitting and the embed stage, the whole 44k precompute
time; search by words (Recommender.search_text p50, the exact scan against an HNSW walk at 44k) and the text
model's share of the 44k precompute. The model's paths (fp32 always, bf16 and int8 where this CPU runs them),
each in one run: model-only images/s, the embed stage of a build of the first --path-rows rows, search p50,
and quality on that build's held-out products (P@10 articleType, shopper-photo rank-1); with the CPU's model
and flags. An AVX2-only CPU can be emulated on a newer one by capping the kernels' instruction sets:
ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 (reported in `cpu`)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recommender.catalog import FULL_CATALOG
from recommender.cli import add_model_options, model_options, run_main
from recommender.evaluation import phone_photo
from recommender.runtime import configure_runtime, cpu_info


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def throughput_runs(
    kind: str, data: Path, weights: str | None, text_model: str | None, images: int, repeats: int
) -> list[float]:
    """Images/s of one loop, `repeats` times. kind "pipeline": the real embed stage (catalog items/s,
    forward passes/s counting the synthetic views, and the share of its time the text model took);
    "naive": one image at a time, fp32 eager."""
    import torch

    from recommender.build import embed_catalog
    from recommender.build.runner import calibrate_int8
    from recommender.catalog import CatalogSource
    from recommender.embedder import Embedder
    from recommender.images import load_image
    from recommender.model_paths import INT8_PATHS
    from recommender.text_model import TextEncoder

    items = [i for i in CatalogSource(str(data), images) if i.data]
    runs = []
    if kind == "pipeline":
        embedder, text_encoder = Embedder(weights), TextEncoder(text_model)
        if embedder.build_precision in INT8_PATHS:  # as a build does, before its first batch
            calibrate_int8(CatalogSource(str(data), images), embedder)
        embedder.embed([load_image(items[0].data)])  # makes the backbone (once per process, seconds)
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                timings = embed_catalog(
                    CatalogSource(str(data), images), Path(tmp), embedder, text_encoder, progress=False
                )
                seconds = time.perf_counter() - t0
            runs.append(
                [len(items) / seconds, (timings["images"] + timings["views"]) / seconds, timings["text_s"] / seconds]
            )
        return runs
    naive = Embedder(weights, precision="fp32")
    naive.model = naive.model.to(memory_format=torch.contiguous_format)
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for item in items:  # one image at a time, fp32 eager, no batching, decode inline, no views
                pixels, _ = naive.preprocess(load_image(item.data))
                naive.model(naive.normalise(pixels[None]).contiguous())
        runs.append([len(items) / (time.perf_counter() - t0)])
    return runs


def precompute_throughput(args: argparse.Namespace) -> dict:
    """Each loop in a child process with its best OpenMP setting: precompute.py's OMP_WAIT_POLICY=PASSIVE
    for the pipeline (decode thread beside the model), the default for the naive loop (PASSIVE made it
    13 img/s instead of 20: sleeping threads wake for every single image)."""
    out = {}
    for kind, policy in (("pipeline", "PASSIVE"), ("naive", None)):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--throughput-only",
                kind,
                "--index",
                str(args.index),
                "--data",
                str(args.data),
                "--out",
                str(args.out),
                "--images",
                str(args.images),
                "--repeats",
                str(args.repeats),
            ]
            + model_options(args),
            env=env,
            capture_output=True,
            text=True,
        )
        if child.returncode:
            raise RuntimeError(f"the {kind} throughput run failed:\n{child.stderr[-2000:]}")
        out[kind] = json.loads(child.stdout.strip().splitlines()[-1])
    pipeline = statistics.median(r[0] for r in out["pipeline"])
    forward = statistics.median(r[1] for r in out["pipeline"])
    naive = statistics.median(r[0] for r in out["naive"])
    text_share = statistics.median(r[2] for r in out["pipeline"])
    # pipeline_img_s counts catalog items; the pipeline also embeds a synthetic view of ~1 fit item in 4
    # (training data for the projection), which forward_img_s counts too.
    return {
        "images": args.images,
        "repeats": args.repeats,
        "pipeline_img_s": round(pipeline, 1),
        "forward_img_s": round(forward, 1),
        "naive_img_s": round(naive, 1),
        "speedup": round(pipeline / naive, 2),
        "forward_speedup": round(forward / naive, 2),
        "text_model_share": round(text_share, 4),  # of the embed stage's wall time (catalog texts, per shard)
        "pipeline_runs": [[round(v, 1) for v in r] for r in out["pipeline"]],
        "naive_runs": [round(r[0], 1) for r in out["naive"]],
    }


def phone_photo_latency(rec, photos: list, summary) -> dict:
    """Recommender.search on 3000x4000 JPEGs: decoded whole, against the loader's default (no larger than
    the preprocessing uses), the same photos alternately; and the two query vectors' cosine."""
    from recommender.images import load_image

    jpegs = [phone_photo(photo, 4000, seed) for seed, photo in enumerate(photos)]
    whole_ms, default_ms, cosine = [], [], []
    for jpeg in jpegs:
        t0 = time.perf_counter()
        rec.search(load_image(jpeg, max_side=None), 12)
        whole_ms.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        rec.search(jpeg, 12)
        default_ms.append(1e3 * (time.perf_counter() - t0))
        a, b = rec.query(load_image(jpeg, max_side=None)).vector, rec.query(jpeg).vector
        cosine.append(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))))
    return {
        "phone_photo_ms": {"decoded_whole": summary(whole_ms), "decoded_smaller": summary(default_ms)},
        "phone_photo_cosine": {"mean": round(float(np.mean(cosine)), 4), "min": round(float(np.min(cosine)), 4)},
    }


def query_latency(index: Path, data: Path, weights: str | None, text_model: str | None, queries: int) -> dict:
    from recommender import Recommender
    from recommender.images import load_image

    rec = Recommender.load(index, weights=weights, text_model=text_model)
    ids = rec.metadata.ids[:: max(1, len(rec.metadata) // queries)][:queries]
    photos = [load_image(data / "images" / f"{i}.jpg") for i in ids]
    rec.search(photos[0], 12)  # warm-up
    search_ms, hnsw_ms, exact_ms = [], [], []
    for photo, item_id in zip(photos, ids):
        t0 = time.perf_counter()
        rec.search(photo, 12)
        search_ms.append(1e3 * (time.perf_counter() - t0))
        q = rec.vector_of(item_id)
        t0 = time.perf_counter()
        rec.index.search(q, 12)
        hnsw_ms.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        rec.index.exact(q, 12)
        exact_ms.append(1e3 * (time.perf_counter() - t0))

    def summary(values: list[float]) -> dict:
        return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3)}

    return (
        {
            "queries": len(ids),
            "catalog": len(rec.metadata),
            "search_ms": summary(search_ms),
            "hnsw_ms": summary(hnsw_ms),
            "exact_ms": summary(exact_ms),
        }
        | phone_photo_latency(rec, photos[:20], summary)
        | text_latency(rec, summary)
        | insights_latency(rec, summary)
    )


def insights_latency(rec, summary) -> dict:
    """The Explore tab's update (every chart's counts) on a catalog-like 44k metadata: the index's rows
    drawn at random, unfiltered and with one and two filters."""
    from recommender.metadata import Metadata
    from recommender.vocabulary import INSIGHT_COLUMNS

    rows = np.random.default_rng(0).integers(0, len(rec.metadata), FULL_CATALOG)
    metadata = Metadata(
        np.arange(FULL_CATALOG), {c: v[rows] for c, v in rec.metadata.columns.items()}, [""] * FULL_CATALOG
    )
    metadata.counts("gender")  # the integer codes are made once, when the app first charts a column
    times = []
    for where in [None, {"gender": "Men"}, {"gender": "Women", "masterCategory": "Footwear"}] * 10:
        t0 = time.perf_counter()
        for column in INSIGHT_COLUMNS:
            metadata.counts(column, where)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"insights_44k_ms": summary(times)}


def text_latency(rec, summary) -> dict:
    """Search by words: the whole call and the text model alone."""
    from recommender.text_evaluation import HANDWRITTEN

    texts = [q.text for q in HANDWRITTEN] * 4
    rec.search_text(texts[0], 12)  # warm-up
    whole, encode = [], []
    for text in texts:
        t0 = time.perf_counter()
        rec.search_text(text, 12)
        whole.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        rec.text_encoder.encode_one(text)
        encode.append(1e3 * (time.perf_counter() - t0))
    return {"text_search_ms": summary(whole), "text_encode_ms": summary(encode)}


def text_study(rec, summary) -> dict:
    """--scale: the exact scan of words against an HNSW walk over a synthetic full-size catalog of text
    vectors, and the text model's rate on catalog texts (fp32 as shipped against bf16 autocast)."""
    import hnswlib

    from recommender.serve.text_index import TextIndex
    from recommender.text_evaluation import HANDWRITTEN
    from recommender.words import catalog_text

    texts = [q.text for q in HANDWRITTEN] * 4
    # 44k text vectors: the real ones repeated with noise (the scan's cost depends only on the size).
    rng = np.random.default_rng(0)
    real = np.asarray(rec.text_index.vectors, np.float32)
    big = real[rng.integers(0, len(real), FULL_CATALOG)] + rng.normal(0, 0.02, (FULL_CATALOG, real.shape[1]))
    big = (big / np.linalg.norm(big, axis=1, keepdims=True)).astype(np.float32)
    columns = {c: rec.metadata.columns[c][rng.integers(0, len(real), FULL_CATALOG)] for c in rec.metadata.columns}
    from recommender.metadata import Metadata

    index44k = TextIndex(big, Metadata(np.arange(FULL_CATALOG), columns, [""] * FULL_CATALOG))
    graph = hnswlib.Index(space="ip", dim=big.shape[1])
    graph.init_index(max_elements=FULL_CATALOG, M=32, ef_construction=200, random_seed=100)
    graph.add_items(big, np.arange(FULL_CATALOG), num_threads=1)
    graph.set_ef(64)
    scan, walk = [], []
    queries = rec.text_encoder.encode(texts)
    for text, vector in zip(texts, queries):
        understood = index44k.vocabulary.understand(text)
        t0 = time.perf_counter()
        index44k.search(vector, understood, 12)
        scan.append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        graph.knn_query(vector, k=12)
        walk.append(1e3 * (time.perf_counter() - t0))
    import torch

    catalog_texts = [catalog_text(rec.metadata.attributes(r)) for r in range(min(2048, len(rec.metadata)))]
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(2):  # alternating: the shipped fp32 against bf16 autocast, the same texts
        for name in rates:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                t0 = time.perf_counter()
                rec.text_encoder.encode(catalog_texts)
                rates[name].append(len(catalog_texts) / (time.perf_counter() - t0))
    rate = statistics.median(rates["fp32"])
    return {
        "text_model_catalog_texts_s_bf16": round(statistics.median(rates["bf16"]), 1),
        "text_scan_44k_ms": summary(scan),
        "text_hnsw_44k_ms": summary(walk),
        "text_model_catalog_texts_s": round(rate, 1),
    }


RSS_PROBE = r"""
import json, sys
import numpy as np
import gradio  # noqa: F401  (the app process has it loaded)
from recommender.embedder import Embedder
from recommender.serve.index import VectorIndex
from recommender.text_model import TextEncoder
embedder = Embedder(sys.argv[3] or None)
embedder.follow(json.load(open(sys.argv[6]))["model"], sys.argv[6])  # the real index's path, as the app does
from recommender.runtime import release_freed_memory
embedder.warm_up()  # and then the rest, in Recommender.load's order
release_freed_memory()
from PIL import Image
index = VectorIndex.load(sys.argv[1], sys.argv[2])
text_encoder = TextEncoder(sys.argv[4] or None)
text_vectors = np.load(sys.argv[5], mmap_mode="r")
rng = np.random.default_rng(0)
for i in range(20):
    embedder.embed_one(Image.new("RGB", (60, 80), (i * 10, 80, 120)))  # the model's working memory
    q = rng.normal(size=index.embeddings.shape[1]).astype(np.float32)
    q /= np.linalg.norm(q)
    index.search(q, 12)
    index.search(q, 12, np.arange(len(index)) % 7 == 0)
    np.asarray(text_vectors) @ text_encoder.encode_one(f"navy polo for men {i}")  # a search by words
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would report the parent's peak.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"rss_mb": round(int(hwm) / 1024, 1)}))
"""


def app_rss(
    embeddings: Path, hnsw: Path, weights: str | None, text_model: str | None, texts: Path, manifest: Path
) -> float:
    command = [sys.executable, "-c", RSS_PROBE, str(embeddings), str(hnsw), weights or "", text_model or ""]
    result = subprocess.run(
        command + [str(texts), str(manifest)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["rss_mb"]


def index_scale(index: Path, weights: str | None, text_model: str | None) -> dict:
    """Build time and app peak RSS (both models, the index and the text vectors) for the real catalog
    and a synthetic full-size one."""
    from recommender import artifacts
    from recommender.hnsw import build_hnsw

    real = np.load(index / artifacts.EMBEDDINGS)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        synthetic = rng.normal(size=(FULL_CATALOG, real.shape[1])).astype(np.float32)
        synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
        texts = {"real": index / artifacts.TEXT_VECTORS, "synthetic_44k": Path(tmp) / "texts_44k.npy"}
        text_vectors = rng.normal(size=(FULL_CATALOG, 384)).astype(np.float32)
        np.save(texts["synthetic_44k"], text_vectors / np.linalg.norm(text_vectors, axis=1, keepdims=True))
        for name, vectors in (("real", real), ("synthetic_44k", synthetic)):
            t0 = time.perf_counter()
            hnsw = build_hnsw(vectors)
            build_s = time.perf_counter() - t0
            np.save(Path(tmp) / f"{name}.npy", vectors)
            hnsw.save_index(str(Path(tmp) / f"{name}.hnsw"))
            del hnsw
            out[name] = {
                "items": len(vectors),
                "build_s": round(build_s, 2),
                "rss_mb": app_rss(
                    Path(tmp) / f"{name}.npy",
                    Path(tmp) / f"{name}.hnsw",
                    weights,
                    text_model,
                    texts[name],
                    index / artifacts.MANIFEST,
                ),
            }
    return out


def scale(args: argparse.Namespace) -> dict:
    """`fit` and `fit_peak_rss_mb`: the fitting stages at each of --fit-sizes synthetic items;
    `hnsw_1m`: the HNSW simulation at --scale vectors."""
    from benchmark_scale import fit_scale, hnsw_simulation

    sizes = [int(n) for n in args.fit_sizes.split(",") if n]
    fit = fit_scale(args.index, sizes)
    out = {"fit": fit, "fit_peak_rss_mb": {name: f["peak_rss_mb"] for name, f in fit.items()}}
    if args.scale:
        manifest = args.index / "manifest.json"

        def rss(vectors: Path, graph: Path, texts: Path) -> float:
            return app_rss(vectors, graph, args.weights, args.text_model, texts, manifest)

        out["hnsw_1m"] = hnsw_simulation(args.index, args.scale, rss)
    return out


def available_paths() -> list[str]:
    import torch

    from recommender.model_paths import int8_supported, ort_int8_supported
    from recommender.runtime import bf16_supported

    cpu = torch.device("cpu")
    # With the kernels capped below AVX-512, bf16 would run emulated: that machine has no bf16 path.
    bf16 = bf16_supported(cpu) and not os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper().startswith(("AVX2", "SSE"))
    int8 = (["int8"] if int8_supported(cpu) else []) + (["ort-int8"] if ort_int8_supported(cpu) else [])
    return ["fp32"] + (["bf16"] if bf16 else []) + int8


def path_child(args: argparse.Namespace, stage: str, name: str, folder: Path) -> dict:
    """One stage of one path in a child process: "build" with a build's OpenMP setting, "measure" with the
    app's (a build's sleeping threads double a query's latency)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if stage == "build":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    command = [sys.executable, __file__, "--path-stage", stage, name, str(folder), "--index", str(args.index)]
    command += ["--data", str(args.data), "--out", str(args.out), "--path-rows", str(args.path_rows)]
    command += model_options(args)
    child = subprocess.run(command, env=env, capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"the {name} path's {stage} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def path_stage(args: argparse.Namespace, stage: str, name: str, folder: Path) -> dict:
    """build: the first --path-rows rows of --data with this path (the embed stage's items/s). measure:
    model-only images/s (batches of 16, 224x168), Recommender.search p50 over 100 catalog photos, P@10
    articleType of the held-out products and the rank-1 of 200 shopper photos of them."""
    from recommender import Recommender
    from recommender.build import precompute
    from recommender.catalog import CatalogSource
    from recommender.embedder import Embedder
    from recommender.evaluation import leave_one_out_precision, shopper_photo_robustness
    from recommender.images import load_image
    from recommender.split import heldout_mask
    from recommender.text_model import TextEncoder

    if stage == "build":
        embedder = Embedder(args.weights, precision=name)
        manifest = precompute(
            CatalogSource(str(args.data), args.path_rows),
            folder,
            embedder,
            TextEncoder(args.text_model),
            progress=False,
        )
        return {"embed_items_s": manifest["build"]["throughput_img_s"]}
    rec = Recommender.load(folder, weights=args.weights, text_model=args.text_model, precision=name)
    ids = rec.metadata.ids
    photos = [load_image(args.data / "images" / f"{i}.jpg") for i in ids[:: max(1, len(ids) // 100)][:100]]
    pixels = np.stack([rec.embedder.model_input(p) for p in photos[:64]])
    rec.embedder.forward(pixels[:16])  # makes the backbone
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for start in range(0, len(pixels), 16):
            rec.embedder.forward(pixels[start : start + 16])
        rates.append(len(pixels) / (time.perf_counter() - t0))
    search_ms = []
    for photo in photos:
        t0 = time.perf_counter()
        rec.search(photo, 12)
        search_ms.append(1e3 * (time.perf_counter() - t0))
    rows = np.flatnonzero(heldout_mask(ids))
    embeddings, dims = rec.index.embeddings, rec.space.appearance_dims
    return {
        "model_img_s": round(statistics.median(rates), 1),
        "search_ms_p50": round(percentile(search_ms, 50), 1),
        "p10_articleType": round(leave_one_out_precision(embeddings, rec.metadata, "articleType", 10, rows, dims), 4),
        "shopper_rank1": shopper_photo_robustness(rec, args.data, rows, 200)["rank1"],
        "heldout_queries": int(len(rows)),
    }


def model_paths(args: argparse.Namespace) -> dict:
    """The path `auto` picks against fp32 (--paths: every path this CPU runs), side by side in one run."""
    import torch

    from recommender.model_paths import choose_precision

    default = choose_precision(torch.device("cpu"))
    names = available_paths() if args.paths or args.paths_only else list(dict.fromkeys([default, "fp32"]))
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            folder = Path(tmp) / name
            paths[name] = path_child(args, "build", name, folder) | path_child(args, "measure", name, folder)
            print(json.dumps({name: paths[name]}), flush=True)
    return {"cpu": cpu_info(), "default_path": default, "paths": paths}


def scale_studies(args: argparse.Namespace, precompute: dict) -> dict:
    """--scale: a synthetic 44k index and its app RSS, the fitting stages, the HNSW simulation, and from
    them the whole 44k precompute's time and the text model's share of it."""
    from recommender import Recommender

    def summary(values: list[float]) -> dict:
        return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3)}

    rec = Recommender.load(args.index, weights=args.weights, text_model=args.text_model)
    out: dict = text_study(rec, summary)
    del rec
    out["index"] = index_scale(args.index, args.weights, args.text_model)
    out["rss_mb"] = out["index"]["synthetic_44k"]["rss_mb"]
    out["scale"] = scale(args)
    fit = out["fit_44k"] = out["scale"]["fit"][f"{FULL_CATALOG // 1000}k"]
    # The whole 44k precompute: every forward pass at the measured rate of the embed stage (which
    # includes each product's text through the text model), then fitting, then the index.
    embed_s = (fit["items"] + fit["views"]) / precompute["forward_img_s"]
    text_s = precompute["text_model_share"] * embed_s
    out["full_catalog_precompute_min"] = round((embed_s + fit["wall_s"]) / 60, 1)
    out["text_share_of_44k_precompute"] = round(text_s / (embed_s - text_s + fit["wall_s"]), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    add_model_options(parser)
    parser.add_argument("--images", type=int, default=192, help="images for the throughput comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--path-rows", type=int, default=400, help="catalog rows each model path builds")
    parser.add_argument("--paths", action="store_true", help="every model path this CPU runs (default: auto and fp32)")
    parser.add_argument("--paths-only", action="store_true", help="only the model's paths (and the CPU)")
    parser.add_argument(
        "--scale",
        type=int,
        nargs="?",
        const=1_000_000,
        metavar="N",
        help="the long studies, with an HNSW of N vectors (default 1,000,000; 0: none)",
    )
    parser.add_argument(
        "--fit-sizes", default=f"{FULL_CATALOG},200000", help="synthetic catalog sizes the fitting stages run at"
    )
    parser.add_argument("--scale-only", action="store_true", help="only the scale measurements (`scale`)")
    parser.add_argument("--throughput-only", choices=("pipeline", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--path-stage", nargs=3, metavar=("STAGE", "PATH", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.path_stage:  # a child of model_paths
        stage, name, folder = args.path_stage
        configure_runtime(build=stage == "build")
        print(json.dumps(path_stage(args, stage, name, Path(folder))))
        return 0
    # As the app and precompute.py do (one BLAS thread: numpy's spinning OpenBLAS threads otherwise
    # starve torch's; a pipeline child also lets idle OpenMP threads sleep, as a build does).
    configure_runtime(build=args.throughput_only == "pipeline")
    if args.throughput_only:  # a child of precompute_throughput: its OpenMP setting is in place before torch loads
        print(
            json.dumps(
                throughput_runs(
                    args.throughput_only, args.data, args.weights, args.text_model, args.images, args.repeats
                )
            )
        )
        return 0
    if args.scale_only and args.scale is None:
        args.scale = 1_000_000
    if args.paths_only or args.scale_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(model_paths(args) if args.paths_only else {"scale": scale(args)}, indent=1))
        print(args.out.read_text())
        return 0
    # Latency first, in a clean process state: measured after the throughput runs (three more models
    # and their oneDNN primitive caches in memory) search p50 read 128 ms instead of 30 ms.
    result = query_latency(args.index, args.data, args.weights, args.text_model, args.queries)
    print(json.dumps(result), flush=True)
    result["precompute"] = precompute_throughput(args)
    print(json.dumps(result["precompute"]), flush=True)
    result |= model_paths(args)
    if args.scale is not None:
        result |= scale_studies(args, result["precompute"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    p, s = result["precompute"], result
    rows = [
        ("precompute, real pipeline, catalog items", f"{p['pipeline_img_s']} img/s ({p['speedup']}x naive)"),
        (
            "precompute, real pipeline, forward passes (items + synthetic views)",
            f"{p['forward_img_s']} img/s ({p['forward_speedup']}x naive)",
        ),
        ("precompute, naive per-image fp32 loop", f"{p['naive_img_s']} img/s"),
        ("Recommender.search p50 / p95", f"{s['search_ms']['p50']:.1f} / {s['search_ms']['p95']:.1f} ms"),
        ("HNSW alone p50 / p95", f"{s['hnsw_ms']['p50']:.3f} / {s['hnsw_ms']['p95']:.3f} ms"),
        (f"exact brute force p50 ({s['catalog']} items)", f"{s['exact_ms']['p50']:.2f} ms"),
        (
            "Recommender.search_text p50 / p95",
            f"{s['text_search_ms']['p50']:.1f} / {s['text_search_ms']['p95']:.1f} ms",
        ),
        ("text model, one query p50", f"{s['text_encode_ms']['p50']:.1f} ms"),
        (
            "Explore tab update (8 charts' counts) at 44k p50 / p95",
            f"{s['insights_44k_ms']['p50']:.1f} / {s['insights_44k_ms']['p95']:.1f} ms",
        ),
    ]
    if "scale" in s:
        index = s["index"]
        rows += [
            (
                "words at 44k: exact scan with constraints / HNSW walk p50",
                f"{s['text_scan_44k_ms']['p50']:.2f} / {s['text_hnsw_44k_ms']['p50']:.3f} ms",
            ),
            (
                f"index build, real {index['real']['items']} / synthetic 44k",
                f"{index['real']['build_s']} / {index['synthetic_44k']['build_s']} s",
            ),
            (
                "app peak RSS, real / synthetic 44k",
                f"{index['real']['rss_mb']} / {index['synthetic_44k']['rss_mb']} MB",
            ),
            *[
                (
                    f"fitting at {name} synthetic items + {f['views']} views: heads / search space + projection / "
                    "map / index; all; peak RSS",
                    f"{f['heads_s']} / {f['search_space_and_projection_s']} / {f['map_s']} / {f['index_build_s']} s; "
                    f"{f['wall_s']} s; {f['peak_rss_mb']} MB",
                )
                for name, f in s["scale"]["fit"].items()
            ],
            *(
                [
                    (
                        f"HNSW of {h['items']:,} synthetic vectors: build / index / app peak RSS / query p50 / "
                        "recall@10",
                        f"{h['build_s']} s / {h['index_mb']} MB / {h['rss_mb']} MB / {h['query_ms_p50']} ms / "
                        f"{h['recall@10']}",
                    )
                    for h in [s["scale"]["hnsw_1m"]]
                ]
                if s["scale"].get("hnsw_1m")
                else []
            ),
            (
                "whole 44k precompute (forward passes and texts at the rate above + fitting + index)",
                f"{s['full_catalog_precompute_min']} min",
            ),
            (
                "text model on catalog texts, fp32 (shipped) / bf16 autocast; what it adds to the 44k precompute",
                f"{s['text_model_catalog_texts_s']} / {s['text_model_catalog_texts_s_bf16']} texts/s; "
                f"+{100 * s['text_share_of_44k_precompute']:.1f}%",
            ),
        ]
    cpu = s["cpu"]
    rows += [
        (
            f"path {name}{' (auto)' if name == s['default_path'] else ''}: model / embed stage / search p50 / "
            "P@10 articleType / shopper rank-1",
            f"{v['model_img_s']} img/s / {v['embed_items_s']} items/s / {v['search_ms_p50']} ms / "
            f"{v['p10_articleType']:.4f} / {v['shopper_rank1']:.3f}",
        )
        for name, v in s["paths"].items()
    ]
    print(
        f"CPU: {cpu['model']} ({cpu['torch_capability']}; caps {cpu['isa_caps'] or 'none'}); {' '.join(cpu['flags'])}"
    )
    print("\n| measure | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
