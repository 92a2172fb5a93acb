"""EASE against its closed form, its size guard, exclusions, late items and fold-in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates import History
from tastemaker.candidates.ease import EASE, EASEConfig
from tastemaker.data import Dataset, Snapshot
from tastemaker.errors import ConfigError, NotFittedError


def snapshot(pairs: list[tuple[str, str, float]], catalog: list[str] | None = None) -> Snapshot:
    inter = pd.DataFrame(pairs, columns=["user_id", "item_id", "weight"]).assign(
        rating=np.nan, timestamp_us=0, last_timestamp_us=0
    )
    return Snapshot.from_interactions(inter, pd.DataFrame({"item_id": catalog}) if catalog else None)


def toy() -> Snapshot:
    # i0 by a, b, c; i1 by a, b; i2 by c; i3 only in the catalog
    pairs = [("a", "i0", 1.0), ("b", "i0", 1.0), ("c", "i0", 1.0), ("a", "i1", 1.0), ("b", "i1", 1.0), ("c", "i2", 1.0)]
    return snapshot(pairs, ["i0", "i1", "i2", "i3"])


def closed_form(x: np.ndarray, l2: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def test_two_items_weigh_co_occurrence_by_the_source_items_popularity() -> None:
    # x by a, b, c; y by a, c: by hand, B[x, y] = both / (users of x + l2) = 2 / 4, B[y, x] = 2 / 3
    snap = snapshot([("a", "x", 1.0), ("b", "x", 1.0), ("c", "x", 1.0), ("a", "y", 1.0), ("c", "y", 1.0)])
    ease = EASE(EASEConfig(l2=1.0)).fit(snap)
    np.testing.assert_allclose(ease.weights, [[0.0, 0.5], [2 / 3, 0.0]], rtol=1e-6)


def test_weights_match_the_closed_form_over_items_with_interactions() -> None:
    snap = toy()
    ease = EASE(EASEConfig(l2=2.0)).fit(snap)
    assert ease.active.tolist() == [0, 1, 2]  # i3 has no interactions, so no weights
    np.testing.assert_allclose(ease.weights, closed_form(snap.matrix.toarray()[:, :3], 2.0), rtol=1e-5, atol=1e-7)


def test_binary_ignores_weights_and_weighted_uses_them() -> None:
    pairs = [("a", "i0", 4.0), ("a", "i1", 1.0), ("b", "i0", 2.0), ("b", "i2", 1.0), ("c", "i1", 1.0)]
    snap = snapshot(pairs)
    x = snap.matrix.toarray()
    binary = EASE(EASEConfig(l2=1.0)).fit(snap)
    weighted = EASE(EASEConfig(l2=1.0, binary=False)).fit(snap)
    np.testing.assert_allclose(binary.weights, closed_form((x > 0).astype(float), 1.0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(weighted.weights, closed_form(x, 1.0), rtol=1e-5, atol=1e-7)


def test_scores_are_history_times_weights_and_seen_or_silent_items_are_never_returned() -> None:
    snap = toy()
    ease = EASE(EASEConfig(l2=1.0)).fit(snap)
    b = closed_form(snap.matrix.toarray()[:, :3], 1.0)
    ids, scores = ease.candidates(np.arange(3), 4, exclude=snap.matrix)
    # a and b saw i0, i1 -> only i2 is left; c saw i0, i2 -> only i1; i3 never (no interactions)
    assert ids.tolist() == [[2, -1, -1, -1], [2, -1, -1, -1], [1, -1, -1, -1]]
    np.testing.assert_allclose(scores[:, 0], [b[0, 2] + b[1, 2], b[0, 2] + b[1, 2], b[0, 1] + b[2, 1]], rtol=1e-5)
    assert np.isneginf(scores[:, 1:]).all()


def test_more_items_than_max_items_is_refused_and_leaves_the_source_unfitted() -> None:
    ease = EASE(EASEConfig(max_items=2))
    with pytest.raises(ConfigError, match=r"has 3 items with interactions, more than max_items=2; use als or item_knn"):
        ease.fit(toy())
    with pytest.raises(NotFittedError, match="EASE is not fitted yet"):
        ease.candidates(np.array([0]), 3)


def test_using_ease_before_fit_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError, match="EASE is not fitted yet; call fit"):
        EASE().scores(np.array([0]))


def test_folded_history_moves_a_users_list_without_a_retrain() -> None:
    snap = toy()
    ease = EASE(EASEConfig(l2=1.0)).fit(snap)
    b = ease.weights.copy()
    events = pd.DataFrame({
        "event_id": ["e1", "e2"], "user_id": ["newcomer", "c"], "item_id": ["i0", "i1"],
        "type": ["view", "view"], "value": [np.nan, np.nan], "timestamp_us": [10, 11],
    })  # fmt: skip
    ease.fold_in(History.from_events(events, ease.item_ids, config=snap.config))
    new, c = ease.user_index(["newcomer", "c"])
    ids, scores = ease.candidates(np.array([new]), 3, exclude=ease.user_items(np.array([new])))
    assert ids.tolist() == [[1, 2, -1]]  # i0 alone points at i1 (co-occurs twice) before i2 (once)
    np.testing.assert_allclose(scores[0, :2], [b[0, 1], b[0, 2]], rtol=1e-6)
    # c had i0, i2 and folds in i1: i1's row of B joins its scores
    np.testing.assert_allclose(ease.scores(np.array([c])), [b[0] + b[1] + b[2]], rtol=1e-5)
    assert np.array_equal(ease.weights, b)


def test_a_user_without_history_gets_no_candidates() -> None:
    snap = toy()
    ease = EASE().fit(snap)
    empty = pd.DataFrame(columns=["event_id", "user_id", "item_id", "type", "value", "timestamp_us"])
    ease.fold_in(History.from_events(empty, ease.item_ids, users=pd.DataFrame({"user_id": ["onboarded"]})))
    ids, scores = ease.candidates(ease.user_index(["onboarded", "a"]), 2)
    assert ids.tolist()[0] == [-1, -1] and np.isneginf(scores[0]).all()
    assert (ids[1] >= 0).all()


def test_items_added_after_fit_are_never_proposed() -> None:
    snap = toy()
    ease = EASE(EASEConfig(l2=1.0)).fit(snap)
    added = ease.add_items(pd.DataFrame({"item_id": ["late"]}))
    assert added.tolist() == [4]
    wide = sp.csr_matrix(([1.0], ([0], [2])), shape=(3, 5))  # as wide as the grown catalog
    ids, _ = ease.candidates(np.arange(3), 5, exclude=wide)
    assert 4 not in ids and 2 not in ids[0]
    assert set(ids[1][ids[1] >= 0]) == {0, 1, 2}


def test_lists_on_a_synthetic_world_skip_seen_items_best_first(small_world: Dataset) -> None:
    snap = Snapshot.from_dataset(small_world)
    users = np.arange(60)
    ids, scores = EASE().fit(snap).candidates(users, 20, exclude=snap.matrix[users])
    assert ids.shape == (60, 20) and (ids >= 0).all()
    assert all(not set(ids[r]) & set(snap.matrix[r].indices) for r in range(60))
    assert (np.diff(scores, axis=1) <= 0).all()
