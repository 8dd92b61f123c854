"""The artifacts directory: what it holds, its manifest and checksums, atomic publishing and
verification at load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import ArtifactsError
from .serve.index import HNSW_EF, HNSW_EF_CONSTRUCTION, HNSW_M

if TYPE_CHECKING:
    from .heads import Heads
    from .search_space import SearchSpace

# 4: text vectors (text_vectors.npy, text_model), the embedding map (map.npy); an older index is rebuilt.
SCHEMA_VERSION = 4
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"  # search-space vectors (projected), row i = index label i
# The descriptors: ResNet50 features (last stage 2048, third stage 1024) + 64-bin colour; heads and fitting read them.
FEATURES = "features.npy"
PROJECTION = "projection.npz"
INDEX = "index.hnsw"
TEXT_VECTORS = "text_vectors.npy"  # each product's catalog text through the text model, row i = label i
MAP = "map.npy"  # each product's 2-D position on the embedding map (embedding_map.fit_map), row i = label i
METADATA = "metadata.json"
HEADS = "heads.npz"
THUMBNAILS = "thumbnails"
CHECKSUMMED = (EMBEDDINGS, FEATURES, PROJECTION, INDEX, METADATA, HEADS, TEXT_VECTORS, MAP)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` then rename over `path`: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def thumbnails_digest(folder: Path) -> tuple[int, str]:
    """Count and one digest over every thumbnail's name and bytes (44k files: one number to check)."""
    h = hashlib.sha256()
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    for name in names:
        h.update(name.encode())
        h.update(hashlib.sha256((folder / name).read_bytes()).digest())
    return len(names), h.hexdigest()


def library_versions() -> dict[str, str]:
    """For the manifest. A library without package metadata (hnswlib built from source, datasets left
    out of an image that only reads folders) is recorded as such rather than failing the build."""
    from importlib.metadata import PackageNotFoundError, version

    def known(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return {
        name: known(name)
        for name in ("torch", "timm", "transformers", "hnswlib", "numpy", "pillow", "datasets", "onnxruntime")
    } | {"python": sys.version.split()[0]}


def make_manifest(
    model: dict,
    text_model: dict,
    source: dict,
    params: dict,
    timings: dict,
    heads: Heads,
    space: SearchSpace,
    space_train_s: float,
    map_info: dict,
    count: int,
    feature_dim: int,
    dim: int,
    skipped: dict[str, list],
) -> dict:
    """The manifest of a finished build (`write_manifest` adds the schema, date and checksums)."""
    return {
        "model": model,
        "text_model": dict(text_model, catalog_text="name. gender colour articleType usage"),
        "dim": dim,
        "feature_dim": feature_dim,
        "projection": dict(space.info, train_s=space_train_s),
        "map": map_info,
        "count": count,
        "source": source,
        "build": dict(
            params, hnsw={"space": "ip", "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef": HNSW_EF}, **timings
        ),
        "heads": heads.describe(),
        "skipped": {"counts": {k: len(v) for k, v in skipped.items()}, "items": skipped},
        "libraries": library_versions(),
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest = dict(manifest, schema_version=SCHEMA_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest["files"] = {name: sha256_file(folder / name) for name in CHECKSUMMED}
    count, digest = thumbnails_digest(folder / THUMBNAILS)
    manifest["thumbnails"] = {"count": count, "sha256": digest}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))


def read_manifest(folder: Path, verify: bool = True) -> dict:
    """The manifest, after checking that every file is there and unchanged; one sentence if not."""
    rebuild = f"rebuild it with `python scripts/precompute.py --source SRC --out {folder}`"
    if not (folder / MANIFEST).is_file():
        if folder.with_name(folder.name + ".partial").is_dir():
            raise ArtifactsError(
                f"The index at {folder} is still being built; wait for precompute to finish (or rerun it to resume)."
            )
        raise ArtifactsError(f"No index at {folder} (manifest.json missing); {rebuild}.")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactsError(f"{folder / MANIFEST} is not valid JSON; {rebuild}.") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactsError(
            f"The index at {folder} has schema version {manifest.get('schema_version')}, "
            f"this code reads {SCHEMA_VERSION}; {rebuild}."
        )
    if not verify:
        return manifest
    for name in CHECKSUMMED:
        path = folder / name
        if not path.is_file():
            raise ArtifactsError(f"{path} is missing; {rebuild}.")
        if sha256_file(path) != manifest.get("files", {}).get(name):
            raise ArtifactsError(
                f"{path} does not match its checksum in manifest.json (truncated or edited); {rebuild}."
            )
    count, digest = thumbnails_digest(folder / THUMBNAILS)
    if (count, digest) != (manifest["thumbnails"]["count"], manifest["thumbnails"]["sha256"]):
        raise ArtifactsError(
            f"The thumbnails in {folder / THUMBNAILS} do not match manifest.json ({count} files, "
            f"{manifest['thumbnails']['count']} expected); restore that folder or {rebuild}."
        )
    return manifest


def publish(staging: Path, final: Path) -> None:
    """Move a finished staging directory to its final name so that no reader ever sees half of it."""
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def download_from_hub(repo_id: str, dest: Path, repo_type: str = "dataset") -> Path:
    """Fetch an artifacts directory published on the Hub (for a Space), verified like a local one."""
    from huggingface_hub import snapshot_download

    staging = dest.with_name(dest.name + ".download")
    try:
        snapshot_download(repo_id, repo_type=repo_type, local_dir=str(staging))
    except Exception as exc:  # network, auth, unknown repo: one sentence for the operator
        raise ArtifactsError(
            f"Could not download the index from the Hub repo {repo_id} ({type(exc).__name__}); "
            "check RECOMMENDER_INDEX_REPO and the Space's network/token."
        ) from None
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    read_manifest(staging)
    publish(staging, dest)
    return dest
