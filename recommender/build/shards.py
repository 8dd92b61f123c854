"""Shards: the embed stage's output, committed atomically every `SHARD_SIZE` stream positions into
`<out>.partial/shards/`, so an interrupted run resumes after the last complete one."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import artifacts
from ..files import sha256_file, write_atomic
from ..rowfile import RowFile, RowWriter
from ..words import catalog_text

if TYPE_CHECKING:
    from ..text_model import TextEncoder
    from .decode import Prepared

SHARD_SIZE = 1024
WORK_KEY = "work.json"


class ShardWriter:
    """Collects one shard's rows and commits them atomically; a shard file exists only when complete."""

    def __init__(self, folder: Path, number: int) -> None:
        self.number = number
        self.path = folder / f"shard-{number:05d}.npz"
        self.rows: list[dict] = []
        self.vectors: list[np.ndarray] = []
        self.texts: list[np.ndarray] = []
        self.skipped: list[list] = []
        self.views: list[np.ndarray] = []
        self.view_ids: list[int] = []

    def add(self, prepared: Prepared) -> None:
        """An embedded product: its row, descriptor and text vector (if already computed)."""
        item = prepared.item
        self.rows.append({"position": item.position, "id": item.id, "image_sha": prepared.image_sha, **item.attributes})
        self.vectors.append(prepared.vector)
        self.texts.append(prepared.text_vector)

    def add_view(self, item_id: int, vector: np.ndarray) -> None:
        self.view_ids.append(int(item_id))
        self.views.append(vector)

    def commit(self, text_encoder: TextEncoder | None = None) -> float:
        """Write the shard, encoding the texts of rows that have no text vector yet (one sorted pass over
        the shard: faster than batch by batch). Returns the seconds the text model took."""
        started = time.perf_counter()
        missing = [i for i, vector in enumerate(self.texts) if vector is None]
        if missing:
            for i, vector in zip(missing, text_encoder.encode([catalog_text(self.rows[i]) for i in missing])):
                self.texts[i] = vector
        text_s = time.perf_counter() - started
        vectors = np.stack(self.vectors) if self.vectors else np.zeros((0, 0), np.float32)
        texts = np.stack(self.texts) if self.texts else np.zeros((0, 0), np.float32)
        views = np.stack(self.views) if self.views else np.zeros((0, 0), np.float32)
        meta = json.dumps({"rows": self.rows, "skipped": self.skipped, "view_ids": self.view_ids}, ensure_ascii=False)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(
                    handle,
                    vectors=vectors.astype(np.float32),
                    views=views.astype(np.float32),
                    texts=texts.astype(np.float32),
                    meta=np.frombuffer(meta.encode(), np.uint8),
                )
                handle.flush()
                os.fsync(handle.fileno())

        write_atomic(self.path, write)
        # The checksum is written after the shard: a shard without one, or with bytes that no longer match
        # it, is not complete (complete_shards) and is embedded again.
        digest = sha256_file(self.path)
        write_atomic(checksum_path(self.path), lambda tmp: tmp.write_text(digest))
        return text_s


@dataclass
class Gathered:
    """What the shard files of a run hold besides the descriptors and text vectors (which `gather_shards`
    writes to row files), rows in stream order."""

    rows: list[dict]
    skipped: list[list]
    views: np.ndarray  # descriptors of synthetic shopper photos (bounded by augment.AUGMENT_WINDOW) ...
    view_ids: np.ndarray  # ... of these catalog items


def checksum_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".sha256")


def _intact(shard: Path) -> bool:
    try:
        return checksum_path(shard).read_text().strip() == sha256_file(shard)
    except OSError:
        return False


def complete_shards(folder: Path) -> int:
    """How many shards from the first on are complete and intact: where a rerun resumes. A damaged shard
    (its bytes do not match its checksum, or it has none) is removed, with every shard after it, to be
    embedded again."""
    resume_from = 0
    while (folder / f"shard-{resume_from:05d}.npz").is_file() and _intact(folder / f"shard-{resume_from:05d}.npz"):
        resume_from += 1
    damaged = folder / f"shard-{resume_from:05d}.npz"
    if damaged.is_file():
        print(f"{damaged.name} is damaged (its checksum does not match); it is embedded again.", flush=True)
    for shard in folder.glob("shard-*.npz"):
        if int(shard.stem.split("-")[1]) >= resume_from:
            shard.unlink()
            checksum_path(shard).unlink(missing_ok=True)
    return resume_from


def _meta(path: Path) -> dict:
    with np.load(path) as data:
        return json.loads(data["meta"].tobytes().decode())


def gather_shards(folder: Path, descriptors: Path, texts: Path) -> Gathered:
    """Write every committed row's descriptor and text vector to the row files `descriptors` and `texts`
    in stream order, one shard in memory at a time, and return the rest of what the shards hold."""
    paths = sorted(folder.glob("shard-*.npz"))
    metas = [_meta(path) for path in paths]
    rows = [row for meta in metas for row in meta["rows"]]
    order = np.argsort([r["position"] for r in rows], kind="stable")
    destination = np.empty(len(rows), np.int64)
    destination[order] = np.arange(len(rows))
    vector_file = text_file = None
    views, view_ids, skipped, start = [], [], [], 0
    for path, meta in zip(paths, metas):
        with np.load(path) as data:
            if meta["rows"]:
                vectors, text_vectors = data["vectors"], data["texts"]
                if vector_file is None:
                    vector_file = RowWriter(descriptors, (len(rows), vectors.shape[1]))
                    text_file = RowWriter(texts, (len(rows), text_vectors.shape[1]))
                where = destination[start : start + len(vectors)]
                vector_file.write(where, vectors)
                text_file.write(where, text_vectors)
                start += len(vectors)
            if meta["view_ids"]:
                views.append(data["views"])
        skipped += meta["skipped"]
        view_ids += meta["view_ids"]
    width = RowFile(descriptors).shape[1] if rows else 0
    return Gathered(
        [rows[i] for i in order],
        skipped,
        np.concatenate(views) if views else np.zeros((0, width), np.float32),
        np.asarray(view_ids, np.int64),
    )


def open_work(work: Path, key: dict) -> None:
    """Keep a partial run only if it was started with the same source, model and parameters (`key`)."""
    key_file = work / WORK_KEY
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
        write_atomic(key_file, lambda tmp: tmp.write_text(json.dumps(key, indent=1)))


def close_work(work: Path) -> None:
    """Drop what only a resume needs, before the work folder is published."""
    shutil.rmtree(work / "shards")
    (work / WORK_KEY).unlink()
    (work / artifacts.PROGRESS).unlink(missing_ok=True)
