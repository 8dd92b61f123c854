"""Product trimming, the colour descriptor and the synthetic shopper views used for training."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from recommender.augment import gets_view, shopper_view
from recommender.foreground import COLOUR_BINS, LEVELS, colour_histogram, trim_background
from recommender.split import is_heldout


def product_on(
    background: tuple[int, int, int], size=(200, 240), box=(30, 40, 110, 200), colour=(200, 20, 20)
) -> Image.Image:
    img = Image.new("RGB", size, background)
    img.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), colour), box[:2])
    return img


def close_to(size: tuple[int, int], expected: tuple[int, int], image_side: int) -> bool:
    """The box is found on a copy at most 128 px wide: exact to one pixel of that copy per edge."""
    slack = 2 * int(np.ceil(image_side / 128))
    return all(abs(a - b) <= slack for a, b in zip(size, expected))


def test_trim_crops_a_product_on_white_to_its_bounding_box():
    assert close_to(trim_background(product_on((255, 255, 255))).size, (80, 160), 240)
    small = product_on((255, 255, 255), size=(60, 80), box=(10, 5, 40, 70))  # catalog size: exact
    assert trim_background(small).size == (30, 65)


def test_trim_follows_a_darker_background_after_an_exposure_change():
    img = ImageEnhance.Brightness(product_on((255, 255, 255))).enhance(0.8)  # white -> 204 grey
    assert close_to(trim_background(img).size, (80, 160), 240)


def test_trim_keeps_photos_without_a_plain_background_or_with_only_a_speck():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 90, 3), np.uint8))
    assert trim_background(noise).size == noise.size
    speck = product_on((255, 255, 255), box=(10, 10, 13, 13))
    assert trim_background(speck).size == speck.size


def test_trim_of_a_large_photo_scales_the_box_back_to_full_resolution():
    big = product_on((255, 255, 255), size=(2000, 2400), box=(300, 400, 1100, 2000))
    assert close_to(trim_background(big).size, (800, 1600), 2400)


def test_colour_histogram_describes_the_product_not_the_background():
    hist = colour_histogram(product_on((255, 255, 255), size=(100, 120), box=(20, 20, 60, 100)))
    assert hist.shape == (COLOUR_BINS,) and np.isclose(np.linalg.norm(hist), 1.0)
    red_bin = (200 // (256 // LEVELS)) * LEVELS * LEVELS + 0 + 0
    assert hist[red_bin] > 0.999
    wider_margin = product_on((255, 255, 255), size=(128, 128), box=(40, 30, 80, 110))
    assert np.allclose(colour_histogram(wider_margin), hist, atol=1e-6)


def test_synthetic_views_are_deterministic_and_never_of_held_out_items():
    ids = range(1000, 3000)
    chosen = [i for i in ids if gets_view(i, position=0)]
    assert chosen and not any(is_heldout(i) for i in chosen)
    assert 0.2 < len(chosen) / len(ids) < 0.35
    assert not gets_view(chosen[0], position=10**6)  # beyond the window: a fixed cost on large catalogs
    photo = product_on((255, 255, 255), size=(60, 80), box=(10, 10, 50, 70))
    a, b = shopper_view(photo, seed=7), shopper_view(photo, seed=7)
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b)) and max(a.size) > 80
