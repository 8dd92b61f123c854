"""Each catalog source yields the same items; broken rows are skipped and counted, never fatal."""

from __future__ import annotations

import datasets
import pytest

from recommender.catalog import CatalogSource
from recommender.errors import UserError
from tests.helpers import SAMPLE, make_catalog, sample_rows, script


def _as_dataset(rows: list[list[str]]) -> datasets.Dataset:
    header, body = rows[0], rows[1:]
    columns = {name: [r[i] for r in body] for i, name in enumerate(header)}
    columns["id"] = [int(v) for v in columns["id"]]
    columns["image"] = [str(SAMPLE / "images" / f"{r[0]}.jpg") for r in body]
    return datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())


def test_folder_source_skips_and_counts_missing_images_and_orphans(tmp_path):
    rows = sample_rows(10)
    folder = make_catalog(tmp_path / "c", rows)
    (folder / "images" / f"{rows[3][0]}.jpg").unlink()  # a row without an image
    (folder / "images" / "99999999.jpg").write_bytes((SAMPLE / "images" / f"{rows[1][0]}.jpg").read_bytes())
    source = CatalogSource(str(folder))
    items = list(source)
    assert [i.id for i in items] == [int(r[0]) for r in rows[1:]]
    assert items[2].data is None and items[0].data[:2] == b"\xff\xd8"
    assert source.unlisted_images() == ["99999999"]
    assert CatalogSource(str(folder), limit=5).unlisted_images() == []  # a limited stream cannot tell


def test_folder_source_reads_product_names_with_unquoted_commas(tmp_path):
    rows = sample_rows(3)
    folder = make_catalog(tmp_path / "c", rows)
    text = (folder / "styles.csv").read_text().splitlines()
    text[2] = text[2] + ", Limited, Edition"  # the real Kaggle file has a few such rows
    (folder / "styles.csv").write_text("\n".join(text) + "\n")
    items = list(CatalogSource(str(folder)))
    assert items[1].attributes["productDisplayName"].endswith(", Limited, Edition")
    assert items[1].attributes["articleType"] == rows[2][4]


def test_limit_takes_the_first_n_rows(catalog_dir):
    assert [i.position for i in CatalogSource(str(catalog_dir), limit=5)] == [0, 1, 2, 3, 4]


def test_saved_dataset_source_matches_folder_source(tmp_path):
    rows = sample_rows(6)
    _as_dataset(rows).save_to_disk(str(tmp_path / "saved"))
    folder_items = list(CatalogSource(str(make_catalog(tmp_path / "c", rows))))
    saved_items = list(CatalogSource(str(tmp_path / "saved")))
    assert [(i.id, i.attributes) for i in saved_items] == [(i.id, i.attributes) for i in folder_items]
    assert all(i.data[:2] == b"\xff\xd8" for i in saved_items)


def test_hub_source_streams_instead_of_downloading(monkeypatch):
    calls = {}
    local = _as_dataset(sample_rows(4)).to_iterable_dataset()

    def fake_load_dataset(name, split=None, streaming=False, **kwargs):
        calls.update(name=name, split=split, streaming=streaming)
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = list(CatalogSource("ashraq/fashion-product-images-small", limit=3))
    assert calls == {"name": "ashraq/fashion-product-images-small", "split": "train", "streaming": True}
    assert len(items) == 3 and items[0].data[:2] == b"\xff\xd8"


def test_unreachable_hub_is_one_clear_sentence(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="Could not open the Hub dataset .* pass a local folder"):
        list(CatalogSource("someone/some-dataset"))


def test_unknown_folder_is_refused_with_a_hint(tmp_path):
    with pytest.raises(UserError, match="neither a Kaggle-style catalog"):
        CatalogSource(str(tmp_path))
    with pytest.raises(UserError, match="not found"):
        CatalogSource(str(tmp_path / "missing" / "dir"))


def test_repeat_catalog_makes_a_full_size_catalog_of_linked_copies(tmp_path):
    module = script("repeat_catalog")
    source = make_catalog(tmp_path / "small", sample_rows(3))
    assert module.repeat_catalog(source, tmp_path / "big", 7) == 7
    items = list(CatalogSource(str(tmp_path / "big")))
    first = int(sample_rows(1)[1][0])
    assert len(items) == 7 and len({i.id for i in items}) == 7 and items[3].id == first + module.ID_STRIDE
    assert items[3].data == items[0].data and (tmp_path / "big" / "images" / f"{items[3].id}.jpg").is_symlink()
    with pytest.raises(UserError, match="exists already"):
        module.repeat_catalog(source, tmp_path / "big", 7)
    with pytest.raises(UserError, match="--count must be a whole number"):
        module.repeat_catalog(source, tmp_path / "other", 0)


def test_a_stretch_of_the_stream_reads_only_its_rows_and_counts_without_images(tmp_path):
    rows = sample_rows(10)
    rows[4][0] = "not-a-number"
    folder = make_catalog(tmp_path / "c", rows)
    _as_dataset([r for r in rows if r[0].isdigit() or r is rows[0]]).save_to_disk(str(tmp_path / "saved"))
    source = CatalogSource(str(folder))
    assert source.count() == 10 and CatalogSource(str(folder), limit=4).count() == 4
    assert CatalogSource(str(tmp_path / "saved")).count() == 9
    stretch = list(source.rows(2, 6))
    assert [r.position for r in stretch] == [2, 3, 4, 5]
    assert stretch[1].reason == "row without a numeric id" and stretch[1].id == "not-a-number"
    assert [r.position for r in CatalogSource(str(folder), limit=5).rows(3, 9)] == [3, 4]
    saved = list(CatalogSource(str(tmp_path / "saved")).rows(7))
    assert [(r.position, r.id) for r in saved] == [(7, int(rows[9][0])), (8, int(rows[10][0]))]
    # the whole stream records the skipped row, as a build's manifest does
    whole = CatalogSource(str(folder))
    assert len(list(whole)) == 9 and whole.skipped.reasons == {"row without a numeric id": ["not-a-number"]}
