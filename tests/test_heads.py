"""The attribute heads' honesty and balance, on synthetic descriptors: temperatures, calibration error,
rare classes, the other photos of the products (synthetic views, mirror images) they may train on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recommender import heads as heads_module
from recommender.heads import (
    Heads,
    HeadSettings,
    calibration_error,
    fit_temperature,
    softmax,
    train_heads,
)
from recommender.serve.ui.present import details_markdown, summary_line
from recommender.vocabulary import HEAD_COLUMNS

SMALL = HeadSettings(hidden=32, steps=300, epochs=1000, dropout=0.0)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with(temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 6))
    truth = np.array([rng.choice(6, p=p) for p in softmax(logits / temperature)])
    fitted = fit_temperature(logits, truth)
    assert fitted == pytest.approx(temperature, rel=0.1)
    # Calibrated, the confidence matches the accuracy; the raw logits are off by much more.
    assert calibration_error(softmax(logits / fitted), truth) < 0.03
    assert calibration_error(softmax(logits), truth) > 0.08


def test_calibration_error_is_the_gap_between_confidence_and_accuracy():
    sure_and_right = np.array([[0.9, 0.1]] * 10)
    assert calibration_error(sure_and_right, np.zeros(10, int)) == pytest.approx(0.1)
    assert calibration_error(sure_and_right, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.4)


def overlapping_classes(counts: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes close enough to overlap, `counts` items each."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    centres = rng.normal(size=(len(counts), 8)) * 1.2
    return (centres[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32), labels


def columns_of(labels: np.ndarray) -> dict[str, np.ndarray]:
    n = len(labels)
    return {c: np.full(n, "") for c in HEAD_COLUMNS} | {
        "articleType": np.array([f"type{v}" for v in labels]),
        "gender": np.array(["Men", "Women"])[np.arange(n) % 2],
    }


def test_heads_record_their_temperature_and_calibration_error_and_apply_them(tmp_path):
    x, labels = overlapping_classes((800, 600, 400))
    ids = np.arange(10_000, 10_000 + len(labels))
    fit = np.arange(len(labels)) % 4 != 0
    heads = train_heads(x, ids, columns_of(labels), SMALL, fit=fit, heldout=~fit)
    head = heads["articleType"]
    assert head.temperature != 1.0 and all(0 <= e < 1 for e in head.heldout_ece)
    some = np.arange(0, len(labels), 6)  # 300 products of every class: ~22 to calibrate, too few to fit one
    few = train_heads(x[some], ids[some], columns_of(labels[some]), SMALL, fit=fit[some], heldout=~fit[some])
    assert "articleType" in few and all(few[c].temperature == 1.0 for c in few)
    assert head.train_rows == fit.sum()  # the temperature's calibration part is trained on in the end too
    heads.save(tmp_path / "heads.npz")
    again = Heads.load(tmp_path / "heads.npz", heads.describe())
    assert again["articleType"].temperature == head.temperature
    np.testing.assert_allclose(
        again.probabilities(x[:5])["articleType"], softmax(heads.scores(x[:5])["articleType"] / head.temperature)
    )
    described = heads.describe()
    del described["articleType"]["temperature"], described["articleType"]["heldout_ece"]  # an older index
    assert Heads.load(tmp_path / "heads.npz", described)["articleType"].temperature == 1.0


def test_the_heads_train_on_up_to_their_own_cap_of_fit_products(monkeypatch):
    x, labels = overlapping_classes((400, 300, 300))
    ids = np.arange(10_000, 10_000 + len(labels))
    heldout = np.arange(len(labels)) % 5 == 0
    settings = dataclasses.replace(SMALL, steps=50, calibration="none")
    monkeypatch.setattr(heads_module, "HEADS_MAX_TRAIN_ROWS", 500)
    assert train_heads(x, ids, columns_of(labels), settings, heldout=heldout)["articleType"].train_rows == 500
    monkeypatch.setattr(heads_module, "HEADS_MAX_TRAIN_ROWS", 100_000)
    every = train_heads(x, ids, columns_of(labels), settings, heldout=heldout)
    assert every["articleType"].train_rows == (~heldout).sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_rows_are_standardised_a_chunk_at_a_time_as_one_whole(monkeypatch, dtype):
    monkeypatch.setattr(heads_module, "CHUNK_ROWS", 7)  # several chunks of rows and of other photos
    rng = np.random.default_rng(0)
    descriptors = rng.normal(3.0, 2.0, size=(60, 5)).astype(np.float32)
    rows, extra = np.arange(1, 60, 2), rng.normal(size=(9, 5)).astype(np.float32)
    x, mean, scale = heads_module._standardised(descriptors, rows, extra, dtype)
    whole = np.concatenate([descriptors[rows], extra])
    np.testing.assert_allclose(mean, whole.mean(0), rtol=1e-5)
    np.testing.assert_allclose(scale, whole.std(0), rtol=1e-5)
    assert x.dtype == dtype and x.shape == whole.shape
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bf16 keeps 8 bits of mantissa
    expected = (whole - whole.mean(0)) / whole.std(0)
    np.testing.assert_allclose(x.float().numpy(), expected, atol=tolerance, rtol=tolerance)


def test_logit_adjustment_finds_more_of_the_rare_classes():
    x, labels = overlapping_classes((1500, 60, 40))
    ids = np.arange(10_000, 10_000 + len(labels))
    fit = np.arange(len(labels)) % 3 != 0

    def rare_recall(balance: str) -> float:
        settings = HeadSettings(hidden=32, steps=300, epochs=1000, dropout=0.0, balance=balance, calibration="none")
        heads = train_heads(x, ids, columns_of(labels), settings, fit=fit, heldout=~fit)
        per_class = heads["articleType"].per_class
        return float(np.mean([per_class[c][0] for c in ("type1", "type2")]))

    assert rare_recall("logit-adjusted") > rare_recall("none") + 0.05


@pytest.mark.parametrize("kind", ["views", "mirrors"])
def test_other_photos_train_the_heads_only_when_asked_and_only_for_training_products(kind):
    """A view or mirror image that lies far from every photo is learned as its product's class only
    when the settings ask for that kind of photo."""
    x, labels = overlapping_classes((300, 300))
    ids = np.arange(10_000, 10_000 + len(labels))
    fit = np.arange(len(labels)) % 4 != 0
    rows = np.flatnonzero(fit)[:200]
    shift = np.zeros(8, np.float32)
    shift[0] = 20.0
    views = x[rows] + shift  # the "shopper" views: moved far along one axis
    probe = x[~fit] + shift
    truth = labels[~fit]

    def accuracy(use: bool, photo_ids: np.ndarray = ids[rows]) -> float:
        settings = HeadSettings(
            hidden=32, steps=300, epochs=1000, dropout=0.0, calibration="none", views=False, mirrors=False
        )
        settings = dataclasses.replace(settings, **{kind: use})
        others = {kind: views, f"{kind[:-1]}_ids": photo_ids}
        heads = train_heads(x, ids, columns_of(labels), settings, fit=fit, heldout=~fit, **others)
        return float((heads.scores(probe)["articleType"].argmax(1) == truth).mean())

    assert accuracy(True) > accuracy(False) + 0.1
    # Labelled as held-out products, they are left out: a held-out product's photo is never trained on.
    assert accuracy(True, np.resize(ids[~fit], len(rows))) == accuracy(False)


def test_an_unsure_head_says_what_it_looks_like():
    sure = {"articleType": [{"label": "Tshirts", "confidence": 0.82}, {"label": "Tops", "confidence": 0.1}]}
    unsure = {"articleType": [{"label": "Tops", "confidence": 0.45}, {"label": "Tshirts", "confidence": 0.38}]}
    colour = {"baseColour": [{"label": "White", "confidence": 0.61}]}
    assert summary_line(sure | colour) == "What it is: **Tshirts** 82% · **White** 61%"
    assert summary_line(unsure | colour) == "What it is: looks like **Tops** 45% or **Tshirts** 38% · **White** 61%"
    table = details_markdown({"usage": unsure["articleType"], "gender": [{"label": "Men", "confidence": 0.9}]})
    assert "| Tops or Tshirts | 45% / 38% |" in table and "| Men | 90% |" in table
