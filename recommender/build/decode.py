"""Decoding: catalog items -> model inputs, synthetic views and thumbnails, in forked processes that run
ahead of the model."""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..augment import gets_view, shopper_view
from ..catalog import CatalogItem, SkippedRow
from ..embedder import Embedder, Preprocessor
from ..errors import ImageError
from ..images import load_image
from .gpu_decode import TensorPreprocessor, gpu_decodable

THUMB_MAX_SIDE = 256  # the catalog's own 60x80 JPEGs are kept byte for byte; larger ones are shrunk
CHUNK = 8  # items per task: fewer round trips, still small enough to spread a batch over many processes

Input = tuple[np.ndarray, np.ndarray]  # what a Preprocessor returns: uint8 pixels, colour histogram


@dataclass
class Prepared:
    item: CatalogItem | SkippedRow
    input: Input | None
    view: Input | None  # a synthetic shopper photo of the item, for training the search space
    thumbnail: bytes | None
    image_sha: str
    error: str | None
    vector: np.ndarray | None = None  # the descriptors, once embedded (`embed_prepared`) ...
    view_vector: np.ndarray | None = None  # ... of the photo and of its view
    text_vector: np.ndarray | None = None  # its catalog text through the text model, where computed early
    on_device: bool = False  # its photo is decoded and preprocessed by the model's process, on its device


def prepare_item(item: CatalogItem | SkippedRow, preprocess: Preprocessor, on_device: bool = False) -> Prepared:
    """Decode, preprocess and make the thumbnail of one item. `on_device`: leave the photo's pixels to
    the model's device (`TensorPreprocessor`) where it can decode them; a photo is then decoded here
    only for a synthetic view or a thumbnail to shrink."""
    if isinstance(item, SkippedRow):
        return Prepared(item, None, None, None, "", item.reason)
    if item.data is None:
        return Prepared(item, None, None, None, "", "row without an image")
    size = gpu_decodable(item.data) if on_device else None
    decodable, wants_view, image = size is not None, gets_view(item.id, item.position), None
    if not decodable or wants_view or max(size) > THUMB_MAX_SIDE:
        try:
            image = load_image(item.data)
        except ImageError:
            return Prepared(item, None, None, None, "", "image that cannot be decoded")
        size = image.size
    if max(size) <= THUMB_MAX_SIDE and item.data[:3] == b"\xff\xd8\xff":
        thumbnail = item.data
    else:
        small = image.copy()
        small.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=90)
        thumbnail = buffer.getvalue()
    view = preprocess(shopper_view(image, seed=int(item.id))) if wants_view else None
    pixels = None if decodable else preprocess(image)
    return Prepared(item, pixels, view, thumbnail, hashlib.sha256(item.data).hexdigest(), None, on_device=decodable)


def embed_prepared(
    embedder: Embedder, batch: list[Prepared], on_device: TensorPreprocessor | None = None
) -> list[Prepared]:
    """Descriptors of a batch's photos and views, kept on each item in place of its pixels; photos left
    to the device are preprocessed there first (`on_device`)."""
    if waiting := [p for p in batch if p.on_device]:
        if on_device is None:
            raise ValueError("photos were left to the device's decoder, and none was given")
        for prepared, made in zip(waiting, on_device([p.item.data for p in waiting])):
            prepared.input = made if made is not None else _decoded_here(embedder, prepared.item.data)
            if prepared.input is None:
                prepared.error, prepared.view = "image that cannot be decoded", None
    good = [p for p in batch if p.input is not None]
    viewed = [p for p in good if p.view is not None]
    if good:
        # Catalog photos and synthetic views share one forward pass: fuller batches, one code path.
        vectors = embedder.descriptors([p.input for p in good] + [p.view for p in viewed])
        for prepared, vector in zip(good, vectors):
            prepared.vector = vector
        for prepared, vector in zip(viewed, vectors[len(good) :]):
            prepared.view_vector = vector
    for prepared in batch:
        prepared.input = prepared.view = None
    return batch


def _decoded_here(embedder: Embedder, data: bytes) -> Input | None:
    """The CPU loader's take on a photo the device's decoder refused (it decodes a little less)."""
    try:
        return embedder.preprocess(load_image(data))
    except ImageError:
        return None


_WORKER: dict = {}  # in a decode process: its Preprocessor and whether photos are left to the device


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


def _start_worker(parent: int, preprocess: Preprocessor, on_device: bool) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: one message, no traces
    torch.set_num_threads(1)  # one core per process
    _WORKER.update(preprocess=preprocess, on_device=on_device)


def _prepare_chunk(items: list[CatalogItem | SkippedRow]) -> list[Prepared]:
    """In a decode process: prepare items (their model inputs are uint8 numpy arrays: cheap to send)."""
    return [prepare_item(item, _WORKER["preprocess"], _WORKER["on_device"]) for item in items]


def default_workers(embedder: Embedder) -> int:
    """Decode processes. On the CPU one is enough (it prepares several times what the model embeds) and
    leaves the cores to the model; a GPU outruns one decode process 50 times over, so there every core
    but the main process's helps (docs/benchmarks.md)."""
    if embedder.device.type != "cuda":
        return 1
    return max(1, (os.cpu_count() or 2) - 1)


def decodes_on_device(embedder: Embedder) -> bool:
    """Whether a build leaves the catalog's JPEGs to the model's device: on a GPU, where 15 CPU processes
    prepared ~2,100 items/s for a model that runs ~11,000 (docs/benchmarks.md#gpu)."""
    return embedder.device.type == "cuda"


def device_preprocessor(embedder: Embedder) -> TensorPreprocessor:
    return TensorPreprocessor(embedder.preprocessor, embedder.device)


def decode_pool(embedder: Embedder, workers: int, on_device: bool = False) -> ProcessPoolExecutor:
    """`workers` decode processes, forked (as torch's DataLoader does): spawn and forkserver would re-run
    the main module in every worker (app.py imports Gradio; a script fed on stdin cannot be re-run at
    all) and take seconds to start. The workers touch neither the GPU nor torch's thread pool;
    `on_device`: they leave the photos the device decodes to it."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(os.getpid(), embedder.preprocessor, on_device),
    )


def prepared_batches(
    items: Iterable[CatalogItem | SkippedRow], batch_size: int, pool: ProcessPoolExecutor, workers: int
) -> Iterator[list[Prepared]]:
    """Batches in stream order, prepared by the pool while the model works on earlier ones; enough
    chunks in flight to keep every decode process busy."""
    ahead = max(1, math.ceil(2 * workers * CHUNK / batch_size))
    in_flight: deque[list[Future]] = deque()

    def collect(futures: list[Future]) -> list[Prepared]:
        return [p for future in futures for p in future.result()]

    items = iter(items)
    while batch := list(itertools.islice(items, batch_size)):
        in_flight.append([pool.submit(_prepare_chunk, batch[i : i + CHUNK]) for i in range(0, len(batch), CHUNK)])
        if len(in_flight) > ahead:
            yield collect(in_flight.popleft())
    while in_flight:
        yield collect(in_flight.popleft())
