"""The runner: streams a catalog through decoding, the Embedder and the shard writer, then fits and
publishes. `precompute` builds one artifacts directory; `--num-shards` slices and `merge_slices` split
the embed stage over machines."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import artifacts
from ..augment import shopper_view
from ..catalog import CatalogItem, CatalogSource
from ..embedder import INT8_CALIBRATION_IMAGES, Embedder
from ..errors import UserError
from ..images import load_image
from ..text_model import TextEncoder
from .decode import decode_pool, default_workers, prepared_batches
from .fitting import train_and_index
from .shards import SHARD_SIZE, ShardWriter, close_work, complete_shards, open_work

# Catalog items a batch on the CPU (views ride along); on a GPU 128 ran faster than 256 and keeps a
# Space's smaller GPUs safe (docs/benchmarks.md).
BATCH_SIZE = 16
GPU_BATCH_SIZE = 128


def default_batch_size(embedder: Embedder) -> int:
    return GPU_BATCH_SIZE if embedder.device.type == "cuda" else BATCH_SIZE


def embed_catalog(
    source: CatalogSource,
    work: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    batch_size: int | None = None,
    shard_size: int = SHARD_SIZE,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Fill `work/shards` and `work/thumbnails`, resuming after the last complete shard. Returns timings.
    `batch_size` and `workers` (decode processes) default to the embedder's device's measured best."""
    batch_size = batch_size or default_batch_size(embedder)
    workers = workers or default_workers(embedder)
    shards, thumbs = work / "shards", work / artifacts.THUMBNAILS
    shards.mkdir(parents=True, exist_ok=True)
    thumbs.mkdir(exist_ok=True)
    resume_from = complete_shards(shards)
    start = resume_from * shard_size
    if start:
        print(f"Resuming after {resume_from} complete shard(s) ({start} catalog rows).", flush=True)

    def mine() -> Iterator[CatalogItem]:
        for item in source:
            if item.position >= start and item.position % num_shards == shard_index:
                yield item

    timings = {"model_s": 0.0, "text_s": 0.0, "wall_s": 0.0, "images": 0, "views": 0}
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
            view_of = {id(p): v for p, v in zip(viewed, vectors[len(good) :])}
            for prepared in batch:
                shard_no = prepared.item.position // shard_size
                if shard_no != current:
                    if writer is not None:
                        timings["text_s"] += writer.commit()
                    for empty in range(current + 1 if current is not None else resume_from, shard_no):
                        ShardWriter(shards, empty).commit()  # a stretch of rows that were all another slice's
                    writer, current = ShardWriter(shards, shard_no, text_encoder), shard_no
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
        timings["text_s"] += writer.commit()
    bar.close()
    timings["wall_s"] = time.perf_counter() - started
    timings.update(batch_size=batch_size, workers=workers)
    return timings


def calibrate_int8(source: CatalogSource, embedder: Embedder, n: int = INT8_CALIBRATION_IMAGES) -> None:
    """int8's activation ranges from the catalog's first `n` readable photos and a shopper's photo of each
    (queries look like those; docs/experiments.md#int8): the same for every slice and every resume, so
    all shards share one int8 model."""
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
        "text_model_sha256": text_encoder.sha256,
        **params,
    }


def precompute(
    source: CatalogSource,
    out: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    batch_size: int | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    shard_size: int = SHARD_SIZE,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Build a complete artifacts directory at `out` (or, with num_shards > 1, one slice for --merge)."""
    if not 0 <= shard_index < num_shards:
        raise UserError(f"--shard-index must be between 0 and {num_shards - 1}.")
    out = Path(out)
    batch_size = batch_size or default_batch_size(embedder)
    # Every photo, catalog and query alike, is brought to the detail the catalog's photos carry.
    embedder.detail_side = source.typical_side()
    if embedder.build_precision == "int8":
        calibrate_int8(source, embedder)
    work = out.with_name(out.name + ".partial")
    key = _work_key(
        source,
        embedder,
        text_encoder,
        num_shards=num_shards,
        shard_index=shard_index,
        shard_size=shard_size,
        batch_size=batch_size,
    )
    open_work(work, key)
    timings = embed_catalog(
        source, work, embedder, text_encoder, batch_size, shard_size, num_shards, shard_index, progress, workers
    )
    skipped_source = {k: list(v) for k, v in source.skipped.reasons.items()}
    if num_shards > 1:
        artifacts.write_atomic(
            work / "slice.json",
            lambda tmp: tmp.write_text(
                json.dumps(
                    dict(key, embedder=embedder.describe(), text_model=text_encoder.describe(), skipped=skipped_source),
                    indent=1,
                )
            ),
        )
        artifacts.publish(work, out)
        return {"slice": str(out), **timings}
    wall = max(timings["wall_s"], 1e-9)
    params = {
        "batch_size": batch_size,
        "decode_workers": timings["workers"],
        "device": embedder.device.type,
        "shard_size": shard_size,
        "embed_wall_s": round(timings["wall_s"], 1),
        "model_s": round(timings["model_s"], 1),  # the rest of the wall time is reading/decoding/writing
        "text_model_s": round(timings["text_s"], 1),  # catalog texts through the text model (part of the wall)
        "throughput_img_s": round(timings["images"] / wall, 1),
        "synthetic_views": timings["views"],
        "forward_img_s": round((timings["images"] + timings["views"]) / wall, 1),
    }
    manifest = train_and_index(
        work,
        [work / "shards"],
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


def merge_slices(slices: list[Path], out: Path) -> dict:
    """Join the slices written by `--num-shards N --shard-index I` runs into one artifacts directory."""
    infos = []
    for folder in slices:
        if not (folder / "slice.json").is_file():
            raise UserError(
                f"{folder} is not a finished precompute slice (slice.json missing); rerun that slice first."
            )
        infos.append(json.loads((folder / "slice.json").read_text()))
    first = infos[0]
    if any(
        i["weights_sha256"] != first["weights_sha256"]
        or i["preprocessing"] != first["preprocessing"]
        or i["embedder"].get("int8") != first["embedder"].get("int8")
        or i["text_model"]["sha256"] != first["text_model"]["sha256"]
        for i in infos
    ):
        raise UserError(
            "The slices were embedded with different weights, text models, preprocessing or int8 calibration; "
            "rebuild them with the same --weights, --text-model and --precision."
        )
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
    manifest = train_and_index(
        staging,
        [f / "shards" for f in slices],
        first["embedder"],
        first["text_model"],
        first["source"],
        skipped,
        params,
    )
    artifacts.publish(staging, out)
    return manifest
