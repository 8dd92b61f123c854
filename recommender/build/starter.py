"""The app's starter index: the bundled ~1,000-product sample, built while the app starts when it has
no index to serve."""

from __future__ import annotations

from pathlib import Path

from ..catalog import CatalogSource
from ..embedder import Embedder
from ..text_model import TextEncoder
from .runner import precompute


def build_starter_index(
    index_dir: Path, sample: Path, weights: str | None, text_model: str | None, precision: str = "auto"
) -> tuple[Embedder, TextEncoder]:
    """Build the index at `index_dir` from the sample (progress on the console); returns the models,
    which the app then serves it with."""
    embedder, text_encoder = Embedder(weights, precision=precision), TextEncoder(text_model)
    print(f"Building a starter index at {index_dir} from {sample} ({embedder.build_precision}) …", flush=True)
    precompute(CatalogSource(str(sample)), index_dir, embedder, text_encoder)
    return embedder, text_encoder
