"""The runner: streams a catalog through decoding, the Embedder and the shard writer, then fits and
publishes. `precompute` builds one artifacts directory, embedding on this machine or on a Ray cluster
(`ray_engine.RayEngine`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from .. import artifacts, ort_int8
from ..augment import shopper_view
from ..catalog import CatalogSource
from ..embedder import INT8_CALIBRATION_IMAGES, Embedder
from ..errors import UserError
from ..files import write_atomic
from ..images import load_image
from ..model_paths import INT8_PATHS
from ..runtime import release_freed_memory
from ..text_model import TextEncoder
from .decode import (
    Prepared,
    decode_pool,
    decodes_on_device,
    default_workers,
    device_preprocessor,
    embed_prepared,
    prepared_batches,
)
from .fitting import train_and_index
from .shards import SHARD_SIZE, ShardWriter, close_work, complete_shards, open_work

if TYPE_CHECKING:
    from .ray_engine import RayEngine

# Catalog items a batch on the CPU (views ride along); on a GPU 128 ran faster than 256 and keeps a
# Space's smaller GPUs safe (docs/benchmarks.md).
BATCH_SIZE = 16
GPU_BATCH_SIZE = 128
PROGRESS_EVERY_S = 2.0  # how often the work folder's progress record is rewritten


def default_batch_size(embedder: Embedder) -> int:
    return GPU_BATCH_SIZE if embedder.device.type == "cuda" else BATCH_SIZE


def catalog_size(source: CatalogSource) -> int | None:
    """Rows in the catalog's stream, None where the source cannot tell (a Hub dataset without its size)."""
    try:
        return source.count()
    except UserError:
        return None


def local_batches(
    source: CatalogSource,
    start: int,
    embedder: Embedder,
    batch_size: int,
    workers: int,
    timings: dict,
    on_device: bool = False,
) -> Iterator[list[Prepared]]:
    """This machine's engine: `workers` forked decode processes run ahead of the model in this process
    (the texts are encoded a shard at a time, as the shards are committed); `on_device`: the catalog's
    JPEGs are decoded and preprocessed on the model's device, in this process."""
    pool = decode_pool(embedder, workers, on_device)
    preprocessor = device_preprocessor(embedder) if on_device else None
    try:
        for batch in prepared_batches(source.rows(start), batch_size, pool, workers):
            t0 = time.perf_counter()
            embed_prepared(embedder, batch, preprocessor)
            timings["model_s"] += time.perf_counter() - t0
            yield batch
    finally:
        pool.shutdown(cancel_futures=True)


def embed_catalog(
    source: CatalogSource,
    work: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    batch_size: int | None = None,
    shard_size: int = SHARD_SIZE,
    progress: bool = True,
    workers: int | None = None,
    engine: RayEngine | None = None,
    decode_on_device: bool | None = None,
) -> dict:
    """Fill `work/shards` and `work/thumbnails`, resuming after the last complete shard. Returns timings.
    `batch_size`, `workers` (decode processes) and `decode_on_device` default to the embedder's device's
    measured best; `engine` (default: this machine) decodes and embeds the rows, in stream order."""
    batch_size = batch_size or default_batch_size(embedder)
    workers = workers or default_workers(embedder)
    on_device = decodes_on_device(embedder) if decode_on_device is None else decode_on_device
    shards, thumbs = work / "shards", work / artifacts.THUMBNAILS
    shards.mkdir(parents=True, exist_ok=True)
    thumbs.mkdir(exist_ok=True)
    resume_from = complete_shards(shards)
    start = resume_from * shard_size
    if start:
        print(f"Resuming after {resume_from} complete shard(s) ({start} catalog rows).", flush=True)
    timings = {"model_s": 0.0, "text_s": 0.0, "wall_s": 0.0, "images": 0, "views": 0}
    if engine is None:
        batches = local_batches(source, start, embedder, batch_size, workers, timings, on_device)
    else:
        batches = engine.batches(source, start, shard_size, embedder, text_encoder, batch_size)
    writer: ShardWriter | None = None
    started = time.perf_counter()
    total = catalog_size(source)
    bar = tqdm(total=total, initial=start, unit="img", disable=not progress, desc="embedding", smoothing=0.1)
    last_position = start - 1
    # How far it has come, for the app serving a starter index while it builds the whole catalog.
    artifacts.write_progress(work, artifacts.BuildProgress(start, total, "embedding"))
    last_report = time.monotonic()

    def write(batch: list[Prepared]) -> None:
        """Thumbnails and shard rows of an embedded batch; a shard is committed when the stream leaves it."""
        nonlocal writer, last_position, last_report
        for prepared in batch:
            shard_no = prepared.item.position // shard_size
            if writer is None or shard_no != writer.number:
                if writer is not None:
                    timings["text_s"] += writer.commit(text_encoder)
                writer = ShardWriter(shards, shard_no)
            if prepared.error:
                writer.skipped.append([prepared.error, prepared.item.id])
            else:
                (thumbs / f"{prepared.item.id}.jpg").write_bytes(prepared.thumbnail)
                writer.add(prepared)
                timings["images"] += 1
                if prepared.view_vector is not None:
                    writer.add_view(prepared.item.id, prepared.view_vector)
                    timings["views"] += 1
            bar.update(prepared.item.position - last_position)
            last_position = prepared.item.position
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            artifacts.write_progress(work, artifacts.BuildProgress(last_position + 1, total, "embedding"))
            last_report = time.monotonic()

    # Where the device decodes (a GPU), the main loop is the pipeline's narrowest part, and the writing
    # runs beside it (one thread, batches in order); on a CPU the model has the cores, and it stays in line.
    beside = ThreadPoolExecutor(1, thread_name_prefix="shard-writer") if on_device and engine is None else None
    pending: deque[Future] = deque()
    try:
        for batch in batches:
            if beside is None:
                write(batch)
                continue
            pending.append(beside.submit(write, batch))
            while len(pending) > 2 or (pending and pending[0].done()):
                pending.popleft().result()  # a failed write stops the build here
        while pending:
            pending.popleft().result()
    finally:
        if beside is not None:
            beside.shutdown(cancel_futures=True)  # waits for the write under way
        batches.close()  # stops the decode processes or the Ray pipeline, also on Ctrl-C
    if writer is not None:
        timings["text_s"] += writer.commit(text_encoder)
    bar.close()
    artifacts.write_progress(work, artifacts.BuildProgress(last_position + 1, total, "fitting"))
    timings["wall_s"] = time.perf_counter() - started
    timings.update(batch_size=batch_size, workers=workers, decode="device" if on_device and engine is None else "cpu")
    return timings


def calibrate_int8(source: CatalogSource, embedder: Embedder, n: int = INT8_CALIBRATION_IMAGES) -> None:
    """int8's activation ranges (or ONNX Runtime's int8 graph) from the catalog's first `n` readable photos
    and a shopper's photo of each (queries look like those; docs/experiments.md#int8): the same for every
    slice and every resume, so all shards share one int8 model."""
    pixels = []
    for item in CatalogSource(source.source, min(n, source.limit or n)):
        if item.data is None:
            continue
        try:
            image = load_image(item.data)
        except UserError:
            continue  # an unreadable photo is skipped by the build as well
        pixels += [embedder.model_input(image), embedder.model_input(shopper_view(image, seed=int(item.id)))]
    if not pixels:
        raise UserError("None of the catalog's first photos could be read to calibrate int8; use --precision fp32.")
    embedder.calibrate(np.stack(pixels))


def _work_key(source: CatalogSource, embedder: Embedder, text_encoder: TextEncoder, **params) -> dict:
    info = embedder.describe()
    return {
        "source": source.describe(),
        "weights_sha256": info["weights_sha256"],
        "preprocessing": info["preprocessing"],
        "precision": info["precision"],
        "int8": info.get("int8"),
        "ort_int8": info.get("ort_int8"),
        "text_model_sha256": text_encoder.sha256,
        **params,
    }


def precompute(
    source: CatalogSource,
    out: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    batch_size: int | None = None,
    shard_size: int = SHARD_SIZE,
    progress: bool = True,
    workers: int | None = None,
    engine: RayEngine | None = None,
    decode_on_device: bool | None = None,
) -> dict:
    """Build a complete artifacts directory at `out`; `engine` (default: this machine; or a RayEngine)
    decodes and embeds the catalog, the fitting and the publishing run here. `decode_on_device`: decode
    the catalog's JPEGs on the model's device (default: where that is a GPU). One build at a time on one
    `out`; a full disk ends in one sentence, and the rerun resumes."""
    out = Path(out)
    with artifacts.build_lock(out), artifacts.disk_full_as_sentence(f"the index at {out}"):
        artifacts.recover(out)
        return _build(
            source, out, embedder, text_encoder, batch_size, shard_size, progress, workers, engine, decode_on_device
        )


def _build(
    source: CatalogSource,
    out: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    batch_size: int | None,
    shard_size: int,
    progress: bool,
    workers: int | None,
    engine: RayEngine | None,
    decode_on_device: bool | None,
) -> dict:
    batch_size = batch_size or default_batch_size(embedder)
    work = artifacts.partial_of(out)
    # A stopped build's count is stale until this one resumes (after its last complete shard, not there).
    (work / artifacts.PROGRESS).unlink(missing_ok=True)
    # Every photo, catalog and query alike, is brought to the detail the catalog's photos carry.
    embedder.detail_side = source.typical_side()
    if embedder.build_precision in INT8_PATHS:
        calibrate_int8(source, embedder)
        release_freed_memory()  # the calibration's scratch, handed back before the embedding
    key = _work_key(source, embedder, text_encoder, shard_size=shard_size, batch_size=batch_size)
    open_work(work, key)
    if embedder.ort_graph is not None:  # queries run the build's graph: it is published with the index
        write_atomic(work / ort_int8.GRAPH_FILE, lambda tmp: tmp.write_bytes(embedder.ort_graph))
    timings = embed_catalog(
        source, work, embedder, text_encoder, batch_size, shard_size, progress, workers, engine, decode_on_device
    )
    # The models are not needed until the next pass: their weights and ONNX Runtime's arena go back, with
    # the embedding's freed buffers, before the fitting, the build's peak at full catalog size.
    embedder.release_backbone()
    text_encoder.release()
    release_freed_memory()
    skipped_source = {k: list(v) for k, v in source.skipped.reasons.items()}
    if unlisted := source.unlisted_images():
        skipped_source["image without a styles.csv row"] = unlisted
    wall = max(timings["wall_s"], 1e-9)
    params = {
        "engine": "local" if engine is None else engine.describe(),
        "batch_size": batch_size,
        "decode_workers": timings["workers"],
        "decode": timings["decode"],  # "device": the catalog's JPEGs were decoded on the model's device
        "device": embedder.device.type,
        "shard_size": shard_size,
        "embed_wall_s": round(timings["wall_s"], 1),
        # the rest of the wall time is reading/decoding/writing; a Ray build's model runs in its actors
        "model_s": round(timings["model_s"], 1) if engine is None else None,
        # catalog texts through the text model (part of the wall; a Ray build's run in its actors)
        "text_model_s": round(timings["text_s"], 1) if engine is None else None,
        "throughput_img_s": round(timings["images"] / wall, 1),
        "synthetic_views": timings["views"],
        "forward_img_s": round((timings["images"] + timings["views"]) / wall, 1),
    }
    manifest = train_and_index(
        work,
        work / "shards",
        embedder.describe(),
        text_encoder.describe(),
        source.describe(),
        skipped_source,
        params,
        embedder.device,
    )
    close_work(work)
    artifacts.publish(work, out)
    return manifest
