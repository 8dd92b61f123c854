"""Updating a published index from a changed catalog, without a rebuild: products are matched by id and
image checksum; only new photos go through the model (every other descriptor, text vector and thumbnail
is reused), the index's fitted parts (heads, search space, map) place them, and the new version is
published atomically beside the old. Past a measured amount of change the fitted parts go stale: the
update says so, and `refit` trains them again from the stored descriptors."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import artifacts, ort_int8
from ..catalog import CatalogSource, SkippedRow
from ..embedder import Embedder
from ..embedding_map import place
from ..errors import UserError
from ..heads import MIN_CLASS_COUNT, Heads
from ..hnsw import build_hnsw, top_k
from ..index_models import check_text_model, follow_index
from ..metadata import Metadata
from ..rowfile import CHUNK_ROWS, RowFile, RowWriter, row_chunks
from ..search_space import SearchSpace
from ..text_model import TextEncoder
from ..vocabulary import ATTRIBUTE_COLUMNS, HEAD_COLUMNS
from ..words import catalog_text
from .decode import embed_prepared, prepare_item
from .fitting import fit_and_index

# Past this share of new photos (added or changed products) since the heads and search space were last
# fitted, an update says a refit is due: the updated index's P@10 fell behind a rebuild's by 0.3 points
# with 5% new products, 0.7 with 10%, 1.7 with 20% (docs/experiments.md#refit-threshold).
REFIT_SHARE = 0.05
MAP_NEIGHBOURS = 10  # a new product's place on the map: the mean of its nearest products' places
BATCH_SIZE = 16


@dataclass
class Changes:
    """What an update found, by product id."""

    added: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # a new photo: embedded again
    relabelled: list[int] = field(default_factory=list)  # the same photo, other attributes: new text only
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, list] = field(default_factory=dict)
    # Per head: labels of new or changed products that the head has never learned, with their counts.
    unseen_labels: dict[str, dict[str, int]] = field(default_factory=dict)
    views: dict[int, np.ndarray] = field(default_factory=dict)  # synthetic views of the embedded products

    def describe(self) -> dict:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "relabelled": len(self.relabelled),
            "removed": len(self.removed),
            "unchanged": self.unchanged,
            "skipped": {reason: len(ids) for reason, ids in self.skipped.items()},
            "unseen_labels": self.unseen_labels,
            "ids": {
                "added": self.added,
                "changed": self.changed,
                "relabelled": self.relabelled,
                "removed": self.removed,
            },
        }


@dataclass
class _Index:
    """The published index an update starts from (its descriptors and vectors stay on disk)."""

    folder: Path
    manifest: dict
    metadata: Metadata
    heads: Heads
    space: SearchSpace
    embeddings: np.ndarray
    positions: np.ndarray

    @classmethod
    def open(cls, folder: Path, embedder: Embedder, text_encoder: TextEncoder) -> _Index:
        """The index at `folder`, verified, with `embedder` made to follow it; one sentence if the models
        are not the ones that built it."""
        manifest = artifacts.read_manifest(folder)
        follow_index(folder, manifest, embedder)
        check_text_model(folder, manifest, text_encoder)
        return cls(
            folder,
            manifest,
            Metadata.load(folder / artifacts.METADATA),
            Heads.load(folder / artifacts.HEADS, manifest["heads"]),
            SearchSpace.load(folder / artifacts.PROJECTION, manifest["projection"]),
            np.load(folder / artifacts.EMBEDDINGS, mmap_mode="r"),
            np.load(folder / artifacts.MAP),
        )


@dataclass
class _Row:
    """One product of the new catalog: where its descriptor and text vector come from."""

    position: int
    id: int
    attributes: dict[str, str]
    image_sha: str
    old_row: int | None  # its row in the old index, when its descriptor is reused
    new_text: bool  # its text vector is computed again


def update(
    source: CatalogSource,
    out: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    refit: bool = False,
    progress: bool = True,
) -> dict:
    """Bring the index at `out` to the catalog `source` is now, and publish it as a new version; `refit`:
    train the heads, search space and map again on the updated descriptors. Returns the new manifest."""
    out = Path(out)
    with artifacts.build_lock(out), artifacts.disk_full_as_sentence(f"the index at {out}"):
        artifacts.recover(out)
        old = _Index.open(out, embedder, text_encoder)
        work = out.with_name(out.name + ".update")
        if work.exists():
            shutil.rmtree(work)  # an update interrupted before its publish: nothing of it was published
        (work / artifacts.THUMBNAILS).mkdir(parents=True)
        try:
            manifest, changes = _make_version(source, old, work, embedder, text_encoder, refit, progress)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # the old version stays the published one
            raise
        if manifest is None:
            shutil.rmtree(work)
            print(f"The index at {out} already holds this catalog; nothing was published.", flush=True)
            return old.manifest
        artifacts.publish(work, out)
    since = manifest["update"]["since_fit"]
    due = [] if refit else _refit_reasons(changes, since["new"] / max(since["fitted"], 1))
    if due:
        print(
            f"A refit is due ({'; '.join(due)}): run the same command with --refit to train the heads, search "
            "space and map again from the stored descriptors (nothing is embedded again).",
            flush=True,
        )
    return manifest


def _make_version(
    source: CatalogSource,
    old: _Index,
    work: Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    refit: bool,
    progress: bool,
) -> tuple[dict | None, Changes]:
    """The updated index, complete in `work` (manifest last), and what changed; None when nothing did."""
    started = time.perf_counter()
    rows, changes, vectors = _compare_and_embed(source, old, work, embedder, progress)
    if not rows:
        raise UserError(f"The catalog at {source.source} has no product the index can hold; nothing was changed.")
    embed_s = time.perf_counter() - started
    if not (refit or changes.added or changes.changed or changes.relabelled or changes.removed):
        return None, changes
    _write_rows(old, rows, vectors, text_encoder, work)
    changes.unseen_labels = _unseen_labels(old, rows)
    # Every product removed by an update since the last full build, so a request for one hears it is gone.
    previous = old.manifest.get("update", {})
    earlier = previous.get("removed_ids", [])
    present = {r.id for r in rows}
    # New photos since the fitted parts were fitted (by a build or a refit), against the products they were
    # fitted on: what makes a refit due.
    stale = previous.get("since_fit") if previous and not previous.get("refit") else None
    since_fit = {
        "fitted": len(rows) if refit else (stale or {}).get("fitted", old.manifest["count"]),
        "new": 0 if refit else (stale or {}).get("new", 0) + len(changes.added) + len(changes.changed),
    }
    record = {
        "from": {"created": old.manifest["created"], "count": old.manifest["count"]},
        **changes.describe(),
        "removed_ids": sorted({int(i) for i in earlier if int(i) not in present} | set(changes.removed)),
        "since_fit": since_fit,
        "embed_s": round(embed_s, 1),
        "refit": refit,
    }
    source_info = dict(source.describe())
    skipped = {k: list(v) for k, v in changes.skipped.items()}
    if refit:
        return _refit(old, rows, changes, work, source_info, skipped, record), changes
    return _apply_fitted(old, rows, changes, work, source_info, skipped, record), changes


def _compare_and_embed(
    source: CatalogSource, old: _Index, work: Path, embedder: Embedder, progress: bool
) -> tuple[list[_Row], Changes, dict[int, np.ndarray]]:
    """The new catalog's rows in stream order, what changed, and the descriptors of the products whose
    photo is new (by id); their thumbnails are written to `work`, every other one linked from the index."""
    md, changes, rows, vectors = old.metadata, Changes(), [], {}
    seen: set[int] = set()
    batch: list = []
    thumbs, old_thumbs = work / artifacts.THUMBNAILS, old.folder / artifacts.THUMBNAILS

    def embed(batch: list) -> None:
        for prepared in embed_prepared(embedder, batch):
            item = prepared.item
            if prepared.error:
                changes.skipped.setdefault(prepared.error, []).append(item.id)
                continue
            (thumbs / f"{item.id}.jpg").write_bytes(prepared.thumbnail)
            vectors[item.id] = prepared.vector
            if prepared.view_vector is not None:  # a synthetic view, as a build makes: kept for a refit
                changes.views[item.id] = prepared.view_vector
            (changes.changed if md.row_of(item.id) is not None else changes.added).append(item.id)
            rows.append(_Row(item.position, item.id, item.attributes, prepared.image_sha, None, True))

    bar = tqdm(total=source.limit, unit="img", disable=not progress, desc="comparing")
    for item in source.rows(0):
        bar.update(1)
        if isinstance(item, SkippedRow):
            changes.skipped.setdefault(item.reason, []).append(item.id)
            continue
        if item.id in seen:
            raise UserError(
                f"The catalog at {source.source} lists product {item.id} twice; remove the duplicate row and run "
                "the update again (the index is unchanged)."
            )
        seen.add(item.id)
        row = md.row_of(item.id)
        sha = hashlib.sha256(item.data).hexdigest() if item.data is not None else ""
        if row is not None and sha and sha == md.image_sha[row]:
            relabelled = md.attributes(row) != item.attributes
            if relabelled:
                changes.relabelled.append(item.id)
            else:
                changes.unchanged += 1
            try:  # a hard link: no second copy of a catalog's thumbnails
                os.link(old_thumbs / f"{item.id}.jpg", thumbs / f"{item.id}.jpg")
            except OSError:
                shutil.copy2(old_thumbs / f"{item.id}.jpg", thumbs / f"{item.id}.jpg")
            rows.append(_Row(item.position, item.id, item.attributes, sha, row, relabelled))
            continue
        batch.append(prepare_item(item, embedder.preprocessor))
        if len(batch) == BATCH_SIZE:
            embed(batch)
            batch = []
    if batch:
        embed(batch)
    bar.close()
    changes.removed = [int(i) for i in md.ids if int(i) not in seen]
    rows.sort(key=lambda r: r.position)  # stream order, as a full build orders them (batches arrive late)
    for reason, ids in source.skipped.reasons.items():
        changes.skipped.setdefault(reason, []).extend(ids)
    if unlisted := source.unlisted_images():
        changes.skipped.setdefault("image without a styles.csv row", []).extend(unlisted)
    return rows, changes, vectors


def _write_rows(
    old: _Index, rows: list[_Row], vectors: dict[int, np.ndarray], text_encoder: TextEncoder, work: Path
) -> None:
    """The descriptors, text vectors and metadata of `rows` into `work`: the old index's where reused."""
    old_features = np.load(old.folder / artifacts.FEATURES, mmap_mode="r")
    old_texts = np.load(old.folder / artifacts.TEXT_VECTORS, mmap_mode="r")
    fresh = [r for r in rows if r.new_text]
    texts = dict(zip((r.id for r in fresh), text_encoder.encode([catalog_text(r.attributes) for r in fresh])))
    features = RowWriter(work / artifacts.FEATURES, (len(rows), old_features.shape[1]))
    text_file = RowWriter(work / artifacts.TEXT_VECTORS, (len(rows), old_texts.shape[1]))
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows[start : start + CHUNK_ROWS]
        where = slice(start, start + len(part))
        features.write(where, np.stack([vectors[r.id] if r.old_row is None else old_features[r.old_row] for r in part]))
        text_file.write(where, np.stack([texts[r.id] if r.new_text else old_texts[r.old_row] for r in part]))
    Metadata(
        [r.id for r in rows],
        {c: [r.attributes[c] for r in rows] for c in ATTRIBUTE_COLUMNS},
        [r.image_sha for r in rows],
    ).save(work / artifacts.METADATA)
    if (old.folder / ort_int8.GRAPH_FILE).is_file():  # queries run the build's int8 graph
        shutil.copy2(old.folder / ort_int8.GRAPH_FILE, work / ort_int8.GRAPH_FILE)


def _unseen_labels(old: _Index, rows: list[_Row]) -> dict[str, dict[str, int]]:
    """Per head, the labels of new or changed products that the head does not know (it can never answer
    them; filters and words still find the products), with how many products carry each."""
    unseen: dict[str, dict[str, int]] = {}
    for column in HEAD_COLUMNS:
        if column not in old.heads:
            continue
        known = set(old.heads[column].classes)
        for r in rows:
            label = r.attributes[column]
            if (r.old_row is None or r.new_text) and label and label not in known:
                unseen.setdefault(column, {}).setdefault(label, 0)
                unseen[column][label] += 1
    return unseen


def _refit_reasons(changes: Changes, share: float) -> list[str]:
    reasons = []
    if share > REFIT_SHARE:
        reasons.append(f"{share:.0%} of the catalog has new photos since the last fit")
    for column, labels in changes.unseen_labels.items():
        # A label needs MIN_CLASS_COUNT products before a head learns it: fewer are left to filters and words.
        learnable = {label: n for label, n in labels.items() if n >= MIN_CLASS_COUNT}
        if learnable:
            names = ", ".join(f"{label} ({n})" for label, n in sorted(learnable.items(), key=lambda t: -t[1])[:3])
            reasons.append(f"new {column} labels the heads have not learned: {names}")
    return reasons


def _views(old: _Index, rows: list[_Row], changes: Changes) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic views of the updated catalog: the index's of products whose photo is unchanged, and
    those made of the photos embedded now."""
    views, view_ids = artifacts.load_views(old.folder)
    kept = np.isin(view_ids, [r.id for r in rows if r.old_row is not None])
    views, view_ids = views[kept] if len(views) else views, view_ids[kept]
    if changes.views:
        new_ids = np.array(list(changes.views), np.int64)
        fresh = np.stack(list(changes.views.values()))
        views = np.concatenate([views, fresh]) if len(views) else fresh
        view_ids = np.concatenate([view_ids, new_ids])
    return views, view_ids


def _apply_fitted(
    old: _Index,
    rows: list[_Row],
    changes: Changes,
    work: Path,
    source_info: dict,
    skipped: dict[str, list],
    record: dict,
) -> dict:
    """The index's heads and search space applied to the new descriptors (unchanged products keep their
    vectors and places); new products placed on the map beside their nearest products; the HNSW graph built
    again (seconds: docs/results.md)."""
    for name in (artifacts.HEADS, artifacts.PROJECTION):
        shutil.copy2(old.folder / name, work / name)
    artifacts.save_views(work, *_views(old, rows, changes))
    descriptors = RowFile(work / artifacts.FEATURES)
    embeddings = RowWriter(work / artifacts.EMBEDDINGS, (len(rows), old.embeddings.shape[1]))
    positions = np.empty((len(rows), 2), np.float32)
    for start, chunk in row_chunks(descriptors):
        part = rows[start : start + len(chunk)]
        kept = np.array([r.old_row is not None for r in part])
        # A product whose photo is unchanged keeps its vector and place: the same fitted parts would give
        # them again from its unchanged descriptor.
        projected = np.empty((len(chunk), old.embeddings.shape[1]), np.float32)
        if kept.any():
            old_rows = [r.old_row for r in part if r.old_row is not None]
            projected[kept] = old.embeddings[old_rows]
            positions[start + np.flatnonzero(kept)] = old.positions[old_rows]
        if not kept.all():
            projected[~kept] = old.space.project(chunk[~kept], old.heads)
            for offset in np.flatnonzero(~kept):  # placed by exact neighbours among the old index's products
                neighbours = top_k(old.embeddings @ projected[offset], MAP_NEIGHBOURS)
                positions[start + offset] = place(old.positions, neighbours)
        embeddings.write(slice(start, start + len(chunk)), projected)
    np.save(work / artifacts.MAP, positions)
    t0 = time.perf_counter()
    hnsw = build_hnsw(RowFile(work / artifacts.EMBEDDINGS))
    hnsw.save_index(str(work / artifacts.INDEX))
    del hnsw
    built = old.manifest["build"]
    manifest = artifacts.make_manifest(
        old.manifest["model"],
        old.manifest["text_model"],
        source_info,
        {k: v for k, v in built.items() if k != "hnsw"},
        {"index_build_s": round(time.perf_counter() - t0, 2)},
        old.manifest["heads"],
        old.manifest["projection"],
        old.manifest["map"],
        count=len(rows),
        feature_dim=int(descriptors.shape[1]),
        dim=int(old.embeddings.shape[1]),
        skipped=skipped,
    )
    manifest["update"] = record
    artifacts.write_manifest(work, manifest)
    return manifest


def _refit(
    old: _Index,
    rows: list[_Row],
    changes: Changes,
    work: Path,
    source_info: dict,
    skipped: dict[str, list],
    record: dict,
) -> dict:
    """The heads, search space and map trained again on the updated descriptors and the synthetic views
    (the index's, of products whose photo did not change, and those made now), as a full build fits them."""
    views, view_ids = _views(old, rows, changes)
    metadata = Metadata.load(work / artifacts.METADATA)
    built = {k: v for k, v in old.manifest["build"].items() if k not in ("hnsw", "heads_train_s", "index_build_s")}
    manifest = fit_and_index(
        work,
        metadata,
        views,
        view_ids,
        old.manifest["model"],
        {k: v for k, v in old.manifest["text_model"].items() if k != "catalog_text"},
        source_info,
        skipped,
        built,
    )
    manifest["update"] = record
    artifacts.write_manifest(work, manifest)
    return manifest
