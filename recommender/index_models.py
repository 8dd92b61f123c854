"""The models an index was built with: an Embedder made to follow the index (its precision, int8
calibration or graph, the catalog's detail) and a text model, each refused in one sentence when it is not
the one that built the index. Shared by serving an index and updating it."""

from __future__ import annotations

from pathlib import Path

from .embedder import Embedder
from .errors import ArtifactsError
from .text_model import TextEncoder


def follow_index(folder: Path, manifest: dict, embedder: Embedder) -> None:
    """Make `embedder` compute the index's descriptors, or refuse it (other weights or preprocessing)."""
    built = manifest["model"]
    # Queries are brought to the detail of the catalog the index was built from (an Embedder serves one
    # index at a time).
    embedder.detail_side = built["preprocessing"].get("detail_side")
    embedder.follow(built, folder)  # int8 with the index's calibration or graph, or float
    if built["weights_sha256"] != embedder.weights_sha256:
        raise ArtifactsError(
            f"The index at {folder} was built with other weights ({built['weights_source']}) than the model "
            f"loaded now ({embedder.weights_info['source']}); pass the same --weights or rebuild the index."
        )
    if built["preprocessing"] != embedder.preprocessing:
        now = embedder.preprocessing
        differ = sorted(
            k for k in set(built["preprocessing"]) | set(now) if built["preprocessing"].get(k) != now.get(k)
        )
        raise ArtifactsError(
            f"The index at {folder} was built with other preprocessing than this version uses "
            f"({', '.join(differ)}); rebuild the index."
        )


def check_text_model(folder: Path, manifest: dict, text_encoder: TextEncoder) -> None:
    """Refuse a text model other than the one that encoded the index's catalog texts."""
    if manifest["text_model"]["sha256"] != text_encoder.sha256:
        raise ArtifactsError(
            f"The index at {folder} was built with another text model ({manifest['text_model']['source']}) than "
            f"the one loaded now ({text_encoder.source}); pass the same --text-model or rebuild the index."
        )
