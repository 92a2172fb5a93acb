"""The four protocols: membership rules, reproducibility, no future in training, Recommenders' shuffle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastemaker.data import SnapshotConfig
from tastemaker.data.splits import evaluation_pairs, split
from tastemaker.errors import ConfigError, UnknownNameError


def ratings(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """One rating event per (user, item, rating, time) row."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "value", "timestamp_us"])
    return frame.assign(event_id=[f"e{i}" for i in range(len(frame))], type="rating")


@pytest.fixture
def events() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for item in range(12):  # item k has k + 1 ratings
        for j in range(item + 1):
            rows.append(
                (f"u{(item * 7 + j * 3) % 40}_{j}", f"i{item}", float(rng.integers(1, 6)), int(rng.integers(0, 10**9)))
            )
    return ratings(rows)


def test_recommenders_sends_round_three_quarters_of_each_item_to_train(events: pd.DataFrame) -> None:
    parts = split(events, "recommenders")
    train = parts.train.groupby("item_id").size()
    n = events.groupby("item_id").size()
    expected = n.map(lambda x: round(0.75 * x))  # Python's round: 1.5 -> 2, 4.5 -> 4, 7.5 -> 8
    assert train.reindex(n.index, fill_value=0).to_dict() == expected.to_dict()
    assert len(parts.train) + len(parts.test) == len(events)


def test_recommenders_is_pandas_sample_per_item_in_canonical_order(events: pd.DataFrame) -> None:
    # Written the way the protocol reads: each item's rows in (time, user) order, shuffled with
    # sample(frac=1, random_state=42), the first round(0.75 n) to train.
    want = set()
    for _, group in events.sort_values(["item_id", "timestamp_us", "user_id"]).groupby("item_id"):
        shuffled = group.sample(frac=1, random_state=42)
        want |= set(
            zip(
                shuffled["user_id"][: round(0.75 * len(group))],
                shuffled["item_id"][: round(0.75 * len(group))],
                strict=True,
            )
        )
    got = split(events, "recommenders").train
    assert set(zip(got["user_id"], got["item_id"], strict=True)) == want


@pytest.mark.parametrize("protocol", ["recommenders", "temporal", "leave-last", "global-time"])
def test_a_split_depends_on_the_data_not_on_its_row_order(events: pd.DataFrame, protocol: str) -> None:
    shuffled = events.sample(frac=1, random_state=3)
    a, b = split(events, protocol, seed=5), split(shuffled, protocol, seed=5)
    pairs_a = set(zip(a.test["user_id"], a.test["item_id"], strict=True))
    assert pairs_a == set(zip(b.test["user_id"], b.test["item_id"], strict=True))


def test_splits_are_reproducible_from_the_seed(events: pd.DataFrame) -> None:
    for protocol in ("recommenders", "temporal", "leave-last", "global-time"):
        pd.testing.assert_frame_equal(split(events, protocol, seed=5).test, split(events, protocol, seed=5).test)
    assert not split(events, "recommenders", seed=5).test.equals(split(events, "recommenders", seed=6).test)


def test_temporal_takes_the_newest_fifth_of_users_with_five_or_more() -> None:
    rows = [("a", f"i{t}", 3.0, t) for t in range(10)]  # 10 -> 2 in test
    rows += [("b", f"i{t}", 3.0, t) for t in range(5)]  # 5 -> 1
    rows += [("c", f"i{t}", 3.0, t) for t in range(4)]  # 4 -> none, all train
    rows += [("e", f"i{t}", 3.0, t) for t in range(8)]  # 8 -> round(1.6) = 2 (a floor would give 1)
    parts = split(ratings(rows), "temporal")
    test = parts.test.groupby("user_id")["item_id"].apply(sorted).to_dict()
    assert test == {"a": ["i8", "i9"], "b": ["i4"], "e": ["i6", "i7"]}
    for user, group in parts.test.groupby("user_id"):
        assert group["timestamp_us"].min() >= parts.train[parts.train.user_id == user]["timestamp_us"].max()


def test_ties_in_time_are_broken_by_the_seed() -> None:
    tied = ratings([("d", f"i{t}", 3.0, 100) for t in range(7)])  # 7 -> round(1.4) = 1 test pair
    picks = {split(tied, "temporal", seed=s).test["item_id"].item() for s in range(20)}
    assert len(picks) > 3  # different seeds pick different tied pairs...
    assert split(tied, "temporal", seed=4).test.equals(
        split(tied, "temporal", seed=4).test
    )  # ...the same seed, the same


def test_global_time_cuts_once_at_the_80th_percentile_of_events() -> None:
    parts = split(ratings([(f"u{t % 3}", f"i{t}", 3.0, t * 10) for t in range(100)]), "global-time")
    cut = np.quantile(np.arange(100) * 10, 0.8)
    assert parts.train["timestamp_us"].max() < cut <= parts.test["timestamp_us"].min()
    assert len(parts.test) == 20 and parts.params["cut_us"] == 792


def test_leave_last_holds_out_each_users_latest() -> None:
    parts = split(
        ratings([("a", "x", 3.0, 5), ("a", "y", 3.0, 9), ("a", "z", 3.0, 7), ("b", "x", 3.0, 1)]), "leave-last"
    )
    assert parts.test[["user_id", "item_id"]].values.tolist() == [["a", "y"]]  # b has one pair: train only


def _multi_event_world() -> pd.DataFrame:
    # u views x early and buys it late; the same user's later pairs decide where the cut falls.
    rows = [
        ("u", "x", "view", 10), ("u", "y", "view", 20), ("u", "z", "view", 30), ("u", "w", "view", 40),
        ("u", "v", "view", 50), ("u", "x", "purchase", 60), ("u", "x", "view", 70), ("o", "q", "view", 5),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "type", "timestamp_us"])
    return frame.assign(event_id=[f"e{i}" for i in range(len(frame))], value=np.nan)


@pytest.mark.parametrize("protocol", ["temporal", "leave-last", "global-time"])
def test_time_protocols_never_train_on_events_after_the_cut(protocol: str) -> None:
    """x began before the cut, so it trains; its purchase and second view came after, so they must not count."""
    parts = split(_multi_event_world(), protocol, seed=1)
    x = parts.train.set_index("item_id").loc["x"]
    assert (x["weight"], x["n_events"], x["last_timestamp_us"]) == (1.0, 1, 10)  # the first view alone
    cut = parts.params.get("cut_us", 50)  # global: the 80th percentile (56); per user: v's start (50)
    assert parts.train["last_timestamp_us"].max() < cut  # nothing at or after the cut
    assert list(parts.test["item_id"]) == ([] if protocol == "global-time" else ["v"])


def test_recommenders_ignores_time_and_keeps_whole_pairs() -> None:
    parts = split(_multi_event_world(), "recommenders")
    everything = parts.train.set_index("item_id")
    assert everything.loc["x", "weight"] == 1.0 + 4.0 + 1.0  # view + purchase + view: no time cut


def test_numeric_ids_are_the_same_as_their_strings() -> None:
    as_int = ratings([(7, 3, 4.0, 1), (7, 4, 4.0, 2), (8, 3, 5.0, 3)])
    as_str = ratings([("7", "3", 4.0, 1), ("7", "4", 4.0, 2), ("8", "3", 5.0, 3)])
    pd.testing.assert_frame_equal(split(as_int, "leave-last").test, split(as_str, "leave-last").test)


def test_the_rating_is_the_latest_value_of_the_rating_type_only() -> None:
    frame = pd.DataFrame({"event_id": ["a", "b", "c"], "user_id": "u", "item_id": "i",
                          "type": ["rating", "purchase", "click"], "value": [4.0, 19.99, np.nan],
                          "timestamp_us": [1, 2, 3]})  # fmt: skip
    config = SnapshotConfig.from_dict({"event_weights": {"rating": {}, "purchase": {}, "click": {}}})
    assert split(frame, "recommenders", config=config).train["rating"].tolist() == [4.0]


def test_evaluation_pairs_need_train_history_and_the_threshold() -> None:
    parts = split(ratings([("a", "x", 5.0, 1), ("a", "y", 2.0, 9), ("b", "z", 5.0, 9)]), "global-time")
    assert evaluation_pairs(parts)[["user_id", "item_id"]].values.tolist() == [["a", "y"]]  # b: no train
    assert evaluation_pairs(parts, relevance_threshold=4.0).empty  # a/y rated 2


def test_unknown_protocols_and_empty_data_are_clear_errors() -> None:
    with pytest.raises(
        UnknownNameError, match="unknown protocol 'random'; known: global-time, leave-last, recommenders"
    ):
        split(ratings([("a", "x", 1.0, 1)]), "random")
    with pytest.raises(ConfigError, match="nothing to split: no events of a counted type"):
        split(ratings([]), "global-time")
