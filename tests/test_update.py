"""A living catalog: an index updated from a changed catalog holds what a full build of it holds, embeds
only new photos, forgets removed products everywhere, and refuses bad input in one sentence."""

from __future__ import annotations

import csv
import itertools
import random
import shutil

import numpy as np
import pytest

from recommender import Recommender, artifacts
from recommender.build import precompute
from recommender.build.update import update
from recommender.catalog import CatalogSource
from recommender.embedder import Embedder
from recommender.errors import ArtifactsError, UserError
from recommender.serve.service import Service
from tests.helpers import SAMPLE, make_catalog, sample_rows

REMOVED = slice(3, 8)  # rows of the base catalog (48 products) the new catalog drops


def rows_of(folder) -> list[list[str]]:
    with open(folder / "styles.csv", newline="") as handle:
        return list(csv.reader(handle))


def changed_catalog(folder):
    """The reference build's 48 products with 5 removed, 8 added, 2 given a new photo and 2 relabelled."""
    header, *rows = sample_rows(48)
    kept = rows[: REMOVED.start] + rows[REMOVED.stop :]
    added = sample_rows(8, start=48)[1:]
    colour = header.index("baseColour")
    kept[10][colour] = "Magenta" if kept[10][colour] != "Magenta" else "Teal"
    kept[11][header.index("productDisplayName")] += " (renamed)"
    make_catalog(folder, [header, *kept, *added])
    for n, row in enumerate(kept[20:22]):  # a new photo under the same id: another product's
        other = sample_rows(1, start=70 + n)[1][0]
        shutil.copy(SAMPLE / "images" / f"{other}.jpg", folder / "images" / f"{row[0]}.jpg")
    return folder, [int(r[0]) for r in rows[REMOVED]], [int(r[0]) for r in added]


@pytest.fixture(scope="module")
def updated(reference_build, embedder, text_encoder, tmp_path_factory):
    """(the updated index, its manifest, the removed ids, the added ids, the new catalog folder)."""
    _, reference = reference_build
    index = tmp_path_factory.mktemp("updated") / "index"
    shutil.copytree(reference, index)
    catalog, removed, added = changed_catalog(tmp_path_factory.mktemp("changed") / "catalog")
    manifest = update(CatalogSource(str(catalog)), index, embedder, text_encoder, progress=False)
    return index, manifest, removed, added, catalog


def test_an_update_embeds_only_new_photos_and_holds_what_a_full_build_holds(
    updated, reference_build, embedder, text_encoder, tmp_path
):
    index, manifest, removed, added, catalog = updated
    record = manifest["update"]
    assert (record["added"], record["changed"], record["relabelled"], record["removed"]) == (8, 2, 2, 5)
    assert record["unchanged"] == 48 - 5 - 2 - 2 and sorted(record["ids"]["removed"]) == sorted(removed)
    assert record["from"]["count"] == 48 and manifest["count"] == 51
    # Unchanged products keep their descriptors, text vectors and thumbnails byte for byte.
    _, reference = reference_build
    before, after = (artifacts.read_manifest(f) for f in (reference, index))
    old_md, new_md = (
        Recommender.load(f, embedder=embedder, text_encoder=text_encoder).metadata for f in (reference, index)
    )
    old_features, new_features = (np.load(f / artifacts.FEATURES) for f in (reference, index))
    for item_id in (int(i) for i in new_md.ids if int(i) not in record["ids"]["changed"] + added):
        np.testing.assert_array_equal(new_features[new_md.row_of(item_id)], old_features[old_md.row_of(item_id)])
        assert (index / "thumbnails" / f"{item_id}.jpg").read_bytes() == (
            reference / "thumbnails" / f"{item_id}.jpg"
        ).read_bytes()
    assert after["heads"] == before["heads"] and after["projection"] == before["projection"]
    # A full build of the new catalog: the same products in the same order, the same descriptors (within
    # float rounding of other batches), text vectors and thumbnails.
    full = tmp_path / "full"
    precompute(CatalogSource(str(catalog)), full, embedder, text_encoder, batch_size=8, shard_size=16, progress=False)
    assert (full / artifacts.METADATA).read_text() == (index / artifacts.METADATA).read_text()
    np.testing.assert_allclose(np.load(full / artifacts.FEATURES), new_features, atol=1e-5)
    np.testing.assert_allclose(
        np.load(full / artifacts.TEXT_VECTORS), np.load(index / artifacts.TEXT_VECTORS), atol=1e-5
    )
    assert artifacts.read_manifest(full)["thumbnails"] == after["thumbnails"]


def test_a_removed_product_is_gone_from_every_place_and_a_new_one_is_found(updated, embedder, text_encoder):
    index, manifest, removed, added, catalog = updated
    rec = Recommender.load(index, embedder=embedder, text_encoder=text_encoder)
    service = Service()
    service.set_recommender(rec)
    gone = set(removed)
    assert not gone & {int(i) for i in rec.metadata.ids}
    assert len(rec.positions) == len(rec.metadata) == len(rec.index) == 51  # the map, the index, the rows
    assert sum(n for _, n in service.insights()["gender"]) == 51  # the dashboard's and filters' counts
    for item_id in removed:
        photo = SAMPLE / "images" / f"{item_id}.jpg"
        assert not gone & {m.id for m in rec.search(photo, 51)}  # photo search, however deep
        with pytest.raises(UserError, match=f"Product {item_id} was removed from the catalog"):
            service.similar_item(item_id, 5)
    for item_id in added:
        assert rec.search(catalog / "images" / f"{item_id}.jpg", 1)[0].id == item_id
    words = rec.search_text("shirt", 51)
    assert not gone & {m.id for m in words} and len(words) == 51
    browsed = service.browse(page=1, page_size=100)
    assert not gone & {r["id"] for r in browsed["results"]}


def test_a_refit_trains_the_fitted_parts_again_from_the_stored_descriptors(
    updated, embedder, text_encoder, tmp_path, capsys
):
    index, manifest, *_, catalog = updated
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    refitted = update(CatalogSource(str(catalog)), copy, embedder, text_encoder, refit=True, progress=False)
    assert refitted["update"]["refit"] and refitted["update"]["unchanged"] == 51
    # The search space trained again: on the 51 products' fit part and the views the index kept.
    assert refitted["projection"] != manifest["projection"] and refitted["projection"]["train_views"] > 0
    assert not np.array_equal(np.load(copy / artifacts.EMBEDDINGS), np.load(index / artifacts.EMBEDDINGS))
    assert "A refit is due" not in capsys.readouterr().out
    rec = Recommender.load(copy, embedder=embedder, text_encoder=text_encoder)
    assert rec.search(catalog / "images" / f"{int(rec.metadata.ids[0])}.jpg", 1)[0].id == int(rec.metadata.ids[0])


def test_a_refit_is_due_past_5_percent_new_photos_since_the_last_fit(
    reference_build, embedder, text_encoder, tmp_path, capsys
):
    """New photos count from the last fit on, over updates; removed products do not make it stale."""
    _, reference = reference_build
    index = tmp_path / "index"
    shutil.copytree(reference, index)

    def update_to(rows: list[list[str]], refit: bool = False) -> tuple[dict, str]:
        catalog = make_catalog(tmp_path / f"catalog-{len(rows)}-{refit}", rows)
        manifest = update(CatalogSource(str(catalog)), index, embedder, text_encoder, refit=refit, progress=False)
        return manifest["update"]["since_fit"], capsys.readouterr().out

    header, *rows = sample_rows(51)
    assert update_to([header, *rows[:50]]) == ({"fitted": 48, "new": 2}, "")  # 4%
    since, said = update_to([header, *rows])
    assert (
        since == {"fitted": 48, "new": 3}
        and "A refit is due (6% of the catalog has new photos since the last fit)" in said
    )
    assert update_to([header, *rows], refit=True) == ({"fitted": 51, "new": 0}, "")
    since, said = update_to([header, *rows[:20]])  # 31 removed
    assert since == {"fitted": 51, "new": 0} and "A refit is due" not in said


@pytest.mark.parametrize("problem", ["duplicate id", "other weights", "another update", "no images"])
def test_bad_input_is_one_sentence_and_the_index_is_untouched(
    problem, reference_build, embedder, text_encoder, random_weights, tmp_path
):
    _, reference = reference_build
    index = tmp_path / "index"
    shutil.copytree(reference, index)
    before = artifacts.read_manifest(index)
    catalog = make_catalog(tmp_path / "catalog", sample_rows(48))
    model = embedder
    if problem == "duplicate id":
        rows = rows_of(catalog)
        make_catalog(catalog, rows + [rows[5]])
        expected, error = "lists product .* twice; remove the duplicate row", UserError
    elif problem == "other weights":
        import timm
        import torch

        from recommender.weights import save_weights

        torch.manual_seed(1)
        other = tmp_path / "other.safetensors"
        save_weights(timm.create_model("resnet50", pretrained=False).eval(), other, {"architecture": "resnet50"})
        model = Embedder(other, precision="fp32")
        expected, error = "built with other weights", ArtifactsError
    elif problem == "another update":
        expected, error = "Another build is writing", UserError
    else:
        shutil.rmtree(catalog / "images")
        (catalog / "images").mkdir()
        expected, error = "has no product the index can hold; nothing was changed", UserError
    with pytest.raises(error, match=expected):
        if problem == "another update":
            with artifacts.build_lock(index):
                update(CatalogSource(str(catalog)), index, model, text_encoder, progress=False)
        else:
            update(CatalogSource(str(catalog)), index, model, text_encoder, progress=False)
    assert artifacts.read_manifest(index) == before  # verified, and the same version
    assert not index.with_name(index.name + ".update").exists() or problem == "another update"


def test_an_unreadable_photo_is_skipped_and_named(reference_build, embedder, text_encoder, tmp_path):
    _, reference = reference_build
    index = tmp_path / "index"
    shutil.copytree(reference, index)
    catalog = make_catalog(tmp_path / "catalog", sample_rows(50))  # two added, one of them ...
    new_photo = catalog / "images" / f"{sample_rows(1, start=48)[1][0]}.jpg"
    new_photo.write_bytes(new_photo.read_bytes()[:200])  # ... with a photo cut short
    manifest = update(CatalogSource(str(catalog)), index, embedder, text_encoder, progress=False)
    assert manifest["update"]["added"] == 1 and manifest["update"]["skipped"] == {"image that cannot be decoded": 1}
    assert manifest["count"] == 49


def test_the_app_swaps_to_a_new_version_between_queries_and_refuses_a_broken_one(
    reference_build, embedder, text_encoder, tmp_path, caplog
):
    import gc
    import threading
    import weakref

    from recommender.serve.follow import IndexFollower

    _, reference = reference_build
    index = tmp_path / "index"
    shutil.copytree(reference, index)
    service = Service()
    service.set_recommender(Recommender.load(index, embedder=embedder, text_encoder=text_encoder))
    swaps = []
    follower = IndexFollower(
        service, index, load=lambda v: pytest.fail("the model did not change"), on_swap=lambda: swaps.append(1)
    )
    assert not follower.check()  # nothing new
    old = weakref.ref(service.serving)
    catalog, removed, added = changed_catalog(tmp_path / "catalog")
    photo = SAMPLE / "images" / f"{sample_rows(1, start=20)[1][0]}.jpg"
    errors, done = [], threading.Event()

    def shopper() -> None:  # queries under way while the new version is published and swapped in
        while not done.is_set():
            try:
                service.recommend(photo, 5)
            except Exception as error:  # noqa: BLE001 - any failure is the test's failure
                errors.append(error)

    shoppers = [threading.Thread(target=shopper) for _ in range(2)]
    for thread in shoppers:
        thread.start()
    try:
        update(CatalogSource(str(catalog)), index, embedder, text_encoder, progress=False)
        swapped = follower.check()
    finally:
        done.set()
        for thread in shoppers:
            thread.join()
    assert swapped and swaps == [1]
    assert not errors
    assert (
        len(service.serving.metadata) == 51
        and service.recommend(catalog / "images" / f"{added[0]}.jpg", 1)[0]["results"][0]["id"] == added[0]
    )
    with pytest.raises(UserError, match="was removed from the catalog"):
        service.similar_item(removed[0], 5)
    gc.collect()
    assert old() is None  # the old version's arrays went with it
    # A version that fails its checks: one sentence in the log, the one before goes on serving.
    version = index.resolve()
    broken = version.with_name(version.name + "-broken")
    shutil.copytree(version, broken)
    metadata = broken / artifacts.METADATA
    metadata.write_text(metadata.read_text().replace("Men", "Man", 1))
    (tmp_path / "link").symlink_to(broken)
    (tmp_path / "link").replace(index)
    serving = service.serving
    assert not follower.check() and service.serving is serving
    assert "is not served, the one before goes on" in caplog.text and "does not match its checksum" in caplog.text


def test_an_update_that_changes_nothing_publishes_nothing(reference_build, embedder, text_encoder, tmp_path, capsys):
    _, reference = reference_build
    index = tmp_path / "index"
    shutil.copytree(reference, index)
    catalog = make_catalog(tmp_path / "catalog", sample_rows(48))
    before = artifacts.read_manifest(index)
    assert update(CatalogSource(str(catalog)), index, embedder, text_encoder, progress=False) == before
    assert "already holds this catalog; nothing was published" in capsys.readouterr().out
    assert not index.is_symlink() and not index.with_name(index.name + ".update").exists()


class _CatalogClient:
    """The app serving the catalog less `leaving`, as the load generator's client: each answer as that
    catalog gives it (one result too few with `short`); the products asked about for similar items."""

    def __init__(self, metadata, leaving: frozenset, short: bool) -> None:
        self.metadata, self.leaving, self.short, self.asked = metadata, leaving, short, []

    def upload(self, path) -> dict:
        return {"path": str(path)}

    def call(self, endpoint: str, *args) -> dict:
        if endpoint == "classify":
            return {"articleType": "Tshirts"}
        if endpoint == "browse":
            k, gender, master, item = 12, args[0], args[1], None
        else:  # the photo, URL or product asked about first
            k, gender, master = args[1:4]
            item = args[0] if endpoint == "similar_item" else None
            self.asked += [item] if item is not None else []
        mask = self.metadata.mask({"gender": gender, "masterCategory": master})
        rows = np.arange(len(self.metadata)) if mask is None else np.flatnonzero(mask)
        rows = [r for r in rows if int(self.metadata.ids[r]) not in self.leaving | {item}]
        found = [{"id": int(self.metadata.ids[r]), **self.metadata.attributes(r)} for r in rows[: k - self.short]]
        return {"results": found, "total": len(rows)} if endpoint == "browse" else {"results": found}


def test_the_swap_load_accepts_either_catalog_and_asks_only_for_products_that_stay(tmp_path, reference_build):
    """scripts/loadtest.py --swaps: its first update publishes the source less the leaving products;
    answers from that catalog pass the load's checks, answers one result short do not, and no similar-item
    request asks for a product that leaves."""
    from recommender.metadata import Metadata
    from tests.helpers import script

    loadtest = script("loadtest")
    source = make_catalog(tmp_path / "catalog", sample_rows(48))
    swaps = loadtest.Swaps.prepare(reference_build[1], source, tmp_path / "scratch", 5, [])
    metadata = Metadata.load(swaps.index / "metadata.json")
    ids = {int(i) for i in metadata.ids}
    assert len(swaps.leaving) == 5 and swaps.leaving < ids
    assert {int(r[0]) for r in rows_of(swaps.smaller)[1:]} == ids - swaps.leaving
    assert {int(p.stem) for p in (swaps.smaller / "images").iterdir()} == ids - swaps.leaving

    class Links:
        def url(self, path: str) -> str:
            return f"http://127.0.0.1:9{path}"

    for short in (False, True):
        client = _CatalogClient(metadata, swaps.leaving, short)
        requests = loadtest.make_requests(random.Random(0), metadata, Links(), swaps.leaving)
        problems = [call(client) for _, call in itertools.islice(requests, 300)]
        problems = [p for p in problems if p]
        assert (bool(problems) and all("results instead of" in p for p in problems)) if short else not problems
        assert client.asked and not set(client.asked) & swaps.leaving
