"""The Python API: load an artifacts directory, then search, find similar items and classify."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import artifacts
from ..embedder import Embedder
from ..errors import ArtifactsError, UserError, whole_number
from ..heads import Heads
from ..images import ImageInput
from ..metadata import Filters, Metadata
from ..search_space import SearchSpace
from .index import VectorIndex
from .ranking import POOL, promote_closest

MAX_K = 100


@dataclass
class Match:
    id: int
    score: float
    name: str
    attributes: dict[str, str]
    thumbnail: str  # path of the catalog thumbnail, servable as a file

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Query:
    """One photo through the model, the heads and the search space, each computed once."""

    descriptor: np.ndarray  # CNN features + colour histogram
    probabilities: dict[str, np.ndarray]  # every head's, from one pass through their shared layer
    vector: np.ndarray  # the unit search vector


class Recommender:
    """Visual search over one artifacts directory with the Embedder it was built with."""

    def __init__(
        self,
        folder: Path,
        manifest: dict,
        embedder: Embedder,
        index: VectorIndex,
        metadata: Metadata,
        heads: Heads,
        space: SearchSpace,
    ) -> None:
        self.folder, self.manifest, self.embedder = folder, manifest, embedder
        self.index, self.metadata, self.heads, self.space = index, metadata, heads, space

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        weights: str | os.PathLike | None = None,
        embedder: Embedder | None = None,
        verify: bool = True,
    ) -> "Recommender":
        """Open `path`, verify its files, and refuse an embedder other than the one that built it."""
        folder = Path(path)
        manifest = artifacts.read_manifest(folder, verify=verify)
        embedder = embedder or Embedder(weights)
        built = manifest["model"]
        # Queries are brought to the detail of the catalog the index was built from (an Embedder serves
        # one index at a time).
        embedder.detail_side = built["preprocessing"].get("detail_side")
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
        index = VectorIndex.load(folder / artifacts.EMBEDDINGS, folder / artifacts.INDEX)
        metadata = Metadata.load(folder / artifacts.METADATA)
        if not (len(index) == len(metadata) == manifest["count"]):
            raise ArtifactsError(
                f"The index, metadata and manifest in {folder} disagree on the item count; rebuild the index."
            )
        heads = Heads.load(folder / artifacts.HEADS, manifest["heads"])
        space = SearchSpace.load(folder / artifacts.PROJECTION, manifest["projection"])
        return cls(folder, manifest, embedder, index, metadata, heads, space)

    # --- building blocks --------------------------------------------------------------------------

    def thumbnail_path(self, item_id: int) -> str:
        return str(self.folder / artifacts.THUMBNAILS / f"{int(item_id)}.jpg")

    def match(self, row: int, score: float) -> Match:
        attributes = self.metadata.attributes(row)
        item_id = int(self.metadata.ids[row])
        return Match(
            item_id, round(float(score), 4), attributes["productDisplayName"], attributes, self.thumbnail_path(item_id)
        )

    def row_of(self, item_id: int | str) -> int:
        row = self.metadata.row_of(item_id)
        if row is None:
            raise UserError(f"No catalog item with id {item_id}; use an id from a search result.")
        return row

    def query_of(self, descriptor: np.ndarray) -> Query:
        """A descriptor (from `features`) -> its heads' probabilities and search vector."""
        probabilities = self.heads.probabilities(descriptor)
        return Query(descriptor, probabilities, self.space.apply(descriptor, probabilities))

    def vector_of(self, item_id: int | str) -> np.ndarray:
        """A catalog item's stored search-space vector."""
        return np.asarray(self.index.embeddings[self.row_of(item_id)], np.float32)

    def search_vector(
        self, query: np.ndarray, k: int = 12, filters: Filters | None = None, exclude_rows: tuple[int, ...] = ()
    ) -> list[Match]:
        """The exact filtered top-k for a unit query vector (fewer only when fewer items match), the
        closest in appearance among the best POOL first (ranking.promote_closest)."""
        k = whole_number(k, "k", 1, MAX_K)
        query = np.asarray(query, np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        mask = self.metadata.mask(filters)
        if exclude_rows:
            mask = np.ones(len(self.metadata), bool) if mask is None else mask.copy()
            mask[list(exclude_rows)] = False
        rows, scores = self.index.search(query, max(k, POOL), mask)
        rows, scores = promote_closest(rows, scores, self.index.embeddings, query, self.space.appearance_dims)
        return [self.match(r, s) for r, s in zip(rows[:k], scores[:k])]

    # --- the public API ---------------------------------------------------------------------------

    def features(self, image: ImageInput) -> np.ndarray:
        """The image's descriptor: ResNet50 features (the last stage's 2048 by regional GeM, the third
        stage's 1024 by GeM), then its 64-bin colour histogram (what the heads and the search projection read)."""
        return self.embedder.embed_one(image)

    def query(self, image: ImageInput) -> Query:
        """`image` through the model, the heads and the search space (what a search and a
        classification of it share)."""
        return self.query_of(self.features(image))

    def search(self, image: ImageInput, k: int = 12, filters: Filters | None = None) -> list[Match]:
        """Catalog items most similar to `image` (PIL image, path or bytes), filtered exactly."""
        return self.search_vector(self.query(image).vector, k, filters)

    def similar_to(self, item_id: int | str, k: int = 12, filters: Filters | None = None) -> list[Match]:
        """Items similar to a catalog item, from its stored embedding (no re-embedding), itself excluded."""
        row = self.row_of(item_id)
        return self.search_vector(self.vector_of(item_id), k, filters, exclude_rows=(row,))

    def classify(self, image: ImageInput, top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """Per attribute head, the `top` labels with probabilities."""
        return self.heads.top(self.heads.probabilities(self.features(image)), top)  # no search vector needed
