"""Search by words with the real text model: what the words are understood to ask for, the text
model itself, search by words, photo + words, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recommender import Recommender, artifacts
from recommender.errors import ArtifactsError, UserError
from recommender.images import load_image
from recommender.text_model import DIM, MODEL_SHA256
from recommender.words import MAX_QUERY_CHARS, Vocabulary, clean_query, stem, tokens
from tests.helpers import SAMPLE

LABELS = {
    "gender": ["Men", "Women", "Unisex", "Boys", "Girls"],
    "baseColour": ["Black", "White", "Navy Blue", "Blue", "Red", "Grey", "Off White"],
    "articleType": ["Tshirts", "Casual Shoes", "Sports Shoes", "Handbags", "Clutches", "Heels", "Flip Flops", "Shirts"],
    "usage": ["Casual", "Formal", "Sports"],
}


@pytest.fixture(scope="module")
def rec(real_index, real_embedder, text_encoder) -> Recommender:
    return Recommender.load(real_index, embedder=real_embedder, text_encoder=text_encoder)


def test_words_are_stemmed_like_catalog_labels():
    assert [stem(w) for w in ("shoes", "dresses", "watches", "accessories", "jeans", "glass", "his")] == [
        "shoe",
        "dress",
        "watch",
        "accessory",
        "jean",
        "glass",
        "his",
    ]
    assert tokens("Men's T-Shirts") == ["men", "t", "shirt"]


@pytest.mark.parametrize(
    "text, wanted, unwanted",
    [
        ("navy polo for men", {"gender": ["Men"], "baseColour": ["Navy Blue"], "articleType": ["Tshirts"]}, {}),
        (
            "Women's BLACK purse",
            {"gender": ["Women"], "baseColour": ["Black"], "articleType": ["Handbags", "Clutches"]},
            {},
        ),
        (
            "white sneakers, not black",
            {"baseColour": ["White"], "articleType": ["Casual Shoes", "Sports Shoes"]},
            {"baseColour": {"Black"}},
        ),
        ("running shoes", {"articleType": ["Sports Shoes"]}, {}),  # the longest phrase wins over "shoe"
        ("casual shoes in off-white", {"articleType": ["Casual Shoes"], "baseColour": ["Off White"]}, {}),
        ("formal shirt for her", {"usage": ["Formal"], "articleType": ["Shirts"], "gender": ["Women"]}, {}),
        ("something nice", {}, {}),
    ],
)
def test_a_query_names_catalog_labels_in_everyday_words(text, wanted, unwanted):
    understood = Vocabulary(LABELS).understand(text)
    assert {c: sorted(k for k, v in credit.items() if v == 1.0) for c, credit in understood.wanted.items()} == {
        c: sorted(v) for c, v in wanted.items()
    }
    assert understood.unwanted == unwanted
    if "gender" in wanted:
        assert understood.wanted["gender"]["Unisex"] == 0.5  # a unisex item half-fits "for men"


def test_synonyms_only_name_labels_the_catalog_has():
    understood = Vocabulary({"articleType": ["Wallets"]}).understand("purse")
    assert understood.wanted == {"articleType": {"Wallets": 1.0}}
    assert not Vocabulary({"articleType": ["Tshirts"]}).understand("red purse")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("  \t\n ", "empty"),
        (None, "Describe what you are looking for"),
        (42, "Describe what you are looking for"),
        ("x" * (MAX_QUERY_CHARS + 1), "keep it under 2,000"),
        ("😀🔥👗", "no words in it"),
        ("红色连衣裙", "in English"),
    ],
)
def test_unsearchable_words_get_one_sentence(text, message):
    with pytest.raises(UserError, match=message):
        clean_query(text)


def test_control_characters_and_accents_are_tolerated():
    assert clean_query("red\x00 heels\x1b  ") == "red heels"
    assert clean_query("robe rouge élégante") == "robe rouge élégante"


def test_the_text_model_is_the_real_minilm(text_encoder):
    assert text_encoder.sha256 == MODEL_SHA256
    vectors = text_encoder.encode(["red heels", "crimson high-heeled shoes", "a leather wallet for men", ""])
    assert vectors.shape == (4, DIM) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    # batches by length give the same vectors as one at a time
    np.testing.assert_allclose(vectors[1], text_encoder.encode_one("crimson high-heeled shoes"), atol=1e-5)
    # a repeated text (a catalog's same name and labels) is read once and given to every row that has it
    repeated = text_encoder.encode(["red heels", "a leather wallet for men", "red heels"])
    np.testing.assert_allclose(repeated, vectors[[0, 2, 0]], atol=1e-5)
    assert text_encoder.encode([]).shape == (0, DIM)


def test_search_by_words_puts_what_the_words_name_first(rec):
    results = rec.search_text("black tee for men", 5)
    assert len(results) == 5
    for m in results:
        assert (m.attributes["articleType"], m.attributes["baseColour"], m.attributes["gender"]) == (
            "Tshirts",
            "Black",
            "Men",
        )
    assert [m.score for m in results] == sorted((m.score for m in results), reverse=True)
    watches = rec.search_text("wristwatch", 10)
    assert all(m.attributes["articleType"] == "Watches" for m in watches)


def test_search_by_words_respects_filters_and_k(rec):
    results = rec.search_text("shirt", 7, {"gender": "Women"})
    assert len(results) == 7 and all(m.attributes["gender"] == "Women" for m in results)
    assert rec.search_text("shirt", 3, {"gender": "Girls", "articleType": "Watches"}) == []
    with pytest.raises(UserError, match="k must be"):
        rec.search_text("shirt", 0)


def test_words_without_a_known_label_are_matched_by_meaning(rec):
    results = rec.search_text("something to wear on my wrist", 5)
    assert sum(m.attributes["articleType"] == "Watches" for m in results) >= 3


def test_photo_plus_a_colour_brings_that_colour_in_the_photos_type(rec):
    row = next(
        r
        for r in range(len(rec.metadata))
        if rec.metadata.columns["articleType"][r] == "Shirts" and rec.metadata.columns["baseColour"][r] == "Blue"
    )
    photo = load_image(SAMPLE / "images" / f"{rec.metadata.ids[row]}.jpg")
    plain = rec.search(photo, 5)
    assert sum(m.attributes["baseColour"] == "Red" for m in plain) == 0
    red = rec.search(photo, 5, text="in red")
    assert all(m.attributes["baseColour"] == "Red" for m in red)
    assert sum(m.attributes["articleType"] == "Shirts" for m in red) >= 4
    assert rec.search(photo, 5, text="   ") == plain  # blank words change nothing


def test_an_index_built_with_another_text_model_is_refused(real_index, tmp_path, real_embedder, text_encoder):
    copy = tmp_path / "index"
    shutil.copytree(real_index, copy)
    manifest = json.loads((copy / artifacts.MANIFEST).read_text())
    manifest["text_model"].update(sha256="0" * 64, source="another/model")
    (copy / artifacts.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactsError, match="another text model .*another/model.* --text-model or rebuild"):
        Recommender.load(copy, embedder=real_embedder, text_encoder=text_encoder)


def test_an_overlong_description_is_refused_before_any_work_on_its_characters(monkeypatch):
    import unicodedata

    from recommender import words

    looked_at = []
    monkeypatch.setattr(words.unicodedata, "category", lambda c: looked_at.append(c) or unicodedata.category(c))
    with pytest.raises(UserError, match="10,000,000 characters long; keep it under 2,000"):
        clean_query("a" * 10_000_000)
    assert not looked_at
