"""Snapshots: weighting, the cutoff, vocabularies, metadata arrays, and the store path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from tastemaker.clock import FixedClock, to_us
from tastemaker.data import Dataset, EventWeight, Snapshot, SnapshotConfig, import_dataset, to_interactions
from tastemaker.errors import ConfigError
from tastemaker.store import open_store

T0 = to_us("2026-03-01T00:00:00Z")
HOUR = 3_600_000_000


def events(*rows: tuple[str, str, str, float | None, int]) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"e{n}", u, i, t, np.nan if v is None else v, ts) for n, (u, i, t, v, ts) in enumerate(rows)],
        columns=["event_id", "user_id", "item_id", "type", "value", "timestamp_us"],
    )


ITEMS = pd.DataFrame({
    "item_id": ["a", "b", "c", "late"],
    "title": ["A", "B", None, "Late"],
    "text": [None, "bee", None, None],
    "categories": [["Jazz"], ["Jazz", "Rock"], [], ["Rock"]],
    "provider": ["p1", None, "p2", "p1"],
    "created_at_us": [T0 - 10 * HOUR, None, None, T0 + 100 * HOUR],
    "available": [True, False, True, True],
    "attributes": [{}, {}, {}, {}],
})  # fmt: skip


def test_event_weights_sum_by_default_and_ignore_unlisted_types() -> None:
    ev = events(("u", "a", "view", None, T0), ("u", "a", "click", None, T0 + 1), ("u", "b", "skip", None, T0 + 2))
    inter = to_interactions(ev, SnapshotConfig())
    assert inter[["item_id", "weight", "n_events"]].values.tolist() == [["a", 3.0, 2]]
    assert to_interactions(ev, SnapshotConfig(aggregate="max"))["weight"].tolist() == [2.0]


def test_strong_values_and_minimum_values() -> None:
    rule = EventWeight(weight=1.0, min_value=2.5, strong_value=4.0, strong_weight=5.0)
    config = SnapshotConfig(event_weights={"rating": rule})
    ev = events(("u", "a", "rating", 4.5, T0), ("u", "b", "rating", 3.0, T0), ("u", "c", "rating", 2.0, T0))
    inter = to_interactions(ev, config).set_index("item_id")
    assert inter["weight"].to_dict() == {"a": 5.0, "b": 1.0}  # c is below min_value
    with pytest.raises(ConfigError, match="strong_value and strong_weight go together"):
        SnapshotConfig.from_dict({"event_weights": {"rating": {"strong_value": 4}}})


def test_pairs_keep_first_appearance_order_and_the_latest_value() -> None:
    ev = events(("u2", "b", "rating", 2.0, T0 + 5), ("u1", "a", "rating", 4.0, T0), ("u2", "b", "rating", 5.0, T0 + 9))
    inter = to_interactions(ev, SnapshotConfig())
    assert inter[["user_id", "item_id"]].values.tolist() == [["u2", "b"], ["u1", "a"]]
    assert inter.iloc[0]["rating"] == 5.0 and inter.iloc[0]["timestamp_us"] == T0 + 5
    assert inter.iloc[0]["last_timestamp_us"] == T0 + 9


def test_the_latest_value_is_latest_in_time_not_in_row_order() -> None:
    ev = events(("u", "a", "rating", 5.0, T0 + 9), ("u", "a", "click", None, T0 + 20), ("u", "a", "rating", 1.0, T0))
    inter = to_interactions(ev, SnapshotConfig())
    assert inter["rating"].tolist() == [5.0]  # the click is later but is not a rating
    assert inter["timestamp_us"].tolist() == [T0] and inter["last_timestamp_us"].tolist() == [T0 + 20]


def test_cutoff_excludes_later_events_and_later_items() -> None:
    ev = events(("u1", "a", "click", None, T0), ("u1", "b", "view", None, T0 + HOUR),
                ("u2", "c", "skip", None, T0 + 2 * HOUR), ("u3", "c", "click", None, T0 + 3 * HOUR))  # fmt: skip
    snap = Snapshot.from_frames(ev, ITEMS, cutoff_us=T0 + 3 * HOUR)
    assert isinstance(snap.matrix, sp.csr_matrix) and snap.matrix.dtype == np.float32
    assert list(snap.item_ids) == ["a", "b", "c"]  # "late" is created after the cutoff
    assert list(snap.user_ids) == ["u1"]  # u2 only skipped (not counted); u3 is after the cutoff
    assert snap.matrix.toarray().tolist() == [[2.0, 1.0, 0.0]]
    assert snap.user_last_active_us.tolist() == [T0 + HOUR]


def test_last_activity_counts_every_event_type() -> None:
    ev = events(("u1", "a", "click", None, T0), ("u1", "b", "skip", None, T0 + 7))
    snap = Snapshot.from_frames(ev, ITEMS)
    assert snap.user_last_active_us[snap.user_index("u1")[0]] == T0 + 7


def test_item_metadata_is_aligned_with_the_vocabulary() -> None:
    ev = events(("u1", "b", "click", None, T0 + 5), ("u1", "zz", "click", None, T0 + 6))
    snap = Snapshot.from_frames(ev, ITEMS)
    idx = dict(zip(snap.item_ids, range(snap.n_items), strict=True))
    assert list(snap.categories) == ["Jazz", "Rock"]
    assert snap.item_categories[idx["b"]].toarray().tolist() == [[1.0, 1.0]]
    assert snap.item_categories[idx["c"]].nnz == 0
    assert snap.item_title[idx["c"]] == "" and snap.item_text[idx["b"]] == "bee"
    assert snap.item_provider[idx["a"]] == "p1" and snap.item_provider[idx["zz"]] == ""
    assert bool(snap.item_available[idx["b"]]) is False and bool(snap.item_available[idx["zz"]]) is True
    created = snap.item_created_at_us
    assert created[idx["a"]] == T0 - 10 * HOUR  # from the catalog
    assert created[idx["b"]] == T0 + 5  # unknown: the item's first event
    assert created[idx["c"]] == -1  # unknown and never seen


def test_index_lookups_mark_unknown_ids() -> None:
    snap = Snapshot.from_frames(events(("u1", "a", "click", None, T0)), ITEMS)
    assert snap.user_index(["u1", "ghost"]).tolist() == [0, -1]
    assert snap.item_index("c").tolist() == [2]


def test_store_snapshot_equals_frame_snapshot(tmp_path, small_world: Dataset) -> None:
    cutoff = to_us("2026-01-20T00:00:00Z")
    clock = FixedClock("2026-12-01T00:00:00Z")
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        import_dataset(store, small_world)
        from_store = Snapshot.from_store(store, cutoff_us=cutoff)
        clock.set("2026-01-20T00:00:00Z")
        assert (Snapshot.from_store(store).matrix != from_store.matrix).nnz == 0  # cutoff defaults to now
    from_frames = Snapshot.from_dataset(small_world, cutoff_us=cutoff)
    assert list(from_store.user_ids) == list(from_frames.user_ids)
    assert list(from_store.item_ids) == list(from_frames.item_ids)
    assert (from_store.matrix != from_frames.matrix).nnz == 0
    assert np.array_equal(from_store.user_last_active_us, from_frames.user_last_active_us)
    assert np.array_equal(from_store.item_created_at_us, from_frames.item_created_at_us)


def test_a_pair_keeps_its_first_non_empty_event_context() -> None:
    events = pd.DataFrame({
        "event_id": ["a", "b", "c", "d"], "user_id": ["u", "u", "u", "v"], "item_id": ["i", "i", "j", "i"],
        "type": "view", "value": np.nan, "timestamp_us": np.array([1, 2, 3, 4], dtype=np.int64) * 1_000_000,
        "context": ["{}", '{"device": "mobile"}', None, {"device": "tv"}],
    })  # fmt: skip
    snap = Snapshot.from_frames(events)
    table = snap.interactions
    found = {(snap.user_ids[u], snap.item_ids[i]): c for u, i, c in
             zip(table["user_idx"], table["item_idx"], table["context"], strict=True)}  # fmt: skip
    assert found == {("u", "i"): {"device": "mobile"}, ("u", "j"): None, ("v", "i"): {"device": "tv"}}


def test_ids_are_found_alike_one_by_one_and_in_bulk() -> None:
    from tastemaker.data.snapshot import as_ids, positions

    index = pd.Index([str(i) for i in range(100)], dtype=object)
    for ids in (["3", 7, "nope", "99"], ("0",), [], [str(i) for i in range(40)], np.array(["5", "x"], dtype=object)):
        expected = index.get_indexer(as_ids(ids)) if len(ids) else np.zeros(0, np.int64)
        got = positions(index, ids)
        assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    assert positions(index, ["3", 7, "nope"]).tolist() == [3, 7, -1]  # 7 and "7" are the same id


def _grouped(events: pd.DataFrame, config: SnapshotConfig) -> pd.DataFrame:
    """The definition, as a pandas groupby (what to_interactions computed before it was vectorised)."""
    ev = events[events["type"].isin(list(config.event_weights))]
    ev = ev.assign(user_id=ev["user_id"].astype(str), item_id=ev["item_id"].astype(str))
    value = ev["value"].to_numpy(dtype=float)
    weight = np.zeros(len(ev))
    keep = np.zeros(len(ev), dtype=bool)
    types = ev["type"].to_numpy()
    for name, rule in config.event_weights.items():
        mask = types == name
        ok = mask.copy()
        if rule.min_value is not None:
            ok &= ~(value < rule.min_value)  # NaN values pass: nothing to compare
        w = np.full(len(ev), rule.weight)
        if rule.strong_value is not None and rule.strong_weight is not None:
            w = np.where(value >= rule.strong_value, rule.strong_weight, rule.weight)
        weight[ok] = w[ok]
        keep |= ok
    rated = np.where(types == config.rating_type, value, np.nan)
    ev = ev.loc[keep].assign(weight=weight[keep], rating=rated[keep], position=np.flatnonzero(keep))
    ev = ev.sort_values("timestamp_us", kind="stable")  # so "last" means the latest in time
    extra = {}
    if "context" in ev and ev["context"].notna().any():  # where and how the pair began (device, declared keys)
        empty = ev["context"].map(lambda c: not c or c == "{}")  # "first" skips only nulls: empty ones are null
        ev = ev.assign(context=ev["context"].where(~empty.astype(bool), None))
        extra["context"] = ("context", "first")
    grouped = ev.groupby(["user_id", "item_id"], sort=False)
    out = grouped.agg(
        weight=("weight", config.aggregate),
        rating=("rating", "last"),
        timestamp_us=("timestamp_us", "min"),
        last_timestamp_us=("timestamp_us", "max"),
        n_events=("weight", "size"),
        position=("position", "min"),
        **extra,
    )
    out = out.sort_values("position", kind="stable").drop(columns="position").reset_index()
    return out.astype({"timestamp_us": np.int64, "last_timestamp_us": np.int64, "n_events": np.int64})



@given(st.integers(0, 2**31), st.integers(0, 40), st.sampled_from(["sum", "max"]), st.booleans())
@settings(max_examples=150, deadline=None)
def test_to_interactions_agrees_with_its_groupby_definition(seed: int, n: int, aggregate: str, contexts: bool) -> None:
    """Ties in time, ratings with and without values, types weighed, ignored or below their minimum, strong
    values, empty and missing contexts, missing ids: the vectorised aggregation gives the groupby's frame exactly."""
    rng = np.random.default_rng(seed)
    types = ["view", "click", "rating", "like", "unknown"]
    events = pd.DataFrame({
        "user_id": rng.choice(np.array(["a", "b", "c", 7, None], dtype=object), n),
        "item_id": rng.choice(np.array(["x", "y", "z", "w", None], dtype=object), n),
        "type": rng.choice(types, n),
        "value": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 6, n).astype(float)),
        "timestamp_us": rng.integers(0, 5, n).astype(np.int64) * 1_000_000,
    })  # fmt: skip
    if contexts:
        choices = [None, {}, "{}", {"device": "tv"}, {"device": "mobile"}, float("nan")]
        events["context"] = [choices[i] for i in rng.integers(0, len(choices), n)]
    config = SnapshotConfig(
        event_weights={"view": EventWeight(weight=1.0), "click": EventWeight(weight=2.0, min_value=2.0),
                       "rating": EventWeight(weight=1.0, strong_value=4.0, strong_weight=3.0),
                       "like": EventWeight(weight=0.5)},
        aggregate=aggregate,
    )  # fmt: skip
    got, expected = to_interactions(events, config), _grouped(events, config)
    assert list(got.columns) == list(expected.columns)
    if "context" in got:  # (the groupby infers a string dtype when the kept contexts happen to be strings)
        assert [None if c is None or c != c else c for c in got.pop("context")] == [
            None if c is None or c != c else c for c in expected.pop("context")]  # fmt: skip
    pd.testing.assert_frame_equal(got, expected, check_dtype=True)
