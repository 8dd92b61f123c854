"""Scale measurements for benchmark.py: the build's fitting stages on synthetic catalogs of any size, and
an HNSW index of a million vectors. Each measured stage runs in its own process, so its peak RSS is its
own (VmHWM), not the generator's.

Synthetic rows are catalog-like: a real index's rows (descriptors, attributes, text vectors) repeated
under fresh ids with a little noise, and synthetic views as precompute makes them (one fit item in three
among the first 10,000), so the fitting sees the real data's structure at any size."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recommender import artifacts
from recommender.augment import gets_view
from recommender.build.decode import Prepared
from recommender.build.shards import SHARD_SIZE, ShardWriter
from recommender.catalog import CatalogItem
from recommender.metadata import Metadata
from recommender.rowfile import RowFile, RowWriter, row_chunks
from recommender.vocabulary import ATTRIBUTE_COLUMNS

FIRST_ID = 1_000_000  # synthetic ids: above every real one
TEXT_DIM = 384  # the text model's vectors


def synthetic_shards(index: Path, folder: Path, items: int, seed: int = 0) -> dict:
    """Write `items` catalog-like rows as a build's shards into `folder`. Returns counts."""
    folder.mkdir(parents=True, exist_ok=True)
    features = RowFile(index / artifacts.FEATURES)
    texts = RowFile(index / artifacts.TEXT_VECTORS)
    metadata = Metadata.load(index / artifacts.METADATA)
    rng = np.random.default_rng(seed)
    views = 0
    for number, start in enumerate(range(0, items, SHARD_SIZE)):
        positions = np.arange(start, min(start + SHARD_SIZE, items))
        source_rows = positions % len(features)
        order = np.argsort(source_rows)  # RowFile reads want ascending rows
        vectors = np.empty((len(positions), features.shape[1]), np.float32)
        vectors[order] = features[source_rows[order]]
        vectors += rng.normal(scale=0.01, size=vectors.shape).astype(np.float32)
        text_rows = np.empty((len(positions), texts.shape[1]), np.float32)
        text_rows[order] = texts[source_rows[order]]
        writer = ShardWriter(folder, number)
        for position, row, vector, text in zip(positions, source_rows, vectors, text_rows):
            item_id = FIRST_ID + int(position)
            attributes = {c: str(metadata.columns[c][row]) for c in ATTRIBUTE_COLUMNS}
            item = CatalogItem(int(position), item_id, attributes, None)
            writer.add(Prepared(item, None, None, None, f"synthetic-{item_id}", None, vector, text_vector=text))
            if gets_view(item_id, int(position)):
                noise = rng.normal(scale=0.02, size=vector.shape).astype(np.float32)
                writer.add_view(item_id, vector + noise)
                views += 1
        writer.commit()
    return {"items": items, "views": views}


FIT_CHILD = r"""
import json, sys, time
from pathlib import Path
from recommender.build.fitting import train_and_index
work, real = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
(work / "out").mkdir()
t0 = time.perf_counter()
m = train_and_index(work / "out", work / "shards", real["model"], real["text_model"], {"source": "synthetic"}, {}, {})
wall = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({
    "peak_rss_mb": round(int(hwm) / 1024, 1),
    "wall_s": round(wall, 1),
    "heads_s": m["build"]["heads_train_s"],
    "search_space_and_projection_s": m["projection"]["train_s"],
    "map_s": m["map"]["fit_s"],
    "index_build_s": m["build"]["index_build_s"],
    "index_mb": round((work / "out" / "index.hnsw").stat().st_size / 2**20, 1),
}))
"""


def fit_scale(index: Path, sizes: list[int]) -> dict:
    """Per catalog size: peak RSS and seconds of the build's fitting + projection + map + index stages
    (`train_and_index`, everything after the embed stage), on synthetic catalog-like shards."""
    out = {}
    for items in sizes:
        with tempfile.TemporaryDirectory(dir=index.parent) as tmp:
            counts = synthetic_shards(index, Path(tmp) / "shards", items)
            result = subprocess.run(
                [sys.executable, "-c", FIT_CHILD, tmp, str(index / artifacts.MANIFEST)],
                capture_output=True,
                text=True,
                check=True,
            )
            out[_label(items)] = counts | json.loads(result.stdout.strip().splitlines()[-1])
            print(json.dumps({_label(items): out[_label(items)]}), flush=True)
    return out


def _label(items: int) -> str:
    return f"{items // 1000}k" if items < 1_000_000 else f"{items // 1_000_000}M"


def synthetic_vectors(index: Path, path: Path, items: int, seed: int = 0, spread: float = 0.5) -> None:
    """`items` unit vectors around the real index's search vectors (each a real one plus Gaussian noise
    of norm ~`spread`): neighbourhoods like a catalog's, in the shipped dimension."""
    real = np.load(index / artifacts.EMBEDDINGS)
    rng = np.random.default_rng(seed)
    writer = RowWriter(path, (items, real.shape[1]))
    for start in range(0, items, 65_536):
        count = min(65_536, items - start)
        chunk = real[rng.integers(0, len(real), count)]
        chunk = chunk + rng.normal(scale=spread / np.sqrt(real.shape[1]), size=chunk.shape).astype(np.float32)
        writer.write(slice(start, start + count), chunk / np.linalg.norm(chunk, axis=1, keepdims=True))


HNSW_BUILD_CHILD = r"""
import json, sys, time
from recommender.rowfile import RowFile
from recommender.hnsw import build_hnsw
t0 = time.perf_counter()
index = build_hnsw(RowFile(sys.argv[1]))  # as a build does: one insertion thread, a chunk at a time
build_s = time.perf_counter() - t0
index.save_index(sys.argv[2])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"build_s": round(build_s, 1), "build_peak_rss_mb": round(int(hwm) / 1024, 1)}))
"""

HNSW_QUERY_CHILD = r"""
import json, sys, time
import numpy as np
from recommender.serve.index import VectorIndex
index = VectorIndex.load(sys.argv[1], sys.argv[2])  # as the app loads it: vectors memory-mapped
queries = np.load(sys.argv[3])
times, found = [], []
for q in queries:
    t0 = time.perf_counter()
    rows, _ = index.search(q, 10)
    times.append((time.perf_counter() - t0) * 1000)
    found.append(rows)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
np.save(sys.argv[4], np.stack(found))
print(json.dumps({"query_ms_p50": round(float(np.median(times)), 3), "rss_mb": round(int(hwm) / 1024, 1)}))
"""


def hnsw_simulation(index: Path, items: int, app_rss: Callable[[Path, Path, Path], float], queries: int = 200) -> dict:
    """An HNSW index over `items` catalog-like vectors of the shipped dimension, built as a build builds
    it: build seconds and peak RSS, index size, query p50 and recall@10 against exact search (`queries`
    new points near catalog items), and the app's peak RSS with it (`app_rss(vectors, index, texts)`,
    with as many text vectors)."""
    with tempfile.TemporaryDirectory(dir=index.parent) as tmp:
        vectors, graph = Path(tmp) / "vectors.npy", Path(tmp) / "index.hnsw"
        t0 = time.perf_counter()
        synthetic_vectors(index, vectors, items)
        print(f"{items} synthetic vectors in {time.perf_counter() - t0:.0f} s", flush=True)
        built = _child(HNSW_BUILD_CHILD, vectors, graph)
        query_file, found_file = Path(tmp) / "queries.npy", Path(tmp) / "found.npy"
        synthetic_vectors(index, query_file, queries, seed=1)  # new points near catalog items, not in the index
        served = _child(HNSW_QUERY_CHILD, vectors, graph, query_file, found_file)
        asked = np.load(query_file)
        best = np.full((queries, 10), -np.inf, np.float32)
        best_rows = np.zeros((queries, 10), np.int64)
        for start, chunk in row_chunks(RowFile(vectors), 65_536):  # exact top-10, a chunk at a time
            scores = asked @ chunk.T
            rows = np.concatenate([best_rows, np.arange(start, start + len(chunk))[None].repeat(queries, 0)], 1)
            merged = np.concatenate([best, scores], 1)
            keep = np.argsort(-merged, axis=1)[:, :10]
            best, best_rows = np.take_along_axis(merged, keep, 1), np.take_along_axis(rows, keep, 1)
        found = np.load(found_file)
        recall = np.mean([len(np.intersect1d(f, e)) / 10 for f, e in zip(found, best_rows)])
        texts = Path(tmp) / "texts.npy"
        text_writer, rng = RowWriter(texts, (items, TEXT_DIM)), np.random.default_rng(2)
        for start in range(0, items, 65_536):
            chunk = rng.normal(size=(min(65_536, items - start), TEXT_DIM)).astype(np.float32)
            text_writer.write(slice(start, start + len(chunk)), chunk / np.linalg.norm(chunk, axis=1, keepdims=True))
        return {
            "items": items,
            "dim": int(asked.shape[1]),
            **built,
            "index_mb": round(graph.stat().st_size / 2**20, 1),
            "query_ms_p50": served["query_ms_p50"],
            "index_process_rss_mb": served["rss_mb"],
            "rss_mb": app_rss(vectors, graph, texts),
            "recall@10": round(float(recall), 4),
        }


def _child(code: str, *args: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])
