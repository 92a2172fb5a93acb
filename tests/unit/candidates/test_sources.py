"""The baseline sources against the CandidateSource contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates import CandidateSource, ImplicitALS, Popularity, RandomSource
from tastemaker.candidates.merge import SOURCES
from tastemaker.data import Dataset, Snapshot
from tastemaker.errors import NotFittedError


def toy_snapshot() -> Snapshot:
    # item i0 liked by 3 users, i1 by 2, i2 by 1, i3 by none (catalog only)
    pairs = [("a", "i0"), ("b", "i0"), ("c", "i0"), ("a", "i1"), ("b", "i1"), ("c", "i2")]
    inter = pd.DataFrame(pairs, columns=["user_id", "item_id"]).assign(
        weight=1.0, rating=np.nan, timestamp_us=0, last_timestamp_us=0
    )
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"]})
    return Snapshot.from_interactions(inter, items)


@pytest.mark.parametrize("source", [Popularity(), RandomSource(), ImplicitALS()])
def test_using_a_source_before_fit_is_a_clear_error(source: CandidateSource) -> None:
    with pytest.raises(NotFittedError, match="is not fitted yet; call fit"):
        source.candidates(np.array([0]), 3)


def test_popularity_ranks_by_users_and_skips_excluded_items() -> None:
    snap = toy_snapshot()
    pop = Popularity().fit(snap)
    ids, scores = pop.candidates(np.arange(3), 3)
    assert ids.tolist() == [[0, 1, 2]] * 3 and scores[0].tolist() == [3, 2, 1]
    ids, scores = pop.candidates(np.arange(3), 4, exclude=snap.matrix)
    # a saw i0, i1; b saw i0, i1; c saw i0, i2 -> what is left, most popular first
    assert ids.tolist() == [[2, 3, -1, -1], [2, 3, -1, -1], [1, 3, -1, -1]]
    assert np.isneginf(scores[:, 2:]).all()


def test_random_is_seeded_per_user_and_respects_exclusions() -> None:
    snap = toy_snapshot()
    ids, _ = RandomSource(seed=1).fit(snap).candidates(np.arange(3), 4, exclude=snap.matrix)
    again, _ = RandomSource(seed=1).fit(snap).candidates(np.arange(3), 4, exclude=snap.matrix)
    assert np.array_equal(ids, again)
    for row, user in enumerate(range(3)):
        shown = set(ids[row][ids[row] >= 0])
        assert shown == set(range(4)) - set(snap.matrix[user].indices)


def test_implicit_als_returns_unseen_items_best_first(small_world: Dataset) -> None:
    snap = Snapshot.from_dataset(small_world)
    users = np.arange(50)
    ids, scores = ImplicitALS(seed=0).fit(snap).candidates(users, 20, exclude=snap.matrix[users])
    assert ids.shape == (50, 20)
    seen = snap.matrix[users]
    assert all(not set(ids[r]) & set(seen[r].indices) for r in range(50))
    finite = np.where(np.isfinite(scores), scores, -np.inf)
    assert (np.diff(finite, axis=1) <= 1e-6).all()  # non-increasing scores
    assert isinstance(snap.matrix, sp.csr_matrix)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_one_user_at_a_time_gets_the_rows_of_the_batch(small_world: Dataset, name: str) -> None:
    """Sources take shortcuts for a one-user request (the serving path): they must answer as the batch does."""
    snap = Snapshot.from_dataset(small_world)
    source = SOURCES[name](42).fit(snap)
    users = np.arange(0, snap.n_users, max(1, snap.n_users // 25))
    exclude = snap.matrix[users]
    batch_ids, batch_scores = source.candidates(users, 31, exclude=exclude)
    for row, user in enumerate(users):
        ids, scores = source.candidates(np.array([user]), 31, exclude=exclude[row])
        np.testing.assert_allclose(scores[0], batch_scores[row], rtol=1e-4, atol=1e-6)
        ranked = scores[0]
        gaps = np.abs(np.diff(ranked)) > 1e-4 * np.abs(ranked[1:])
        distinct = (np.r_[True, gaps] & np.r_[gaps, True] & np.isfinite(ranked))[:30]  # tied items may swap
        np.testing.assert_array_equal(ids[0][:30][distinct], batch_ids[row][:30][distinct])


def test_als_warm_started_from_a_fit_on_part_of_the_data_continues_from_its_factors(small_world: Dataset) -> None:
    from tastemaker.candidates.als import ALS, ALSConfig

    snap = Snapshot.from_dataset(small_world)
    keep = np.random.default_rng(0).random(len(snap.interactions)) < 0.8
    config = ALSConfig(factors=16, iterations=10, warm_iterations=1)
    part = ALS(config, seed=1).fit(snap.restricted(keep))
    warm = ALS(config, seed=1).warm_from(part).fit(snap)
    cold = ALS(config.model_copy(update={"iterations": 1}), seed=1).fit(snap)
    assert warm.model.iterations == 1
    # one iteration from the part's factors stays near them; one iteration from random factors does not
    near = np.abs(warm.item_factors - part.item_factors).mean()
    assert near < 0.5 * np.abs(cold.item_factors - part.item_factors).mean()
    # another config, or other indices, start cold
    other = ALS(config.model_copy(update={"factors": 8}), seed=1).warm_from(part).fit(snap)
    assert other.model.iterations == config.iterations
    warm.fit(snap)  # a warm start applies to one fit only
    assert warm.model.iterations == config.iterations
    # a first part runs the iterations a warm start does not, and the warm start continues from it
    first = ALS(config, seed=1).first_part().fit(snap.restricted(keep))
    assert first.model.iterations == 9
    rest = ALS(config, seed=1).warm_from(first).fit(snap)
    assert rest.model.iterations == 1
    moved = np.abs(rest.item_factors - first.item_factors).mean()
    assert moved < 0.5 * np.abs(cold.item_factors - first.item_factors).mean()


def test_content_warm_started_on_the_same_catalog_takes_the_vectors_it_would_compute(small_world: Dataset) -> None:
    from tastemaker.candidates.content import ContentSource

    snap = Snapshot.from_dataset(small_world)
    part = ContentSource(seed=1).fit(snap.restricted(np.arange(len(snap.interactions)) % 3 > 0))
    warm = ContentSource(seed=1).warm_from(part).fit(snap)
    cold = ContentSource(seed=1).fit(snap)
    assert warm.vectors is part.vectors and warm.index is part.index
    np.testing.assert_allclose(warm.vectors, cold.vectors, atol=1e-6)
    users = np.arange(0, snap.n_users, 9)
    assert np.array_equal(warm.candidates(users, 10, exclude=snap.matrix[users])[0],
                          cold.candidates(users, 10, exclude=snap.matrix[users])[0])  # fmt: skip
    # another seed (other SVD directions), or a catalog that is not the very same, is fitted afresh
    assert ContentSource(seed=2).warm_from(part).fit(snap).vectors is not part.vectors
    assert ContentSource(seed=1).warm_from(part).fit(Snapshot.from_dataset(small_world)).vectors is not part.vectors
