"""The synthetic world: deterministic, well-formed, and with the structure it promises."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tastemaker.clock import to_us
from tastemaker.data import SyntheticConfig, generate
from tastemaker.data.synthetic import DAY_US


def test_same_config_same_world_and_another_seed_another() -> None:
    cfg = SyntheticConfig(n_users=80, n_items=60, seed=11)
    a, b = generate(cfg), generate(cfg)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not generate(SyntheticConfig(n_users=80, n_items=60, seed=12)).events.equals(a.events)


def test_events_are_well_formed_and_inside_the_window(small_world) -> None:
    ev, items = small_world.events, small_world.items
    start = to_us("2026-01-05T00:00:00+00:00")
    assert ev["event_id"].is_unique
    assert ev["timestamp_us"].between(start, start + 28 * DAY_US - 1).all()
    assert set(ev["type"]) <= {"view", "click", "complete", "rating", "like"}
    ratings = ev[ev["type"] == "rating"]
    assert ratings["value"].between(1, 5).all() and ev[ev["type"] != "rating"]["value"].isna().all()
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    created = items.set_index("item_id")["created_at_us"]
    assert (ev["timestamp_us"].to_numpy() >= created.loc[ev["item_id"]].to_numpy()).all()  # nothing before it exists


def test_users_mostly_consume_their_taste(small_world) -> None:
    """Planted structure: a user's top category covers far more of their views than chance."""
    ev = small_world.events[small_world.events["type"] == "view"]
    cat = small_world.items.set_index("item_id")["categories"].str[0]
    views = ev.assign(category=cat.loc[ev["item_id"]].to_numpy())
    share = views.groupby("user_id")["category"].agg(lambda c: c.value_counts(normalize=True).iloc[0])
    assert share.median() > 2 / 8  # 8 categories: chance would be about 1/8
    funnel = small_world.events["type"].value_counts()
    assert funnel["view"] > funnel["click"] > funnel["complete"] > funnel["rating"] > funnel["like"] > 0
    assert np.isfinite(share).all()
