"""Ray Data as the build's distributed engine: the catalog is read and decoded by Ray tasks, a shard's
stretch of rows each, and embedded by a pool of actors (one per GPU where the cluster has GPUs; on CPUs
Ray runs the decoding inside the actors) that also put each product's text through the text model; the
rows come back to the driver in stream order, where the shards, the fitting and the atomic publish run
exactly as on one machine. Ray Data retries failed tasks and restarts dead actors (its defaults); a
killed driver reruns and resumes after the shards already written.

Ray is optional (requirements-scale.txt): nothing else imports this module."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalog import CatalogSource
from ..embedder import Embedder
from ..errors import UserError
from ..text_model import TextEncoder
from ..words import catalog_text
from .decode import Prepared, embed_prepared, prepare_item

if TYPE_CHECKING:
    import pyarrow as pa

DECODE_ROWS = 64  # decoded items a block carries (~10 MB of pixels): small enough to stream


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "--engine ray needs Ray: pip install -r requirements-scale.txt (or use the default engine)."
        ) from None
    return ray


def _absolute(location: str | None) -> str | None:
    """A local path as an absolute one (Ray's workers need not share the driver's working directory);
    a Hub id or None as it is."""
    return str(Path(location).resolve()) if location and Path(location).exists() else location


def _pack(items: list[Prepared]) -> pa.Table:
    """A block of Prepared items as Ray Data carries them: one pickled item a row, as an Arrow column of
    bytes (Ray would otherwise infer the column's type from a numpy array of objects, row by row)."""
    import pyarrow as pa

    return pa.table({"prepared": pa.array([pickle.dumps(p, protocol=5) for p in items], type=pa.large_binary())})


def _unpack(batch: dict) -> list[Prepared]:
    return [pickle.loads(row) for row in batch["prepared"]]


def _decode_stretches(batch: dict, source: str, limit: int | None, preprocess) -> Iterator[pa.Table]:
    """A Ray task: read and decode stretches [start, stop) of the stream, in blocks of DECODE_ROWS."""
    catalog = CatalogSource(source, limit)
    for start, stop in zip(batch["start"], batch["stop"]):
        block = []
        for row in catalog.rows(int(start), int(stop)):
            block.append(prepare_item(row, preprocess))
            if len(block) == DECODE_ROWS:
                yield _pack(block)
                block = []
        if block:
            yield _pack(block)


def encode_texts(text_encoder: TextEncoder, batch: list[Prepared]) -> list[Prepared]:
    """The text vectors of a batch's embedded products, on the actor (the driver has only writing left)."""
    good = [p for p in batch if p.error is None]
    if good:
        for prepared, vector in zip(good, text_encoder.encode([catalog_text(p.item.attributes) for p in good])):
            prepared.text_vector = vector
    return batch


class _EmbedActor:
    """A Ray actor holding an Embedder and a TextEncoder, computing descriptors and text vectors the way
    the driver's models do."""

    def __init__(
        self,
        weights: str | None,
        built: dict,
        graph: bytes | None,
        text_model: str | None,
        text_sha256: str,
        device: str,
        threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(threads)
        self.embedder = Embedder(weights, device=device)
        self.text_encoder = TextEncoder(text_model, device=self.embedder.device)
        if self.embedder.weights_sha256 != built["weights_sha256"] or self.text_encoder.sha256 != text_sha256:
            raise UserError(
                f"The models a Ray worker loaded ({weights}, {text_model}) are not the build's; give every node "
                "the same files."
            )
        self.embedder.detail_side = built["preprocessing"].get("detail_side")
        self.embedder.follow(built, "the build", graph)  # graph: ONNX Runtime's int8, where the build runs it

    def __call__(self, batch: dict) -> pa.Table:
        prepared = embed_prepared(self.embedder, _unpack(batch))
        return _pack(encode_texts(self.text_encoder, prepared))


@dataclass
class RayEngine:
    """Where and how wide: `address` of a running cluster (None: start a local Ray on this machine),
    `actors` embedding in parallel (default: one per GPU, else three quarters of the CPUs); `weights`
    and `text_model` as every node finds them (paths present on each, or None for the Hub)."""

    weights: str | None = None
    text_model: str | None = None
    address: str | None = None
    actors: int | None = None

    def describe(self) -> dict:
        return {"name": "ray", "address": self.address or "local", "actors": self.actors}

    def batches(
        self,
        source: CatalogSource,
        start: int,
        shard_size: int,
        embedder: Embedder,
        text_encoder: TextEncoder,
        batch_size: int,
    ) -> Iterator[list[Prepared]]:
        """The rows from `start` on, embedded on the cluster, in stream order (a generator: closing it
        stops the pipeline, and the Ray this started)."""
        ray = _ray()
        total = source.count()
        stretches = [{"start": a, "stop": min(a + shard_size, total)} for a in range(start, total, shard_size)]
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise UserError(
                    f"Could not reach the Ray cluster at {self.address} ({exc}); check --ray-address."
                ) from None
        try:
            if not stretches:
                return
            resources = ray.cluster_resources()
            gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
            actors = self.actors or gpus or max(1, cpus - max(1, cpus // 4))
            self.actors = actors
            # A CPU actor reserves one CPU, as a decode task does, so Ray runs the decoding inside the actor
            # (fused operators); where the actors are fewer than the CPUs (one actor on two cores) its
            # forward passes use the spare cores too.
            threads = 1 if gpus else max(1, cpus // actors)
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True  # the shards are written in stream order
            context.enable_progress_bars = False  # the build's own bar counts rows
            data = ray.data.from_items(stretches, override_num_blocks=len(stretches))
            data = data.map_batches(
                _decode_stretches,
                batch_size=1,
                fn_kwargs={
                    "source": _absolute(source.source),
                    "limit": source.limit,
                    "preprocess": embedder.preprocessor,
                },
                num_cpus=1,
            )
            data = data.map_batches(
                _EmbedActor,
                fn_constructor_kwargs={
                    "weights": _absolute(self.weights),
                    "built": embedder.describe(),
                    "graph": embedder.ort_graph,
                    "text_model": _absolute(self.text_model),
                    "text_sha256": text_encoder.sha256,
                    "device": "cuda" if gpus else "cpu",
                    "threads": threads,
                },
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                num_gpus=1 if gpus else 0,
            )
            for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
                yield _unpack(batch)
        finally:
            if started_here:
                ray.shutdown()
