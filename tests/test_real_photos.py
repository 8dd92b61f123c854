"""Real photos are sharper than the 60x80 catalog: queries are brought to the catalog's level of detail,
one code path for catalog photos, uploads, URLs and the API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from recommender import Recommender
from recommender.catalog import CatalogSource
from recommender.images import load_image
from tests.helpers import SAMPLE

HIRES = Path(__file__).parent / "data" / "hires"  # 168x224 photos of sample products (fashion-dev-hires)


def test_a_photo_sharper_than_the_catalog_is_brought_to_its_detail_and_others_are_left_alone(real_index, real_embedder):
    pre = real_embedder.preprocessor
    assert pre.detail_side == 80  # set by building the index: the sample catalog's photos are 60x80
    large, same, tiny = Image.new("RGB", (600, 800), "red"), Image.new("RGB", (60, 80), "red"), Image.new("RGB", (6, 8))
    assert pre.at_catalog_detail(large).size == (60, 80)
    assert pre.at_catalog_detail(same) is same and pre.at_catalog_detail(tiny) is tiny
    wide = pre.at_catalog_detail(Image.new("RGB", (1000, 200)))
    assert wide.size == (80, 16)  # the longer side, whichever it is


def test_the_catalogs_typical_photo_size_is_read_from_the_first_images():
    assert CatalogSource(str(SAMPLE)).typical_side() == 80
    assert CatalogSource(str(SAMPLE), limit=5).typical_side() == 80


def test_the_index_records_the_catalog_detail_and_a_loaded_recommender_queries_at_it(
    text_encoder, real_index, real_weights
):
    manifest = json.loads((real_index / "manifest.json").read_text())
    assert manifest["model"]["preprocessing"]["detail_side"] == 80
    assert manifest["model"]["preprocessing"]["detail_framing"] == 0.25
    rec = Recommender.load(real_index, weights=real_weights, text_encoder=text_encoder)
    assert rec.embedder.detail_side == 80


def test_real_higher_resolution_photos_find_their_catalog_product_first(text_encoder, real_index, real_embedder):
    rec = Recommender.load(real_index, embedder=real_embedder, text_encoder=text_encoder)
    photos = sorted(HIRES.glob("*.jpg"))
    assert len(photos) == 12 and all(load_image(p).size == (168, 224) for p in photos)
    first = [rec.search(p, 5)[0].id == int(p.stem) for p in photos]
    assert all(first), [p.stem for p, hit in zip(photos, first) if not hit]
    # The same photo at the catalog's size, larger still, and the catalog's own image agree on the answer.
    photo = load_image(photos[0])
    for variant in (
        photo.resize((60, 80), Image.Resampling.LANCZOS),
        photo.resize((672, 896)),
        SAMPLE / "images" / f"{photos[0].stem}.jpg",
    ):
        assert rec.search(variant, 1)[0].id == int(photos[0].stem)
    a, b = rec.query(photo).vector, rec.query(photo.resize((672, 896), Image.Resampling.BICUBIC)).vector
    assert float(np.dot(a, b)) > 0.97  # a 4x larger copy carries no more detail once brought to the catalog's
