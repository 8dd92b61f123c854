"""Precompute: catalog source -> decode (processes) -> embed (batches) -> shard writer -> index build.

Embeddings are flushed in shards of `shard_size` stream positions into `<out>.partial/`; a rerun after
an interruption continues after the last complete shard, and the finished directory is renamed to
`<out>` only when everything is written."""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import artifacts
from .augment import gets_view, shopper_view
from .catalog import ATTRIBUTE_COLUMNS, CatalogItem, CatalogSource
from .embedder import Embedder, Preprocessor
from .errors import ImageError, UserError
from .heads import train_heads
from .images import load_image
from .index import HNSW_EF, HNSW_EF_CONSTRUCTION, HNSW_M, build_hnsw
from .metadata import Metadata
from .projection import project, train_projection

SHARD_SIZE = 1024
# Catalog items a batch on the CPU (views ride along: ~20 images a pass). The whole embed stage on this
# 2-core CPU (scripts/throughput.py, medians of 2): 3,000 fashion-dev items at batch 12 / 16 / 20 / 32:
# 70.4 / 71.1 / 66.8 / 67.4 items/s; 2,000 items at 8 / 16 / 24 / 32: 68.0 / 72.9 / 66.8 / 65.2.
BATCH_SIZE = 16
# H100 (scripts/throughput.py, 2,200 items, 15 decode processes): the whole embed stage ran 1,425
# items/s at batch 128 and 1,150 at 256 (the model alone 10,930 / 11,918 img/s); 128 also keeps a
# Space's smaller GPUs safe.
GPU_BATCH_SIZE = 128
THUMB_MAX_SIDE = 256  # the catalog's own 60x80 JPEGs are kept byte for byte; larger ones are shrunk


Input = tuple[np.ndarray, np.ndarray]  # what a Preprocessor returns: uint8 pixels, colour histogram


@dataclass
class Prepared:
    item: CatalogItem
    input: Input | None
    view: Input | None  # a synthetic shopper photo of the item, for training the projection
    thumbnail: bytes | None
    image_sha: str
    error: str | None


def prepare_item(item: CatalogItem, preprocess: Preprocessor) -> Prepared:
    """Decode, preprocess and make the thumbnail of one item."""
    if item.data is None:
        return Prepared(item, None, None, None, "", "row without an image")
    try:
        image = load_image(item.data)
    except ImageError:
        return Prepared(item, None, None, None, "", "image that cannot be decoded")
    if max(image.size) <= THUMB_MAX_SIDE and item.data[:3] == b"\xff\xd8\xff":
        thumbnail = item.data
    else:
        small = image.copy()
        small.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=90)
        thumbnail = buffer.getvalue()
    view = preprocess(shopper_view(image, seed=int(item.id))) if gets_view(item.id, item.position) else None
    return Prepared(item, preprocess(image), view, thumbnail, hashlib.sha256(item.data).hexdigest(), None)


# --- decode processes. On a 16-core H100 host (scripts/throughput.py, 2,200 fashion-dev items) decode
# threads stopped at ~330 items/s whatever their number (the GIL; one thread: 153) while the model ran
# 7,755 img/s; processes scale: 1 / 8 / 15 of them prepared 155 / 990 / 1,353 items/s (2,088 with 15
# since they send uint8 pixels and find the product mask once).

_WORKER: dict = {}  # in a decode process: its Preprocessor
CHUNK = 8  # items per task: fewer round trips, still small enough to spread a batch over many processes


def _die_with_parent(parent: int) -> None:
    """A forked worker holds both ends of its task pipe, so it would wait forever for work from a
    parent that was killed (SIGKILL, OOM): have Linux kill it with its parent (pid `parent`)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: no such call; the orphan then lingers until its pipe errors
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect (re-parented)
        os._exit(1)


def _start_worker(parent: int, preprocess: Preprocessor) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: one message, no traces
    torch.set_num_threads(1)  # one core per process
    _WORKER.update(preprocess=preprocess)


def _prepare_chunk(items: list[CatalogItem]) -> list[Prepared]:
    """In a decode process: prepare items (their model inputs are uint8 numpy arrays: cheap to send)."""
    return [prepare_item(item, _WORKER["preprocess"]) for item in items]


def decode_pool(embedder: Embedder, workers: int) -> ProcessPoolExecutor:
    """`workers` decode processes, forked (as torch's DataLoader does): spawn and forkserver would re-run
    the main module in every worker (app.py imports Gradio; a script fed on stdin cannot be re-run at
    all) and take seconds to start. The workers touch neither the GPU nor torch's thread pool."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                               initargs=(os.getpid(), embedder.preprocessor))


def prepared_batches(items: Iterable[CatalogItem], batch_size: int, pool: ProcessPoolExecutor,
                     workers: int) -> Iterator[list[Prepared]]:
    """Batches in stream order, prepared by the pool while the model works on earlier ones; enough
    chunks in flight to keep every decode process busy."""
    ahead = max(1, math.ceil(2 * workers * CHUNK / batch_size))
    in_flight: deque[list[Future]] = deque()

    def collect(futures: list[Future]) -> list[Prepared]:
        return [p for future in futures for p in future.result()]

    items = iter(items)
    while batch := list(itertools.islice(items, batch_size)):
        in_flight.append([pool.submit(_prepare_chunk, batch[i:i + CHUNK]) for i in range(0, len(batch), CHUNK)])
        if len(in_flight) > ahead:
            yield collect(in_flight.popleft())
    while in_flight:
        yield collect(in_flight.popleft())


class ShardWriter:
    """Collects one shard's rows and commits them atomically; a shard file exists only when complete."""

    def __init__(self, folder: Path, number: int) -> None:
        self.path = folder / f"shard-{number:05d}.npz"
        self.rows: list[dict] = []
        self.vectors: list[np.ndarray] = []
        self.skipped: list[list] = []
        self.views: list[np.ndarray] = []
        self.view_ids: list[int] = []

    def add(self, prepared: Prepared, vector: np.ndarray) -> None:
        item = prepared.item
        self.rows.append({"position": item.position, "id": item.id, "image_sha": prepared.image_sha, **item.attributes})
        self.vectors.append(vector)

    def add_view(self, item_id: int, vector: np.ndarray) -> None:
        self.view_ids.append(int(item_id))
        self.views.append(vector)

    def commit(self) -> None:
        vectors = np.stack(self.vectors) if self.vectors else np.zeros((0, 0), np.float32)
        views = np.stack(self.views) if self.views else np.zeros((0, 0), np.float32)
        meta = json.dumps({"rows": self.rows, "skipped": self.skipped, "view_ids": self.view_ids}, ensure_ascii=False)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, vectors=vectors.astype(np.float32), views=views.astype(np.float32),
                         meta=np.frombuffer(meta.encode(), np.uint8))
                handle.flush()
                os.fsync(handle.fileno())
        artifacts.write_atomic(self.path, write)


@dataclass
class Shards:
    """Everything the shard files of a run hold, rows in stream order."""
    vectors: np.ndarray
    rows: list[dict]
    skipped: list[list]
    views: np.ndarray  # descriptors of synthetic shopper photos ...
    view_ids: np.ndarray  # ... of these catalog items


def read_shards(folders: Iterable[Path]) -> Shards:
    """All committed rows (and synthetic views) of the given shard folders."""
    vectors, rows, skipped, views, view_ids = [], [], [], [], []
    for folder in folders:
        for path in sorted(folder.glob("shard-*.npz")):
            with np.load(path) as data:
                meta = json.loads(data["meta"].tobytes().decode())
                if meta["rows"]:
                    vectors.append(data["vectors"])
                if meta["view_ids"]:
                    views.append(data["views"])
                rows += meta["rows"]
                skipped += meta["skipped"]
                view_ids += meta["view_ids"]
    order = np.argsort([r["position"] for r in rows], kind="stable")
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    return Shards(matrix[order] if len(rows) else matrix, [rows[i] for i in order], skipped,
                  np.concatenate(views) if views else np.zeros((0, matrix.shape[1]), np.float32),
                  np.asarray(view_ids, np.int64))


def default_batch_size(embedder: Embedder) -> int:
    return GPU_BATCH_SIZE if embedder.device.type == "cuda" else BATCH_SIZE


def default_workers(embedder: Embedder) -> int:
    """Decode processes. On the CPU one is enough (decode, trim, colour and preprocessing take ~0.8 ms
    for a 60x80 photo, a synthetic view ~3 ms more: one process prepares 384 items/s of fashion-dev;
    the model ~10 ms an image) and leaves the cores to the model. Decoding in phases between batches
    with two processes instead measured no faster (62.1 / 62.4 vs 61.5 / 62.1 items/s, 3,000 items,
    two rounds). A GPU outruns one decode process 50 times over, so there every core but the main
    process's decodes."""
    if embedder.device.type != "cuda":
        return 1
    return max(1, (os.cpu_count() or 2) - 1)


def embed_catalog(source: CatalogSource, work: Path, embedder: Embedder, batch_size: int | None = None,
                  shard_size: int = SHARD_SIZE, num_shards: int = 1, shard_index: int = 0,
                  progress: bool = True, workers: int | None = None) -> dict:
    """Fill `work/shards` and `work/thumbnails`, resuming after the last complete shard. Returns timings.
    `batch_size` and `workers` (decode processes) default to the embedder's device's measured best."""
    batch_size = batch_size or default_batch_size(embedder)
    workers = workers or default_workers(embedder)
    shards, thumbs = work / "shards", work / artifacts.THUMBNAILS
    shards.mkdir(parents=True, exist_ok=True)
    thumbs.mkdir(exist_ok=True)
    done = {int(p.stem.split("-")[1]) for p in shards.glob("shard-*.npz")}
    resume_from = 0
    while resume_from in done:
        resume_from += 1
    start = resume_from * shard_size
    if start:
        print(f"Resuming after {resume_from} complete shard(s) ({start} catalog rows).", flush=True)

    def mine() -> Iterator[CatalogItem]:
        for item in source:
            if item.position >= start and item.position % num_shards == shard_index:
                yield item

    timings = {"model_s": 0.0, "wall_s": 0.0, "images": 0, "views": 0}
    writer, current = None, None
    started = time.perf_counter()
    bar = tqdm(total=source.limit, initial=start, unit="img", disable=not progress, desc="embedding", smoothing=0.1)
    last_position = start - 1
    pool = decode_pool(embedder, workers)
    try:
        for batch in prepared_batches(mine(), batch_size, pool, workers):
            good = [p for p in batch if p.input is not None]
            viewed = [p for p in good if p.view is not None]
            t0 = time.perf_counter()
            # Catalog photos and synthetic views share one forward pass: fuller batches, one code path.
            vectors = embedder.descriptors([p.input for p in good] + [p.view for p in viewed])
            timings["model_s"] += time.perf_counter() - t0
            by_item = {id(p): v for p, v in zip(good, vectors)}
            view_of = {id(p): v for p, v in zip(viewed, vectors[len(good):])}
            for prepared in batch:
                shard_no = prepared.item.position // shard_size
                if shard_no != current:
                    if writer is not None:
                        writer.commit()
                    for empty in range(current + 1 if current is not None else resume_from, shard_no):
                        ShardWriter(shards, empty).commit()  # a stretch of rows that were all another slice's
                    writer, current = ShardWriter(shards, shard_no), shard_no
                if prepared.error:
                    writer.skipped.append([prepared.error, prepared.item.id])
                else:
                    (thumbs / f"{prepared.item.id}.jpg").write_bytes(prepared.thumbnail)
                    writer.add(prepared, by_item[id(prepared)])
                    if id(prepared) in view_of:
                        writer.add_view(prepared.item.id, view_of[id(prepared)])
                bar.update(prepared.item.position - last_position)
                last_position = prepared.item.position
            timings["images"] += len(good)
            timings["views"] += len(viewed)
    finally:
        pool.shutdown(cancel_futures=True)
    if writer is not None:
        writer.commit()
    bar.close()
    timings["wall_s"] = time.perf_counter() - started
    timings.update(batch_size=batch_size, workers=workers)
    return timings


def build_artifacts(folder: Path, shard_folders: list[Path], embedder_info: dict, source_info: dict,
                    skipped_source: dict[str, list], params: dict, device: torch.device | None = None) -> dict:
    """Index, metadata, heads and manifest in `folder` (whose thumbnails are already in place); the heads
    and the projection train on `device` (default: CUDA when there is one)."""
    shards = read_shards(shard_folders)
    vectors, rows, skipped = shards.vectors, shards.rows, shards.skipped
    if not rows:
        raise UserError("No catalog item could be embedded (every row was skipped); check the source's images.")
    ids = np.array([r["id"] for r in rows])
    metadata = Metadata(ids, {c: [r[c] for r in rows] for c in ATTRIBUTE_COLUMNS}, [r["image_sha"] for r in rows])
    np.save(folder / artifacts.FEATURES, vectors.astype(np.float32))
    t0 = time.perf_counter()
    heads = train_heads(vectors, ids, metadata.columns, device=device)  # first: the search space includes their predictions
    heads_s = time.perf_counter() - t0
    artifacts.save_heads(folder / artifacts.HEADS, heads)
    t0 = time.perf_counter()
    projection = train_projection(vectors, ids, metadata.columns, shards.views, shards.view_ids, heads, device=device)
    search_vectors = project(projection, vectors, heads)
    projection_s = time.perf_counter() - t0
    artifacts.save_projection(folder / artifacts.PROJECTION, projection)
    np.save(folder / artifacts.EMBEDDINGS, search_vectors)
    t0 = time.perf_counter()
    build_hnsw(search_vectors).save_index(str(folder / artifacts.INDEX))
    build_s = time.perf_counter() - t0
    metadata.save(folder / artifacts.METADATA)
    for reason, item_id in skipped:
        skipped_source.setdefault(reason, []).append(item_id)
    manifest = {
        "model": embedder_info,
        "dim": int(search_vectors.shape[1]),
        "feature_dim": int(vectors.shape[1]),
        "projection": dict(projection["info"], train_s=round(projection_s, 1)),
        "count": len(rows),
        "source": source_info,
        "build": dict(params, hnsw={"space": "ip", "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef": HNSW_EF},
                      heads_train_s=round(heads_s, 1), index_build_s=round(build_s, 2)),
        "heads": {c: {"classes": h["classes"], "heldout_accuracy": h["heldout_accuracy"],
                      "train_rows": h["train_rows"], "heldout_rows": h["heldout_rows"]} for c, h in heads.items()},
        "skipped": {"counts": {k: len(v) for k, v in skipped_source.items()}, "items": skipped_source},
        "libraries": artifacts.library_versions(),
    }
    artifacts.write_manifest(folder, manifest)
    return manifest


def _work_key(source: CatalogSource, embedder: Embedder, **params) -> dict:
    info = embedder.describe()
    return {"source": source.describe(), "weights_sha256": info["weights_sha256"],
            "preprocessing": info["preprocessing"], **params}


def _open_work(work: Path, key: dict) -> None:
    """Keep a partial run only if it was started with the same source, model and parameters."""
    key_file = work / "work.json"
    if work.exists():
        try:
            same = json.loads(key_file.read_text()) == key
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            print(f"Discarding the partial build in {work}: it was started with other settings.", flush=True)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not key_file.exists():
        artifacts.write_atomic(key_file, lambda tmp: tmp.write_text(json.dumps(key, indent=1)))


def precompute(source: CatalogSource, out: Path, embedder: Embedder, batch_size: int | None = None,
               num_shards: int = 1, shard_index: int = 0, shard_size: int = SHARD_SIZE,
               progress: bool = True, workers: int | None = None) -> dict:
    """Build a complete artifacts directory at `out` (or, with num_shards > 1, one slice for --merge)."""
    if not 0 <= shard_index < num_shards:
        raise UserError(f"--shard-index must be between 0 and {num_shards - 1}.")
    out = Path(out)
    batch_size = batch_size or default_batch_size(embedder)
    work = out.with_name(out.name + ".partial")
    key = _work_key(source, embedder, num_shards=num_shards, shard_index=shard_index, shard_size=shard_size, batch_size=batch_size)
    _open_work(work, key)
    timings = embed_catalog(source, work, embedder, batch_size, shard_size, num_shards, shard_index, progress, workers)
    skipped_source = {k: list(v) for k, v in source.skipped.reasons.items()}
    if num_shards > 1:
        artifacts.write_atomic(work / "slice.json", lambda tmp: tmp.write_text(json.dumps(
            dict(key, embedder=embedder.describe(), skipped=skipped_source), indent=1)))
        artifacts.publish(work, out)
        return {"slice": str(out), **timings}
    params = {"batch_size": batch_size, "decode_workers": timings["workers"], "device": embedder.device.type,
              "shard_size": shard_size, "embed_wall_s": round(timings["wall_s"], 1),
              "model_s": round(timings["model_s"], 1),  # the rest of the wall time is reading/decoding/writing
              "throughput_img_s": round(timings["images"] / max(timings["wall_s"], 1e-9), 1),
              "synthetic_views": timings["views"],
              "forward_img_s": round((timings["images"] + timings["views"]) / max(timings["wall_s"], 1e-9), 1)}
    manifest = build_artifacts(work, [work / "shards"], embedder.describe(), source.describe(), skipped_source, params,
                               embedder.device)
    shutil.rmtree(work / "shards")
    (work / "work.json").unlink()
    artifacts.publish(work, out)
    return manifest


def merge_slices(slices: list[Path], out: Path) -> dict:
    """Join the slices written by `--num-shards N --shard-index I` runs into one artifacts directory."""
    infos = []
    for folder in slices:
        if not (folder / "slice.json").is_file():
            raise UserError(f"{folder} is not a finished precompute slice (slice.json missing); rerun that slice first.")
        infos.append(json.loads((folder / "slice.json").read_text()))
    first = infos[0]
    if any(i["weights_sha256"] != first["weights_sha256"] or i["preprocessing"] != first["preprocessing"] for i in infos):
        raise UserError("The slices were embedded with different weights or preprocessing; rebuild them with the same --weights.")
    if sorted(i["shard_index"] for i in infos) != list(range(first["num_shards"])):
        raise UserError(f"Merging needs exactly one slice for each shard index 0..{first['num_shards'] - 1}.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / artifacts.THUMBNAILS).mkdir(parents=True)
    skipped: dict[str, list] = {}
    for folder, info in zip(slices, infos):
        for thumb in (folder / artifacts.THUMBNAILS).iterdir():
            shutil.copy2(thumb, staging / artifacts.THUMBNAILS / thumb.name)
        for reason, ids in info["skipped"].items():
            skipped.setdefault(reason, []).extend(i for i in ids if i not in skipped.get(reason, []))
    params = {"merged_slices": len(slices), "batch_size": first["batch_size"], "shard_size": first["shard_size"]}
    manifest = build_artifacts(staging, [f / "shards" for f in slices], first["embedder"], first["source"], skipped, params)
    artifacts.publish(staging, out)
    return manifest
