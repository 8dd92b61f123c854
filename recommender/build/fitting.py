"""Fitting: the shards' descriptors -> trained heads, a fitted search space, the HNSW index, metadata
and the manifest, written into the folder that is about to be published."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import artifacts
from ..embedding_map import MAX_MAP_FIT, fit_map, map_method
from ..errors import UserError
from ..heads import train_heads
from ..hnsw import build_hnsw
from ..metadata import Metadata
from ..rowfile import RowFile, RowWriter, row_chunks
from ..search_space import SearchSpaceSettings, fit_search_space
from ..vocabulary import ATTRIBUTE_COLUMNS
from .shards import gather_shards


def train_and_index(
    folder: Path,
    shard_folder: Path,
    embedder_info: dict,
    text_model_info: dict,
    source_info: dict,
    skipped_source: dict[str, list],
    params: dict,
    device: torch.device | None = None,
) -> dict:
    """Gather the shards' descriptors and text vectors into `folder`, then `fit_and_index` them."""
    shards = gather_shards(shard_folder, folder / artifacts.FEATURES, folder / artifacts.TEXT_VECTORS)
    rows = shards.rows
    if not rows:
        raise UserError("No catalog item could be embedded (every row was skipped); check the source's images.")
    for reason, item_id in shards.skipped:
        skipped_source.setdefault(reason, []).append(item_id)
    metadata = Metadata(
        [r["id"] for r in rows], {c: [r[c] for r in rows] for c in ATTRIBUTE_COLUMNS}, [r["image_sha"] for r in rows]
    )
    return fit_and_index(
        folder,
        metadata,
        shards.views,
        shards.view_ids,
        embedder_info,
        text_model_info,
        source_info,
        skipped_source,
        params,
        device,
    )


def fit_and_index(
    folder: Path,
    metadata: Metadata,
    views: np.ndarray,
    view_ids: np.ndarray,
    embedder_info: dict,
    text_model_info: dict,
    source_info: dict,
    skipped_source: dict[str, list],
    params: dict,
    device: torch.device | None = None,
) -> dict:
    """Train the heads and the search space on the fit part of the descriptors in `folder` (and the
    synthetic `views` of products `view_ids`, kept in the index for a later refit), project every row,
    build the index and write them with the metadata and manifest into `folder` (whose thumbnails and
    text vectors are already in place). Training runs on `device` (default: CUDA when there is one).
    Returns the manifest."""
    # Memory stays flat in the catalog's size: descriptors and vectors live in row files on disk, the
    # fitting reads its bounded samples, projection and insertion go a chunk at a time.
    descriptors = RowFile(folder / artifacts.FEATURES)
    ids = metadata.ids
    artifacts.save_views(folder, views, view_ids)
    t0 = time.perf_counter()
    # First: the search space includes their predictions.
    heads = train_heads(descriptors, ids, metadata.columns, device=device, views=views, view_ids=view_ids)
    heads_s = time.perf_counter() - t0
    heads.save(folder / artifacts.HEADS)
    t0 = time.perf_counter()
    # The search space reads the CNN features before the heads' grid (Embedder.feature_dim).
    settings = SearchSpaceSettings(feature_dims=embedder_info["feature_dim"])
    space = fit_search_space(descriptors, ids, metadata.columns, views, view_ids, heads, settings, device)
    writer = None
    for start, chunk in row_chunks(descriptors):
        projected = space.project(chunk, heads)
        writer = writer or RowWriter(folder / artifacts.EMBEDDINGS, (len(descriptors), projected.shape[1]))
        writer.write(slice(start, start + len(chunk)), projected)
    search_vectors = RowFile(folder / artifacts.EMBEDDINGS)
    space_s = time.perf_counter() - t0
    space.save(folder / artifacts.PROJECTION)
    t0 = time.perf_counter()
    np.save(folder / artifacts.MAP, fit_map(search_vectors, ids))
    map_info = {
        "method": map_method(len(ids)),
        "fit_items": int(min(len(ids), MAX_MAP_FIT)),
        "fit_s": round(time.perf_counter() - t0, 1),
    }
    t0 = time.perf_counter()
    hnsw = build_hnsw(search_vectors)
    hnsw.save_index(str(folder / artifacts.INDEX))
    del hnsw
    index_s = time.perf_counter() - t0
    metadata.save(folder / artifacts.METADATA)
    timings = {"heads_train_s": round(heads_s, 1), "index_build_s": round(index_s, 2)}
    manifest = artifacts.make_manifest(
        embedder_info,
        text_model_info,
        source_info,
        params,
        timings,
        heads.describe(),
        dict(space.info, train_s=round(space_s, 1)),
        map_info,
        count=len(ids),
        feature_dim=int(descriptors.shape[1]),
        dim=int(search_vectors.shape[1]),
        skipped=skipped_source,
    )
    artifacts.write_manifest(folder, manifest)
    return manifest
