"""What the app and its API do, as plain functions over a Recommender: JSON-able in, JSON-able out.
The Gradio layer (serve/ui/, app.py) only adapts these."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import vocabulary
from ..embedding_map import place
from ..errors import UserError, whole_number
from ..images import ImageInput, load_image
from ..vocabulary import ALL, HEAD_COLUMNS, INSIGHT_COLUMNS, filters_from_api
from .ranking import rocchio
from .recommender import Match, Recommender
from .url_fetch import URLFetcher

if TYPE_CHECKING:
    from .grow import Growth

log = logging.getLogger("recommender.service")
# The embedding map draws at most this many catalog items (a browser plots a few thousand points
# smoothly) in at most MAP_GROUPS colours, coloured by one of MAP_COLOURS.
MAP_POINTS, MAP_GROUPS = 3000, 12
MAP_COLOURS = ("articleType", "masterCategory", "subCategory", "gender", "baseColour", "usage")


def match_json(match: Match) -> dict:
    """The match shape clients rely on; `image` is the thumbnail path (served as a file by the app)."""
    a = match.attributes
    return {
        "id": match.id,
        "name": match.name,
        "score": match.score,
        "gender": a["gender"],
        "masterCategory": a["masterCategory"],
        "subCategory": a["subCategory"],
        "articleType": a["articleType"],
        "baseColour": a["baseColour"],
        "image": match.thumbnail,
    }


def classification_json(predictions: dict[str, list[tuple[str, float]]]) -> dict:
    return {
        head: [{"label": label, "confidence": round(p, 4)} for label, p in predictions[head]]
        for head in HEAD_COLUMNS
        if head in predictions
    }


def catalog_ids(rec: Recommender, values: object, name: str) -> list[int]:
    """`values` as a list of catalog item ids, or a UserError: API clients may send anything."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise UserError(f"{name} must be a list of catalog item ids; got {values!r}.")
    ids = [whole_number(v, f"Each {name} item id", 0) for v in values]
    for item_id in ids:
        rec.row_of(item_id)  # a UserError naming an id that is not in the catalog
    return ids


@dataclass
class Profile:
    """One shopper's session: the current query and what they liked or disliked so far."""

    query: np.ndarray | None = None
    liked: list[int] = field(default_factory=list)
    disliked: list[int] = field(default_factory=list)


class Service:
    """The app's functions. The recommender may still be building when the app starts."""

    def __init__(self, fetcher: URLFetcher | None = None) -> None:
        self.fetcher = fetcher or URLFetcher()
        self._recommender: Recommender | None = None
        self._ready = threading.Event()
        self.status = "The catalog index is being prepared; try again in a minute."
        self.failed = False  # the first index could not be prepared (`status` says why)
        self.growth: Growth | None = None  # the whole catalog's build in the background, if one runs

    # --- life cycle -------------------------------------------------------------------------------

    def set_recommender(self, recommender: Recommender) -> None:
        self._recommender = recommender
        self._ready.set()

    @property
    def serving(self) -> Recommender | None:
        """The recommender serving now, None while the first one is being prepared."""
        return self._recommender

    def load_in_background(self, load: Callable[[], Recommender]) -> threading.Thread:
        def run() -> None:
            try:
                self.set_recommender(load())
            except UserError as exc:
                self.failed = True
                self.status = f"The catalog index could not be built: {exc}"
            except Exception as exc:  # keep serving a clear status instead of "being prepared" forever
                log.exception("building the index failed")
                self.failed = True
                self.status = (
                    f"The catalog index could not be built ({type(exc).__name__}); see the server log and restart."
                )

        thread = threading.Thread(target=run, name="index-builder", daemon=True)
        thread.start()
        return thread

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def recommender(self) -> Recommender:
        if self._recommender is None:
            raise UserError(self.status)
        return self._recommender

    # --- endpoints --------------------------------------------------------------------------------

    def load_image(self, image: ImageInput | None):
        if image is None or (isinstance(image, str) and not image):
            raise UserError("No photo was given; upload a photo or paste an image URL.")
        return load_image(image)

    def recommend(
        self, image: ImageInput | None, k: int = 12, text: str | None = None, **filter_values: str
    ) -> tuple[dict, np.ndarray]:
        """Classification and top-k for a photo, changed as optional words ask ("in black"); also returns
        the query vector for refinement."""
        rec = self.recommender
        text = None if text is None or (isinstance(text, str) and not text.strip()) else text
        understood = rec.understand(text) if text is not None else None  # bad words: one sentence before any work
        query = rec.query(self.load_image(image))
        results = rec.search_query(query, k, filters_from_api(**filter_values), text)
        payload = {
            "classification": classification_json(rec.heads.top(query.probabilities)),
            "results": [match_json(m) for m in results],
        }
        if understood is not None:
            payload["understood"] = understood.describe()
        return payload, query.vector

    def asked(self, text: str | None) -> dict[str, list[str]]:
        """What the words name per column (for the gallery's "why it matched"); nothing for no words."""
        if text is None or not str(text).strip():
            return {}
        return self.recommender.understand(text).named()

    def recommend_text(self, text: str, k: int = 12, **filter_values: str) -> tuple[dict, np.ndarray | None]:
        """Catalog items that fit a description, and what the words were understood to ask for; also
        returns a query vector for refinement (the results' mean look)."""
        rec = self.recommender
        understood = rec.understand(text)
        results = rec.search_text(text, k, filters_from_api(**filter_values))
        vector = None
        if results:
            mean = np.mean([rec.vector_of(m.id) for m in results], axis=0)
            vector = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        return {"understood": understood.describe(), "results": [match_json(m) for m in results]}, vector

    def fetch_url(self, url: str) -> bytes:
        return self.fetcher.fetch(url)

    def item_photo(self, item_id: int | str) -> str:
        """A catalog product's photo (its thumbnail), as a query: "more like this" from code."""
        rec = self.recommender
        return rec.thumbnail_path(int(rec.metadata.ids[rec.row_of(item_id)]))

    def similar_item(self, item_id: int | str, k: int = 12, **filter_values: str) -> dict:
        return {
            "results": [
                match_json(m) for m in self.recommender.similar_to(item_id, k, filters_from_api(**filter_values))
            ]
        }

    def classify(self, image: ImageInput | None) -> dict:
        return classification_json(self.recommender.classify(self.load_image(image)))

    def item_vector(self, item_id: int | str) -> np.ndarray:
        """A catalog item's search vector: the query of "more like this", for refining from there."""
        return self.recommender.vector_of(item_id)

    def catalog_size(self) -> int:
        return len(self.recommender.metadata)

    def browse(self, page: int = 1, page_size: int = 12, **filter_values: str) -> dict:
        """The catalog in id order, filtered, one page at a time (no photo needed)."""
        rec = self.recommender
        page, page_size = whole_number(page, "page", 1), whole_number(page_size, "page_size", 1, 100)
        mask = rec.metadata.mask(filters_from_api(**filter_values))
        rows = np.arange(len(rec.metadata)) if mask is None else np.flatnonzero(mask)
        rows = rows[np.argsort(rec.metadata.ids[rows], kind="stable")]
        start = (page - 1) * page_size
        page_rows = rows[start : start + page_size]
        return {
            "results": [dict(match_json(rec.match(r, 0.0)), score=None) for r in page_rows],
            "total": int(len(rows)),
        }

    def refine(
        self, profile: Profile, liked: list[int], disliked: list[int], k: int = 12, **filter_values: str
    ) -> dict:
        """Rocchio update of the session's query from liked/disliked results, then search again."""
        if profile.query is None:
            raise UserError("Search with a photo (or pick a catalog item) first, then mark results you like.")
        rec = self.recommender
        # Checked before the profile changes: one unknown id would otherwise stay in it and fail every later refine.
        liked, disliked = catalog_ids(rec, liked, "liked"), catalog_ids(rec, disliked, "disliked")
        profile.liked = list(dict.fromkeys(profile.liked + liked))
        profile.disliked = list(dict.fromkeys(profile.disliked + disliked))
        vector = rocchio(
            profile.query, [rec.vector_of(i) for i in profile.liked], [rec.vector_of(i) for i in profile.disliked]
        )
        seen = {rec.row_of(i) for i in profile.disliked}
        results = rec.search_vector(vector, k, filters_from_api(**filter_values), exclude_rows=tuple(seen))
        return {"results": [match_json(m) for m in results]}

    def insights(self, top: int = 25, **filter_values: str) -> dict[str, list[tuple[str, int]]]:
        """Per INSIGHT_COLUMNS column, the filtered catalog's `top` values with their product counts."""
        md, where = self.recommender.metadata, filters_from_api(**filter_values)
        return {column: md.counts(column, where)[:top] for column in INSIGHT_COLUMNS}

    def head_accuracy(self, column: str = "articleType") -> list[tuple[str, float, int]]:
        """(class, held-out accuracy, held-out items) of a head, worst first: what the app reads well and badly."""
        heads = self.recommender.heads
        if column not in heads:
            return []
        per_class = heads[column].per_class
        return sorted(((c, a, n) for c, (a, n) in per_class.items()), key=lambda t: (t[1], -t[2], t[0]))

    def map_points(
        self,
        colour_by: str = "articleType",
        query: np.ndarray | None = None,
        shown: list[int] | None = None,
        limit: int = MAP_POINTS,
        **filter_values: str,
    ) -> list[dict]:
        """The embedding map's points: at most `limit` filtered catalog items (an even spread), grouped by
        `colour_by` (its most common values, the rest "other"); with the last search's `query` vector
        placed among its 10 nearest items, and the `shown` results marked."""
        rec = self.recommender
        if colour_by not in MAP_COLOURS:
            raise UserError(f"Colour the map by one of: {', '.join(MAP_COLOURS)}.")
        where = filters_from_api(**filter_values)
        mask = rec.metadata.mask(where)
        rows = np.arange(len(rec.metadata)) if mask is None else np.flatnonzero(mask)
        rows = rows[np.linspace(0, len(rows) - 1, limit).astype(int)] if len(rows) > limit else rows
        labels = rec.metadata.columns[colour_by]
        common = {value for value, _ in rec.metadata.counts(colour_by, where)[:MAP_GROUPS]}

        def point(row: int, group: str) -> dict:
            x, y = (float(v) for v in rec.positions[row])
            return {"x": x, "y": y, "group": group, "name": str(rec.metadata.columns["productDisplayName"][row])}

        points = [point(r, str(labels[r]) if str(labels[r]) in common else "other") for r in rows]
        points += [point(rec.row_of(i), "● results") for i in shown or []]
        if query is not None:
            near, _ = rec.index.search(np.asarray(query, np.float32), 10)
            x, y = (float(v) for v in place(rec.positions, near))
            points.append({"x": x, "y": y, "group": "▶ your search", "name": "your search"})
        return points

    def map_band(self, x_range: object, k: int = 12, **filter_values: str) -> dict:
        """The filtered catalog's products in a stretch of the map (x from `x_range[0]` to `x_range[1]`, as a
        drag across the map selects it), those nearest the stretch's middle first."""
        rec = self.recommender
        try:
            low, high = sorted(float(v) for v in x_range)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise UserError("Drag across the map to select a stretch of it.") from None
        k = whole_number(k, "k", 1, 100)
        mask = rec.metadata.mask(filters_from_api(**filter_values))
        x = np.asarray(rec.positions[:, 0])
        inside = (x >= low) & (x <= high) & (True if mask is None else mask)
        rows = np.flatnonzero(inside)
        rows = rows[np.argsort(np.abs(x[rows] - (low + high) / 2), kind="stable")][:k]
        return {"results": [dict(match_json(rec.match(r, 0.0)), score=None) for r in rows], "total": int(inside.sum())}

    def filter_choices(self, **filter_values: str) -> dict[str, list[str]]:
        """Each filter's dropdown choices (by catalog column) from the index metadata, narrowed by the
        filters above it (`filter_values`, by API name: a sub-category's choices within the category)."""
        md, chosen = self.recommender.metadata, filters_from_api(**filter_values)
        return {
            f.column: md.values(f.column, {c: chosen.get(c, ALL) for c in f.narrowed_by})
            for f in vocabulary.API_FILTERS
        }
