"""The fitted parts, on synthetic descriptors: the attribute heads and the search space."""

from __future__ import annotations

import numpy as np

from recommender.foreground import COLOUR_BINS
from recommender.heads import Heads, HeadSettings, train_heads
from recommender.search_space import SearchSpace, SearchSpaceSettings, _unit, fit_search_space
from recommender.split import heldout_mask
from recommender.vocabulary import HEAD_COLUMNS


def test_heads_fold_their_standardisation_in_and_survive_the_artifacts_round_trip(tmp_path):
    """The signal sits in a tiny-scale dimension next to large noise: only standardised training finds it,
    and the folded heads must find it on raw descriptors, as callers pass them."""
    rng = np.random.default_rng(0)
    n = 600
    kinds, sexes = rng.integers(0, 3, n), rng.integers(0, 2, n)
    x = rng.normal(size=(n, 16)).astype(np.float32) * 50.0
    x[:, 0] = kinds * 1e-3 + rng.normal(scale=1e-4, size=n)
    x[:, 1] = sexes * 1e-3 + rng.normal(scale=1e-4, size=n)
    columns = {c: np.full(n, "") for c in HEAD_COLUMNS} | {
        "articleType": kinds.astype(str),
        "gender": np.array(["Men", "Women"])[sexes],
    }
    fit = np.arange(n) % 5 != 0
    heads = train_heads(
        x, np.arange(n), columns, HeadSettings(hidden=32, steps=300, epochs=1000, dropout=0.0), fit=fit, heldout=~fit
    )
    assert set(heads) == {"articleType", "gender"}  # columns without two classes get no head
    for column, truth in (("articleType", kinds.astype(str)), ("gender", np.array(["Men", "Women"])[sexes])):
        predicted = np.array(heads[column].classes)[np.argmax(heads.scores(x[~fit])[column], axis=1)]
        assert (predicted == truth[~fit]).mean() > 0.95 and heads[column].heldout_accuracy > 0.95
    heads.save(tmp_path / "heads.npz")
    again = Heads.load(tmp_path / "heads.npz", heads.describe())
    for column in heads:
        np.testing.assert_array_equal(again.scores(x)[column], heads.scores(x)[column])
    one = heads.probabilities(x[0])  # one descriptor: every head from one pass through the shared layer
    assert set(one) == {"articleType", "gender"} and np.isclose(one["gender"].sum(), 1.0)
    assert [label for label, _ in heads.top(one, top=1)["gender"]] == [np.array(["Men", "Women"])[sexes[0]]]


def _views_nearest_their_own_photo(
    space: SearchSpace, descriptors: np.ndarray, views: np.ndarray, rows: np.ndarray
) -> float:
    d = descriptors.shape[1] - COLOUR_BINS

    def z(f: np.ndarray) -> np.ndarray:
        return _unit(_unit(f[:, :d]) @ space.weight.T + space.bias)

    catalog, shots = z(descriptors), z(views)
    return float((np.argmax(shots @ catalog.T, axis=1) == rows).mean())


def test_the_instance_loss_keeps_a_synthetic_view_closest_to_its_own_photo():
    """Items of one class differ only in small details; a view is its photo plus noise. The class loss
    alone has no reason to keep those details, the instance loss does."""
    rng = np.random.default_rng(1)
    n, d = 400, 64
    ids = np.arange(10_000, 10_000 + n)
    classes = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, d)) * 3
    features = centres[classes] + rng.normal(size=(n, d))
    descriptors = np.hstack([features, np.ones((n, COLOUR_BINS))]).astype(np.float32)
    fit_rows = np.flatnonzero(~heldout_mask(ids))[:150]
    views = descriptors[fit_rows] + np.hstack(
        [rng.normal(scale=1.2, size=(len(fit_rows), d)), np.zeros((len(fit_rows), COLOUR_BINS))]
    )
    columns = {c: classes.astype(str) for c in ("articleType", "gender", "baseColour", "subCategory", "usage")}
    found = {
        w: _views_nearest_their_own_photo(
            fit_search_space(
                descriptors,
                ids,
                columns,
                views.astype(np.float32),
                ids[fit_rows],
                settings=SearchSpaceSettings(dim=16, raw_dims=8, instance_weight=w),
            ),
            descriptors,
            views,
            fit_rows,
        )
        for w in (0.0, 1.0)
    }
    assert found[1.0] > found[0.0] + 0.1, found
    # A catalog too small for any synthetic view still gets a search space (no instance loss then).
    alone = fit_search_space(descriptors, ids, columns, None, None, settings=SearchSpaceSettings(dim=16, raw_dims=8))
    assert alone.weight.shape == (16, d) and alone.info["train_views"] == 0


def test_training_sample_caps_fit_rows_deterministically_and_keeps_required_rows():
    from recommender.split import training_sample

    ids = np.arange(50_000, 50_500)
    fit = ~heldout_mask(ids)
    assert training_sample(ids, fit, cap=len(ids)) is fit  # under the cap: the fit part itself
    keep = np.zeros(len(ids), bool)
    keep[:40] = True
    sample = training_sample(ids, fit, cap=100, keep=keep)
    assert not (sample & ~fit).any()  # never a held-out row
    assert (sample & fit & keep).sum() == (fit & keep).sum() and 100 <= sample.sum() <= 140
    shuffled = np.random.default_rng(0).permutation(len(ids))  # the choice follows the ids, not their order
    assert set(ids[shuffled][training_sample(ids[shuffled], fit[shuffled], cap=100)]) == set(
        ids[training_sample(ids, fit, cap=100)]
    )


def test_principal_directions_of_fewer_rows_than_dimensions_are_the_second_moments_eigenvectors():
    """A small catalog's directions come from its n x n Gram matrix: the same as the d x d second moment's
    (up to sign), then completed to an orthonormal basis."""
    from recommender.search_space import principal_directions

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40, 96)) * np.linspace(3, 0.1, 96)).astype(np.float32)
    small = principal_directions([x[:25], x[25:]], 60)  # 40 rows < 96 dims: the Gram route
    values, vectors = np.linalg.eigh(x.astype(np.float64).T @ x / len(x))
    reference = vectors[:, np.argsort(-values)[:40]].T
    assert small.shape == (60, 96)
    np.testing.assert_allclose(np.abs((small[:40] * reference).sum(axis=1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(small @ small.T, np.eye(60), atol=1e-5)  # an orthonormal basis
    many = np.concatenate([x] * 3)  # 120 rows > 96: the second moment's own eigenvectors
    np.testing.assert_allclose(np.abs((principal_directions([many], 40) * reference).sum(axis=1)), 1.0, atol=1e-4)
