"""Trending, category-steered popularity and fresh items, including the cold-start cases."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates import History
from tastemaker.candidates.fresh import FreshConfig, FreshSource
from tastemaker.candidates.popular import PoolCategories, PopularConfig, PopularSource
from tastemaker.data import Snapshot

DAY = 86_400 * 1_000_000
NOW = 1_000 * DAY


def catalog() -> pd.DataFrame:
    # old jazz hits, a recent rock hit, fresh items of each category, one unavailable fresh item
    rows = [
        ("jazz-old", ["Jazz"], NOW - 900 * DAY, True),
        ("rock-new", ["Rock"], NOW - 30 * DAY, True),
        ("jazz-fresh", ["Jazz"], NOW - 2 * DAY, True),
        ("rock-fresh", ["Rock"], NOW - 1 * DAY, True),
        ("pulled", ["Rock"], NOW - 1 * DAY // 2, False),
    ]
    return pd.DataFrame(rows, columns=["item_id", "categories", "created_at_us", "available"]).assign(
        attributes=[{}] * len(rows)
    )


def world() -> Snapshot:
    """jazz-old: 10 users long ago; rock-new: 4 users last week; a jazz fan and a rock fan."""
    rows = [(f"old{u}", "jazz-old", NOW - 400 * DAY) for u in range(10)]
    rows += [(f"new{u}", "rock-new", NOW - 3 * DAY) for u in range(4)]
    rows += [("jazzfan", "jazz-old", NOW - 5 * DAY), ("rockfan", "rock-new", NOW - 5 * DAY)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    frame = frame.assign(event_id=[f"e{i}" for i in range(len(frame))], type="click", value=np.nan)
    return Snapshot.from_frames(frame, catalog(), cutoff_us=NOW)


def names(source, ids: np.ndarray) -> list[str]:
    return [source.item_ids[i] for i in ids if i >= 0]


def test_all_time_popularity_and_trending_disagree_as_their_half_lives_say() -> None:
    snap = world()
    user = snap.user_index("old0")
    plain = PopularSource(PopularConfig(half_life_days=None, steer=False)).fit(snap)
    trending = PopularSource(PopularConfig(half_life_days=7, steer=False)).fit(snap)
    assert names(plain, plain.candidates(user, 2)[0][0]) == ["jazz-old", "rock-new"]
    ids, scores = trending.candidates(user, 2)
    assert names(trending, ids[0]) == ["rock-new", "jazz-old"]
    assert scores[0, 0] == np.float32(4 * 0.5 ** (3 / 7) + 0.5 ** (5 / 7))  # four at 3 days, one at 5 days


def test_steering_puts_the_users_categories_first_and_onboarding_steers_a_new_user() -> None:
    snap = world()
    pop = PopularSource(PopularConfig(half_life_days=None)).fit(snap)
    rockfan = snap.user_index("rockfan")
    assert names(pop, pop.candidates(rockfan, 2)[0][0]) == ["rock-new", "jazz-old"]  # globally jazz-old leads
    users = pd.DataFrame({"user_id": ["newbie", "blank"], "attributes": [{"preferred_categories": ["Rock"]}, {}]})
    pop.fold_in(History.from_events(pd.DataFrame(columns=["event_id", "user_id", "item_id", "type", "value",
                                                          "timestamp_us"]), pop.item_ids, users=users))  # fmt: skip
    ids, _ = pop.candidates(pop.user_index(["newbie", "blank"]), 2)
    assert names(pop, ids[0]) == ["rock-new", "jazz-old"]  # onboarding says Rock
    assert names(pop, ids[1]) == ["jazz-old", "rock-new"]  # nothing known: the global list
    assert "pulled" not in names(pop, pop.candidates(pop.user_index(["blank"]), 10)[0][0])


def test_fresh_lists_newest_available_items_and_steers_by_category() -> None:
    snap = world()
    fresh = FreshSource(FreshConfig(steer=False)).fit(snap)
    user = snap.user_index(["jazzfan"])
    assert names(fresh, fresh.candidates(user, 3)[0][0]) == ["rock-fresh", "jazz-fresh", "rock-new"]
    steered = FreshSource(FreshConfig(top_categories=1)).fit(snap)
    assert names(steered, steered.candidates(user, 2)[0][0]) == ["jazz-fresh", "jazz-old"]


def test_an_item_upserted_after_training_is_the_freshest_at_once() -> None:
    snap = world()
    fresh = FreshSource(FreshConfig(steer=False)).fit(snap)
    new = pd.DataFrame({"item_id": ["just-in"], "categories": [["Jazz"]], "created_at_us": [NOW], "available": [True]})
    fresh.add_items(new)
    ids, scores = fresh.candidates(snap.user_index(["jazzfan"]), 1)
    assert names(fresh, ids[0]) == ["just-in"] and scores[0, 0] == 1.0


def test_onboarding_stored_before_the_snapshot_steers_without_a_fold_in() -> None:
    frame = world()
    users = pd.DataFrame({"user_id": ["onboarded"], "attributes": [{"preferred_categories": ["Jazz"]}]})
    events = pd.DataFrame({"event_id": ["x"], "user_id": ["old0"], "item_id": ["jazz-old"], "type": ["click"],
                           "value": [np.nan], "timestamp_us": [NOW - 400 * DAY]})  # fmt: skip
    snap = Snapshot.from_frames(events, catalog(), users, cutoff_us=NOW)
    assert frame.n_items == snap.n_items
    fresh = FreshSource(FreshConfig(top_categories=1)).fit(snap)
    ids, _ = fresh.candidates(snap.user_index(["onboarded"]), 1)
    assert names(fresh, ids[0]) == ["jazz-fresh"]  # unsteered, the newest item would be rock-fresh
    plain = FreshSource(FreshConfig(steer=False)).fit(snap)
    assert names(plain, plain.candidates(snap.user_index(["onboarded"]), 1)[0][0]) == ["rock-fresh"]


def test_steering_ranks_the_pool_by_popularity_times_category_share() -> None:
    """Items of 1-3 of 12 categories, Zipf popularity: the steered top-n equals a brute-force ranking of
    the whole pool, for users with one, several and no categories, with exclusions."""
    rng = np.random.default_rng(7)
    n_items, n_users = 3_000, 60
    cats = [[f"c{c}" for c in rng.choice(12, rng.integers(1, 4), replace=False)] for _ in range(n_items)]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "categories": cats})
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.9
    users = [f"u{u}" for u in range(n_users)]
    picks = [rng.choice(n_items, rng.integers(1, 30), p=weights / weights.sum()) for _ in users]
    rows = [(u, f"i{i}", NOW - DAY) for u, chosen in zip(users, picks, strict=True) for i in chosen]
    crowd = rng.choice(n_items, (200, 20), p=weights / weights.sum())
    rows += [(f"crowd{k}", f"i{i}", NOW - DAY) for k in range(200) for i in crowd[k]]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    frame = frame.assign(event_id=[f"e{i}" for i in range(len(frame))], type="click", value=np.nan)
    snap = Snapshot.from_frames(frame, items.assign(attributes=[{}] * n_items), cutoff_us=NOW)
    source = PopularSource(PopularConfig(half_life_days=None)).fit(snap)
    who = np.arange(n_users)
    exclude = snap.matrix[who]
    for n in (5, 50, 400):
        ids, scores = source.candidates(who, n, exclude=exclude)
        shares = source._shares.take(who).csr().toarray()
        affinity = shares @ source._item_categories[source._pool].toarray().T
        brute = source._pool_score[None, :] * (source.config.floor + np.minimum(affinity, 1.0))
        brute[exclude[:, source._pool].toarray() != 0] = -np.inf
        for r in range(n_users):
            order = np.lexsort((np.arange(len(source._pool)), -brute[r]))[: n + 1]
            ranked = brute[r][order]
            gaps = np.abs(np.diff(ranked)) > 1e-6 * np.abs(ranked[1:])
            distinct = (np.r_[True, gaps] & np.r_[gaps, True])[:n]  # items tied with a neighbour may swap
            want = ranked[:n]
            np.testing.assert_allclose(scores[r][: len(want)], want, rtol=1e-5)
            np.testing.assert_array_equal(ids[r][: len(want)][distinct], source._pool[order[:n]][distinct])


@pytest.mark.parametrize("most", [1, 3])
def test_pool_affinity_is_the_share_summed_over_each_items_categories(most: int) -> None:
    rng = np.random.default_rng(most)
    counts = rng.integers(0, most + 1, 500)  # some items have no category
    rows = np.repeat(np.arange(500), counts)
    cols = np.concatenate([rng.choice(9, c, replace=False) for c in counts])
    item_categories = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(500, 9))
    pool = rng.permutation(500)[:300]
    shares = rng.random((4, 9)).astype(np.float32)
    want = shares @ item_categories[pool].toarray().T
    pooled = PoolCategories(item_categories, pool)
    np.testing.assert_allclose(pooled.affinity(shares), want, rtol=1e-6)
    np.testing.assert_allclose(pooled.affinity(shares[1:2]), want[1:2], rtol=1e-6)


def test_category_shares_of_a_few_users_are_the_sparse_products_shares() -> None:
    """A fold-in's few users get dense rows; the fit's many, sparse products: the same shares (histories over
    items of several categories, onboarding answers with and without history, unknown categories, nobody)."""
    from tastemaker.candidates import popular

    rng = np.random.default_rng(3)
    n_items = 400
    cats = [[f"c{c}" for c in rng.choice(9, rng.integers(0, 4), replace=False)] for _ in range(n_items)]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "categories": cats})
    users = [f"u{u}" for u in range(40)]
    rows = [(u, f"i{i}", NOW - DAY) for u in users[:30] for i in rng.choice(n_items, rng.integers(1, 25))]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    frame = frame.assign(event_id=[f"e{i}" for i in range(len(frame))], type="click", value=np.nan)
    answers = [{"preferred_categories": list(rng.choice(["c1", "c4", "c8", "nope"], rng.integers(0, 3)))}
               if u % 3 else {} for u in range(40)]  # fmt: skip
    snap = Snapshot.from_frames(frame, items.assign(attributes=[{}] * n_items),
                                pd.DataFrame({"user_id": users, "attributes": answers}), cutoff_us=NOW)  # fmt: skip
    source = PopularSource().fit(snap)
    who = np.arange(snap.n_users)
    args = (source, who, source._item_categories, source._categories, 0.7)
    dense = popular.category_shares(*args)
    assert len(who) <= popular._DENSE_SHARES
    with patch.object(popular, "_DENSE_SHARES", 0):
        sparse = popular.category_shares(*args)
    np.testing.assert_allclose(dense.toarray(), sparse.toarray(), rtol=1e-6, atol=0)
    assert (dense.toarray().sum(axis=1) > 0).sum() >= 30 and dense.nnz == sparse.nnz


@pytest.mark.parametrize("half_life", [None, 7.0])
def test_steering_a_few_users_of_single_category_items_reads_only_the_pools_heads(half_life: float | None) -> None:
    """Items of one category each (or none): a request's few users are steered from the head of each category
    and of the rest of the pool; the same scores, and the same items wherever they are not tied at the cut-off,
    as scoring the whole pool, with exclusions, users with one, several and no categories, and long lists."""
    from tastemaker.candidates import popular

    rng = np.random.default_rng(11)
    n_items, n_users = 2_000, 40
    cats = [[f"c{c}"] if c < 10 else [] for c in rng.integers(0, 11, n_items)]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "categories": cats})
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    users = [f"u{u}" for u in range(n_users)]
    picks = [rng.choice(n_items, rng.integers(1, 60), p=weights / weights.sum()) for _ in users]
    rows = [(u, f"i{i}", NOW - int(rng.integers(1, 20)) * DAY) for u, chosen in zip(users, picks, strict=True)
            for i in chosen]  # fmt: skip
    crowd = rng.choice(n_items, (300, 30), p=weights / weights.sum())
    rows += [(f"crowd{k}", f"i{i}", NOW - int(rng.integers(1, 20)) * DAY) for k in range(300) for i in crowd[k]]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    frame = frame.assign(event_id=[f"e{i}" for i in range(len(frame))], type="click", value=np.nan)
    snap = Snapshot.from_frames(frame, items.assign(attributes=[{}] * n_items), cutoff_us=NOW)
    source = PopularSource(PopularConfig(half_life_days=half_life, pool=1_500)).fit(snap)
    assert source._pool_categories.only is not None
    who = snap.user_index(users)
    exclude = snap.matrix[who]
    for n in (5, 100, 1_400):
        for group in (who[:1], who[:7], who[7:23]):
            got_ids, got = source.candidates(group, n, exclude=exclude[group - who[0]])
            with patch.object(popular, "_FEW", 0):
                want_ids, want = source.candidates(group, n, exclude=exclude[group - who[0]])
            np.testing.assert_array_equal(got, want)  # the same scores, bit for bit, in the same order
            differs, edge = np.diff(want, axis=1) != 0, np.ones((len(group), 1), bool)
            # the last place may be tied with an item left out, which either path may take
            distinct = np.concatenate([edge, differs], axis=1) & np.concatenate([differs, ~edge], axis=1)
            np.testing.assert_array_equal(got_ids[distinct], want_ids[distinct])


def test_steering_a_user_who_has_seen_every_pool_item_proposes_nothing() -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "categories": [["x"], ["x"], ["y"]]})
    rows = [("u", i, NOW - DAY) for i in "abc"] + [("v", "a", NOW - DAY)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    frame = frame.assign(event_id=[f"e{i}" for i in range(len(frame))], type="click", value=np.nan)
    snap = Snapshot.from_frames(frame, items.assign(attributes=[{}] * 3), cutoff_us=NOW)
    source = PopularSource().fit(snap)
    user = snap.user_index(["u"])
    ids, scores = source.candidates(user, 5, exclude=snap.matrix[user])
    assert ids.tolist() == [[-1] * 5] and np.isneginf(scores).all()
