"""The artifacts directory: what it holds, its manifest and checksums, atomic publishing and
verification at load."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ArtifactsError
from .files import sha256_file, write_atomic
from .hnsw import HNSW_EF, HNSW_EF_CONSTRUCTION, HNSW_M

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
PROGRESS = "progress.json"  # in a build's work folder: BuildProgress
THUMBNAILS = "thumbnails"
CHECKSUMMED = (EMBEDDINGS, FEATURES, PROJECTION, INDEX, METADATA, HEADS, TEXT_VECTORS, MAP)
# The build's synthetic shopper views (descriptors and product ids), kept for a refit of the fitted parts
# without embedding anything again; indexes made before it have none, so it is checked where listed.
VIEWS = "views.npz"
OPTIONAL = (VIEWS,)


def save_views(folder: Path, views: np.ndarray, view_ids: np.ndarray) -> None:
    np.savez(folder / VIEWS, descriptors=np.asarray(views, np.float32), ids=np.asarray(view_ids, np.int64))


def load_views(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors, product ids) of the index's synthetic views; none for an index made before they were kept."""
    if not (folder / VIEWS).is_file():
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    with np.load(folder / VIEWS) as data:
        return data["descriptors"], data["ids"]


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
    heads: dict,
    projection: dict,
    map_info: dict,
    count: int,
    feature_dim: int,
    dim: int,
    skipped: dict[str, list],
) -> dict:
    """The manifest of a finished build (`write_manifest` adds the schema, date and checksums); `heads`
    and `projection`: the fitted parts' descriptions."""
    return {
        "model": model,
        "text_model": dict(text_model, catalog_text="name. gender colour articleType usage"),
        "dim": dim,
        "feature_dim": feature_dim,
        "projection": projection,
        "map": map_info,
        "count": count,
        "source": source,
        "build": dict(
            params, hnsw={"space": "ip", "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef": HNSW_EF}, **timings
        ),
        "heads": heads,
        "skipped": {"counts": {k: len(v) for k, v in skipped.items()}, "items": skipped},
        "libraries": library_versions(),
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest = dict(manifest, schema_version=SCHEMA_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    present = CHECKSUMMED + tuple(name for name in OPTIONAL if (folder / name).is_file())
    manifest["files"] = {name: sha256_file(folder / name) for name in present}
    count, digest = thumbnails_digest(folder / THUMBNAILS)
    manifest["thumbnails"] = {"count": count, "sha256": digest}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))


def read_manifest(folder: Path, verify: bool = True) -> dict:
    """The manifest, after checking that every file is there and unchanged; one sentence if not."""
    rebuild = f"rebuild it with `python scripts/precompute.py --source SRC --out {folder}`"
    if not (folder / MANIFEST).is_file():
        check_published(folder)
        if partial_of(folder).is_dir():
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
    for name in CHECKSUMMED + tuple(name for name in OPTIONAL if name in manifest.get("files", {})):
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


@dataclass(frozen=True)
class BuildProgress:
    """How far a build of an index has come, as its work folder records it (for a page to show)."""

    indexed: int  # catalog rows embedded so far (a resumed build counts its complete shards)
    total: int | None  # rows in the catalog, None where the source cannot tell
    stage: str  # "embedding", then "fitting"


def partial_of(final: Path) -> Path:
    """The work folder of a build of `final`: its resumable shards, until it is published."""
    return final.with_name(final.name + ".partial")


def write_progress(work: Path, progress: BuildProgress) -> None:
    path = work / PROGRESS
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(asdict(progress))))


def read_progress(final: Path) -> BuildProgress | None:
    """The progress of a build of `final` under way (or stopped), None where there is none to read."""
    try:
        return BuildProgress(**json.loads((partial_of(final) / PROGRESS).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def versions_of(final: Path) -> Path:
    """Where the published versions of the directory `final` live; `final` is a link to one of them."""
    return final.with_name(final.name + ".versions")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2)  # AT_FDCWD, RENAME_EXCHANGE
    except (OSError, AttributeError):
        return False
    return done == 0


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _link(final: Path, version: Path) -> Path:
    """A new symbolic link beside `final` to `version` (relative, so the pair can be moved together)."""
    link = final.with_name(final.name + ".link")
    _remove(link)
    os.symlink(os.path.relpath(version, final.parent), link)
    return link


def publish(staging: Path, final: Path) -> Path:
    """Make the finished directory `staging` what `final` names, in one atomic step: it becomes a version
    in `final.versions/`, and `final`, a symbolic link, is turned to it by one rename. A reader, or a kill
    at any moment, finds the old directory or the new one, never none. The version it replaces stays until
    the next publish: an app serving it swaps within seconds (serve.follow), and until then its answers
    name that version's thumbnails. Older versions are removed (a process still reading one keeps its
    open files)."""
    versions = versions_of(final)
    versions.mkdir(parents=True, exist_ok=True)
    replaced = final.resolve() if final.is_symlink() else None
    version = versions / f"v{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}"
    os.replace(staging, version)
    link = _link(final, version)
    if final.is_dir() and not final.is_symlink():  # a directory from before versions (or a copy): swapped whole
        if not _exchange(link, final):
            # No atomic exchange on this file system: for a moment `final` is missing, which readers
            # report (check_published) and the next publish or precompute completes (recover).
            os.replace(final, version.with_name(version.name + ".old"))
            os.replace(link, final)
    else:
        os.replace(link, final)
    _sync_folder(final.parent)
    for old in versions.iterdir():
        if old not in (version, replaced):
            _remove(old)
    _remove(link)  # the swapped-out directory, if there was one
    return version


def half_published(final: Path) -> Path | None:
    """The newest complete version when `final` itself is missing (a publish stopped half-way), else None."""
    if final.exists() or final.is_symlink():
        return None
    versions = versions_of(final)
    done = sorted(
        v for v in (versions.iterdir() if versions.is_dir() else ()) if (v / MANIFEST).is_file() and v.suffix != ".old"
    )
    return done[-1] if done else None


def check_published(final: Path) -> None:
    """One sentence if `final` was left half-published, instead of a reader taking it for missing."""
    if half_published(final) is not None:
        raise ArtifactsError(
            f"The index at {final} was left half-published by a build that stopped; rerun the same "
            "precompute command (it finishes publishing first)."
        )


def recover(final: Path) -> bool:
    """Finish a publish that stopped half-way: `final` linked to the newest complete version."""
    version = half_published(final)
    if version is None:
        return False
    os.replace(_link(final, version), final)
    print(f"Finished publishing {final}, which a stopped build had left half-published.", flush=True)
    return True


@contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """One build at a time on `final` (a lock the system drops when the process ends, however it ends)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(final.name + ".lock")
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ArtifactsError(
                f"Another build is writing {final} (process {holder}); wait for it to finish or use another --out."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing drops the lock


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextmanager
def disk_full_as_sentence(what: str) -> Iterator[None]:
    """A full disk (or a file-size limit) while writing becomes one sentence: what to do, and that a rerun
    resumes."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        raise ArtifactsError(
            f"The disk is full{where} while writing {what}; free some space and rerun the same command: "
            "it resumes from the last complete shard."
        ) from None


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
