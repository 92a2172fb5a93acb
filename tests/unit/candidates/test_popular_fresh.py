"""Trending, category-steered popularity and fresh items, including the cold-start cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastemaker.candidates import History
from tastemaker.candidates.fresh import FreshConfig, FreshSource
from tastemaker.candidates.popular import PopularConfig, PopularSource
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
