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
from ..hnsw import top_k
from ..images import ImageInput
from ..index_models import check_text_model, follow_index
from ..metadata import Filters, Metadata
from ..runtime import release_freed_memory
from ..search_space import SearchSpace
from ..text_model import TextEncoder
from ..words import Understood, clean_query
from .index import VectorIndex
from .ranking import KEEP_TYPE_WEIGHT, POOL, WORDS_POOL, WORDS_WEIGHT, promote_closest
from .text_index import TextIndex

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
        text_encoder: TextEncoder,
        text_index: TextIndex,
        positions: np.ndarray,
    ) -> None:
        self.folder, self.manifest, self.embedder = folder, manifest, embedder
        self.version = folder.resolve()  # the published version `folder` named when it was loaded
        # Products an update removed since the last full build: asked for, they are named as gone.
        self.removed = frozenset(int(i) for i in manifest.get("update", {}).get("removed_ids", []))
        self.index, self.metadata, self.heads, self.space = index, metadata, heads, space
        self.text_encoder, self.text_index = text_encoder, text_index
        self.positions = positions  # (n, 2): each item on the embedding map

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        weights: str | os.PathLike | None = None,
        embedder: Embedder | None = None,
        verify: bool = True,
        text_model: str | os.PathLike | None = None,
        text_encoder: TextEncoder | None = None,
        precision: str = "auto",
    ) -> "Recommender":
        """Open `path`, verify its files, and refuse an embedder or text model other than the ones that
        built it. `weights` / `text_model` None: the Hub's. `precision`: auto follows the index; another
        (fp32, bf16, int8, ort-int8) is refused where its descriptors would differ from the index's."""
        folder = Path(path)
        manifest = artifacts.read_manifest(folder, verify=verify)
        embedder = embedder or Embedder(weights, precision=precision)
        follow_index(folder, manifest, embedder)
        embedder.warm_up()  # before any query can run beside it, and before the index adds to the peak
        release_freed_memory()  # the int8 conversion's scratch (~110 MB)
        text_encoder = text_encoder or TextEncoder(text_model)
        check_text_model(folder, manifest, text_encoder)
        index = VectorIndex.load(folder / artifacts.EMBEDDINGS, folder / artifacts.INDEX)
        metadata = Metadata.load(folder / artifacts.METADATA)
        if not (len(index) == len(metadata) == manifest["count"]):
            raise ArtifactsError(
                f"The index, metadata and manifest in {folder} disagree on the item count; rebuild the index."
            )
        heads = Heads.load(folder / artifacts.HEADS, manifest["heads"])
        space = SearchSpace.load(folder / artifacts.PROJECTION, manifest["projection"])
        text_index = TextIndex.load(folder / artifacts.TEXT_VECTORS, metadata)
        if len(text_index) != len(metadata):
            raise ArtifactsError(f"The text vectors in {folder} do not cover every item; rebuild the index.")
        positions = np.load(folder / artifacts.MAP, mmap_mode="r")
        return cls(folder, manifest, embedder, index, metadata, heads, space, text_encoder, text_index, positions)

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
            if str(item_id).strip().isdigit() and int(item_id) in self.removed:
                raise UserError(
                    f"Product {int(item_id)} was removed from the catalog; search again to find similar ones."
                )
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

    def understand(self, text: str) -> Understood:
        """The gender, colour, article type and usage the words name (checked: one sentence if unusable)."""
        return self.text_index.vocabulary.understand(clean_query(text))

    def search_text(self, text: str, k: int = 12, filters: Filters | None = None) -> list[Match]:
        """Catalog items that fit a description ("navy polo for men"): those with every gender, colour,
        type and usage it names first, in the order of the text model's similarity (the score)."""
        k = whole_number(k, "k", 1, MAX_K)
        words = clean_query(text)
        rows, scores = self.text_index.search(
            self.text_encoder.encode_one(words), self.understand(words), k, self.metadata.mask(filters)
        )
        return [self.match(r, s) for r, s in zip(rows, scores)]

    def search(
        self, image: ImageInput, k: int = 12, filters: Filters | None = None, text: str | None = None
    ) -> list[Match]:
        """Catalog items most similar to `image` (PIL image, path or bytes), filtered exactly; with
        `text` ("in black", "for women"), changed as the words ask (`search_query`)."""
        return self.search_query(self.query(image), k, filters, text)

    def search_query(
        self, query: Query, k: int = 12, filters: Filters | None = None, text: str | None = None
    ) -> list[Match]:
        """A photo's query, with optional words ("in red", "for women", "without laces"). The attributes the
        words name replace the photo's own in the search vector and, when at least k products have them,
        narrow the candidates to those; candidates are ranked by the photo's similarity, plus the words'
        similarity to their text, plus the photo's article-type probability for theirs (what the words do
        not change stays as in the photo)."""
        if text is None or (isinstance(text, str) and not text.strip()):
            return self.search_vector(query.vector, k, filters)
        k = whole_number(k, "k", 1, MAX_K)
        words = clean_query(text)
        understood = self.understand(words)
        asked = self.heads_as_asked(query.probabilities, understood)
        vector = self.space.apply(query.descriptor, asked)
        mask = self.metadata.mask(filters)
        if understood:
            wanted = self.text_index.satisfying(understood)
            if mask is not None:
                wanted &= mask
            if int(wanted.sum()) >= k:
                mask = wanted
        rows, scores = self.index.search(vector, max(k, WORDS_POOL), mask)
        score = scores + WORDS_WEIGHT * self.text_index.similarity(self.text_encoder.encode_one(words), rows)
        score += KEEP_TYPE_WEIGHT * self.label_probability(asked, "articleType", rows)
        order = top_k(score + self.text_index.constraint_scores(understood, rows), k)
        return [self.match(r, s) for r, s in zip(rows[order], score[order])]

    def label_probability(self, probabilities: dict[str, np.ndarray], column: str, rows: np.ndarray) -> np.ndarray:
        """Per row, the probability the head gave that row's own label of `column` (0 for labels it lacks)."""
        if column not in self.heads or column not in probabilities:
            return np.zeros(len(rows), np.float32)
        position = {label: i for i, label in enumerate(self.heads[column].classes)}
        probs = probabilities[column]
        by_label = np.array(
            [probs[position[label]] if label in position else 0.0 for label in self.text_index.labels[column]],
            np.float32,
        )
        return by_label[self.text_index.codes[column][rows]]

    def heads_as_asked(self, probabilities: dict[str, np.ndarray], understood: Understood) -> dict[str, np.ndarray]:
        """The photo's head probabilities with each attribute the words name set to the named labels."""
        asked = dict(probabilities)
        for column, credit in understood.wanted.items():
            if column in self.heads:
                classes = self.heads[column].classes
                named = np.array([credit.get(c, 0.0) if credit.get(c, 0.0) == 1.0 else 0.0 for c in classes])
                if named.sum() > 0:
                    asked[column] = (named / named.sum()).astype(np.float32)
        return asked

    def similar_to(self, item_id: int | str, k: int = 12, filters: Filters | None = None) -> list[Match]:
        """Items similar to a catalog item, from its stored embedding (no re-embedding), itself excluded."""
        row = self.row_of(item_id)
        return self.search_vector(self.vector_of(item_id), k, filters, exclude_rows=(row,))

    def classify(self, image: ImageInput, top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """Per attribute head, the `top` labels with probabilities."""
        return self.heads.top(self.heads.probabilities(self.features(image)), top)  # no search vector needed
