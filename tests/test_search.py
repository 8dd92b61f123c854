"""Filtered search returns the exact filtered top-k; the API returns the promised shapes; an index
never serves a model or files it was not built with."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from recommender import Recommender, artifacts
from recommender.build import precompute
from recommender.catalog import CatalogSource
from recommender.errors import ArtifactsError, UserError
from recommender.hnsw import build_hnsw
from recommender.metadata import Metadata
from recommender.serve.index import VectorIndex
from recommender.serve.ranking import POOL, promote_closest
from tests.helpers import make_catalog, sample_rows


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> VectorIndex:
    rng = np.random.default_rng(0)
    embeddings = unit(rng.normal(size=(3000, 32)))
    return VectorIndex(embeddings, build_hnsw(embeddings))


def test_unfiltered_hnsw_recall_at_10_is_at_least_099(vectors):
    rng = np.random.default_rng(1)
    queries = unit(rng.normal(size=(200, 32)))
    recall = np.mean([len(set(vectors.search(q, 10)[0]) & set(vectors.exact(q, 10)[0])) / 10 for q in queries])
    assert recall >= 0.99


def test_filtered_search_returns_exact_topk_for_rare_category(vectors):
    mask = np.zeros(len(vectors), bool)
    mask[[5, 77, 1500, 2999]] = True
    q = unit(np.ones(32))
    rows, scores = vectors.search(q, 10, mask)
    assert sorted(rows) == [5, 77, 1500, 2999]  # fewer than k match: all of them, nothing else
    assert np.all(np.diff(scores) <= 1e-6)


class _SlowWalk:
    """hnswlib as it behaves under load: a query lets go of the GIL while it walks (here, a sleep), so
    another thread can run meanwhile. Records the ef each walk ran with."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []

    def set_ef(self, ef: int) -> None:
        self.inner.set_ef(ef)
        self.ef = ef

    def knn_query(self, query, k, filter=None):
        import time

        wanted = self.ef
        time.sleep(0.002)
        labels, distances = self.inner.knn_query(query, k=k, filter=filter)
        self.seen.append((wanted, self.ef))
        return labels, distances

    def set_num_threads(self, n: int) -> None:
        self.inner.set_num_threads(n)


def test_concurrent_filtered_queries_each_search_with_their_own_ef_and_match_alone(vectors):
    """ef belongs to the graph: under load no query may search with another's beam. Many threads of random
    filtered queries; each answer equals the same query's answer alone, and the exact filtered top-k."""
    from concurrent.futures import ThreadPoolExecutor

    slow = _SlowWalk(vectors.hnsw)
    index = VectorIndex(vectors.embeddings, slow)
    rng = np.random.default_rng(5)
    queries = unit(rng.normal(size=(120, 32)))
    # shares from 25% to 100%: HNSW's path, each with its own ef
    masks = [None if i % 4 == 0 else rng.random(len(vectors)) < rng.uniform(0.25, 0.9) for i in range(120)]
    alone = [index.search(q, 10, m) for q, m in zip(queries, masks)]
    slow.seen.clear()
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda i: index.search(queries[i], 10, masks[i]), range(120)))
    assert all(wanted == used for wanted, used in slow.seen), "a query searched with another query's ef"
    for (rows, scores), (rows_alone, _), q, m in zip(together, alone, queries, masks):
        assert list(rows) == list(rows_alone)
        exact = vectors.exact(q, 10, None if m is None else np.flatnonzero(m))[0]
        assert len(set(rows) & set(exact)) >= 9  # HNSW's recall, as alone


def test_filtered_search_with_a_common_filter_matches_brute_force(vectors):
    mask = np.arange(len(vectors)) % 2 == 0  # 50% of the catalog: the HNSW filter path
    rng = np.random.default_rng(2)
    recall = []
    for q in unit(rng.normal(size=(50, 32))):
        rows, _ = vectors.search(q, 10, mask)
        assert len(rows) == 10 and mask[rows].all()
        recall.append(len(set(rows) & set(vectors.exact(q, 10, np.flatnonzero(mask))[0])) / 10)
    assert np.mean(recall) >= 0.99


def test_search_never_returns_fewer_than_k_when_k_items_match(vectors):
    mask = np.arange(len(vectors)) % 3 != 0

    class Starved:  # hnswlib's answer when its beam finds fewer than k allowed nodes
        def set_num_threads(self, n): ...

        def set_ef(self, ef): ...

        def knn_query(self, *args, **kwargs):
            raise RuntimeError("Cannot return the results in a contiguous 2D array")

    q = unit(np.ones(32))
    rows, _ = VectorIndex(vectors.embeddings, Starved()).search(q, 25, mask)
    assert list(rows) == list(vectors.exact(q, 25, np.flatnonzero(mask))[0])


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, embedder, text_encoder):
    folder = make_catalog(tmp_path_factory.mktemp("cat"), sample_rows(160))
    out = tmp_path_factory.mktemp("idx") / "index"
    precompute(CatalogSource(str(folder)), out, embedder, text_encoder, batch_size=32, progress=False)
    return out


@pytest.fixture(scope="module")
def rec(text_encoder, index_dir, embedder) -> Recommender:
    return Recommender.load(index_dir, embedder=embedder, text_encoder=text_encoder)


def _brute_force(rec: Recommender, query: np.ndarray, filters: dict, k: int, exclude: int | None = None) -> list[int]:
    """Exact filtered top-POOL by brute force, then the shipped order: the closest in appearance first."""
    mask = rec.metadata.mask(filters)
    mask = np.ones(len(rec.metadata), bool) if mask is None else mask.copy()
    if exclude is not None:
        mask[rec.metadata.row_of(exclude)] = False
    rows, scores = rec.index.exact(query, max(k, POOL), np.flatnonzero(mask))
    rows, _ = promote_closest(rows, scores, rec.index.embeddings, query, rec.space.appearance_dims)
    return [int(rec.metadata.ids[r]) for r in rows[:k]]


def test_search_accepts_pil_path_and_bytes_alike(rec, index_dir):
    thumb = sorted((index_dir / "thumbnails").iterdir())[0]
    by_path = rec.search(thumb, k=5)
    by_bytes = rec.search(thumb.read_bytes(), k=5)
    by_pil = rec.search(Image.open(thumb), k=5)
    assert [m.id for m in by_path] == [m.id for m in by_bytes] == [m.id for m in by_pil]
    assert by_path[0].id == int(thumb.stem) and by_path[0].score > 0.99
    match = by_path[0].to_dict()
    assert set(match) == {"id", "score", "name", "attributes", "thumbnail"}
    assert set(match["attributes"]) >= {
        "gender",
        "masterCategory",
        "subCategory",
        "articleType",
        "baseColour",
        "season",
        "usage",
    }
    assert Image.open(match["thumbnail"]).size[0] > 0


def test_combined_filters_give_exact_filtered_results(rec):
    filters = {"gender": "Men", "masterCategory": ["Apparel", "Footwear"]}
    query = rec.vector_of(int(rec.metadata.ids[0]))
    results = rec.search_vector(query, 12, filters)
    assert len(results) == 12
    assert all(
        m.attributes["gender"] == "Men" and m.attributes["masterCategory"] in ("Apparel", "Footwear") for m in results
    )
    assert [m.id for m in results] == _brute_force(rec, query, filters, 12)


def test_rare_filter_returns_every_match_and_empty_filter_returns_nothing(rec):
    rare = min(rec.metadata.values("articleType"), key=lambda v: (rec.metadata.columns["articleType"] == v).sum())
    count = int((rec.metadata.columns["articleType"] == rare).sum())
    results = rec.search(sorted((rec.folder / "thumbnails").iterdir())[3], k=12, filters={"articleType": rare})
    assert len(results) == count and all(m.attributes["articleType"] == rare for m in results)
    assert (
        rec.search_vector(rec.vector_of(int(rec.metadata.ids[0])), 5, {"gender": "Men", "articleType": "No Such Type"})
        == []
    )


def test_all_means_no_filter(rec):
    q = rec.vector_of(int(rec.metadata.ids[1]))
    assert [m.id for m in rec.search_vector(q, 8, {"gender": "All", "articleType": ["All"]})] == [
        m.id for m in rec.search_vector(q, 8)
    ]


def test_unknown_filter_column_and_bad_k_are_user_errors(rec):
    q = rec.vector_of(int(rec.metadata.ids[1]))
    with pytest.raises(UserError, match="Unknown filter 'colour'"):
        rec.search_vector(q, 5, {"colour": "Red"})
    for bad in (0, 101, "All", "", None, 2.5, True):  # API clients can send anything as k
        with pytest.raises(UserError, match="k must be a whole number between 1 and 100"):
            rec.search_vector(q, bad)
    assert (
        len(rec.search_vector(q, "5")) == len(rec.search_vector(q, 5.0)) == len(rec.search_vector(q, np.int64(5))) == 5
    )


def test_similar_to_uses_the_stored_embedding_and_excludes_the_item(rec, monkeypatch):
    item = int(rec.metadata.ids[10])
    monkeypatch.setattr(rec.embedder, "forward", lambda *a: pytest.fail("similar_to must not re-embed"))
    results = rec.similar_to(item, k=6, filters={"gender": rec.metadata.attributes(10)["gender"]})
    assert len(results) == 6 and item not in [m.id for m in results]
    assert [m.id for m in results] == _brute_force(
        rec, rec.vector_of(item), {"gender": rec.metadata.attributes(10)["gender"]}, 6, exclude=item
    )
    with pytest.raises(UserError, match="No catalog item with id 123"):
        rec.similar_to(123)


def test_classify_returns_top3_per_head_with_probabilities(rec, index_dir):
    result = rec.classify(sorted((index_dir / "thumbnails").iterdir())[0].read_bytes())
    assert set(result) <= {"articleType", "gender", "masterCategory", "subCategory", "baseColour", "usage"}
    assert {"gender", "masterCategory"} <= set(result)
    for labels in result.values():
        assert 1 <= len(labels) <= 3
        assert all(isinstance(label, str) and 0 <= p <= 1 for label, p in labels)
        assert [p for _, p in labels] == sorted((p for _, p in labels), reverse=True)


def test_index_refuses_other_weights(text_encoder, index_dir, real_embedder):
    with pytest.raises(ArtifactsError, match="built with other weights"):
        Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder)


def test_index_refuses_other_preprocessing(index_dir, tmp_path, random_weights):
    from recommender.embedder import Embedder

    with pytest.raises(ArtifactsError, match="other preprocessing"):
        Recommender.load(index_dir, embedder=Embedder(random_weights, input_size=(160, 120)))


def _copy(index_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(index_dir, target)
    return target


def test_truncated_index_file_is_refused_by_name(text_encoder, index_dir, tmp_path, embedder):
    copy = _copy(index_dir, tmp_path)
    data = (copy / artifacts.INDEX).read_bytes()
    (copy / artifacts.INDEX).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactsError, match=r"index.hnsw does not match its checksum"):
        Recommender.load(copy, embedder=embedder, text_encoder=text_encoder)


def test_missing_thumbnail_and_missing_index_are_refused(text_encoder, index_dir, tmp_path, embedder):
    copy = _copy(index_dir, tmp_path)
    next((copy / "thumbnails").iterdir()).unlink()
    with pytest.raises(ArtifactsError, match="thumbnails .* do not match"):
        Recommender.load(copy, embedder=embedder, text_encoder=text_encoder)
    with pytest.raises(ArtifactsError, match="No index at .* rebuild it with"):
        Recommender.load(tmp_path / "nothing", embedder=embedder, text_encoder=text_encoder)


def test_edited_manifest_count_is_refused(text_encoder, index_dir, tmp_path, embedder):
    copy = _copy(index_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["count"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactsError, match="disagree on the item count"):
        Recommender.load(copy, embedder=embedder, text_encoder=text_encoder)


def test_metadata_filter_mask_handles_lists_and_all(rec):
    md: Metadata = rec.metadata
    men = md.mask({"gender": "Men"})
    both = md.mask({"gender": ["Men", "Women"]})
    assert both.sum() >= men.sum() > 0
    assert md.mask({"gender": "All"}) is None and md.mask(None) is None


def test_image_bytes_of_a_png_with_alpha_search_like_its_rgb(rec, index_dir):
    thumb = sorted((index_dir / "thumbnails").iterdir())[2]
    rgba = Image.open(thumb).convert("RGBA")
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    assert rec.search(buffer.getvalue(), 1)[0].id == int(thumb.stem)


def test_closest_in_appearance_goes_first_and_the_rest_keep_their_order():
    vectors = unit(np.array([[1, 0, 0, 1], [0.5, 0.5, 0, 0.7], [1, 0, 0, -0.3], [0, 1, 0, 0]], np.float32))
    query = unit(np.array([1, 0, 0, 0.9], np.float32))
    rows, scores = np.array([0, 1, 2, 3]), np.array([0.9, 0.8, 0.7, 0.1], np.float32)
    # appearance = the first 3 dims: row 2 is closest there, so it moves to the front
    got_rows, got_scores = promote_closest(rows, scores, vectors, query, appearance_dims=3)
    assert list(got_rows) == [2, 0, 1, 3] and list(got_scores) == [0.7, 0.9, 0.8, 0.1]
    same, _ = promote_closest(rows, scores, vectors, query, appearance_dims=4)  # already first: unchanged
    assert list(same) == [0, 1, 2, 3]


def test_search_vector_is_the_semantic_order_with_the_appearance_match_first(rec):
    query = rec.vector_of(int(rec.metadata.ids[7]))
    results = [m.id for m in rec.search_vector(query, 12)]
    assert results == _brute_force(rec, query, {}, 12)
    assert results[0] == int(rec.metadata.ids[7])  # an item's own photo is its closest match
