"""The four protocols: membership rules, reproducibility, and Recommenders' exact shuffle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tastemaker.data.splits import evaluation_pairs, split
from tastemaker.errors import UnknownNameError


def frame(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp_us"])


@pytest.fixture
def interactions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for item in range(12):  # item k has k + 1 rows
        for j in range(item + 1):
            rows.append(
                (
                    f"u{(item * 7 + j * 3) % 40}_{j}",
                    f"i{item}",
                    float(rng.integers(1, 6)),
                    int(rng.integers(0, 10**9)),
                )
            )
    return frame(rows)


def test_recommenders_sends_round_three_quarters_of_each_item_to_train(interactions: pd.DataFrame) -> None:
    parts = split(interactions, "recommenders")
    train = parts.train.groupby("item_id").size()
    n = interactions.groupby("item_id").size()
    expected = n.map(lambda x: round(0.75 * x))  # Python's round: 1.5 -> 2, 4.5 -> 4, 7.5 -> 8
    assert train.reindex(n.index, fill_value=0).to_dict() == expected.to_dict()
    assert len(parts.train) + len(parts.test) == len(interactions)


def test_recommenders_matches_pandas_sample_per_item_group(interactions: pd.DataFrame) -> None:
    # The published procedure, written the way Recommenders does it: shuffle each item's rows with
    # sample(frac=1, random_state=42) and take the first round(0.75 n).
    expected = []
    for _, group in interactions.groupby("item_id", sort=False):
        shuffled = group.sample(frac=1, random_state=42)
        expected.append(shuffled.iloc[: round(0.75 * len(group))])
    want = pd.concat(expected).sort_index()
    got = split(interactions, "recommenders").train
    assert sorted(map(tuple, got.to_numpy())) == sorted(map(tuple, want.to_numpy()))


def test_splits_are_reproducible_from_the_seed(interactions: pd.DataFrame) -> None:
    for protocol in ("recommenders", "temporal", "leave-last", "global-time"):
        a, b = split(interactions, protocol, seed=5), split(interactions, protocol, seed=5)
        pd.testing.assert_frame_equal(a.test, b.test)
    other = split(interactions, "recommenders", seed=6).test
    assert not split(interactions, "recommenders", seed=5).test.equals(other)


def test_temporal_takes_the_newest_fifth_of_users_with_five_or_more() -> None:
    rows = [("a", f"i{t}", 3.0, t) for t in range(10)]  # 10 -> 2 in test
    rows += [("b", f"i{t}", 3.0, t) for t in range(5)]  # 5 -> 1
    rows += [("c", f"i{t}", 3.0, t) for t in range(4)]  # 4 -> none, all train
    rows += [("d", f"i{t}", 3.0, 100) for t in range(7)]  # all tied: 7 -> round(1.4) = 1, by seeded tiebreak
    parts = split(frame(rows), "temporal")
    test = parts.test.groupby("user_id")["item_id"].apply(sorted).to_dict()
    assert test["a"] == ["i8", "i9"] and test["b"] == ["i4"] and "c" not in test
    assert len(test["d"]) == 1
    for user, group in parts.test.groupby("user_id"):
        assert group["timestamp_us"].min() >= parts.train[parts.train.user_id == user]["timestamp_us"].max()


def test_global_time_cuts_once_at_the_80th_percentile() -> None:
    rows = [(f"u{t % 3}", f"i{t}", 3.0, t * 10) for t in range(100)]
    parts = split(frame(rows), "global-time")
    cut = np.quantile(np.arange(100) * 10, 0.8)
    assert parts.train["timestamp_us"].max() < cut <= parts.test["timestamp_us"].min()
    assert len(parts.test) == 20


def test_leave_last_holds_out_each_users_latest() -> None:
    rows = [("a", "x", 3.0, 5), ("a", "y", 3.0, 9), ("a", "z", 3.0, 7), ("b", "x", 3.0, 1)]
    parts = split(frame(rows), "leave-last")
    assert parts.test[["user_id", "item_id"]].values.tolist() == [["a", "y"]]  # b has one row: train only


def test_evaluation_pairs_need_train_history_and_the_threshold() -> None:
    rows = [("a", "x", 5.0, 1), ("a", "y", 2.0, 9), ("b", "z", 5.0, 9)]
    parts = split(frame(rows), "global-time")  # cut at 7.4: a/x train; a/y and b/z test
    assert evaluation_pairs(parts)[["user_id", "item_id"]].values.tolist() == [["a", "y"]]  # b: no train
    assert evaluation_pairs(parts, relevance_threshold=4.0).empty  # a/y rated 2


def test_unknown_protocol_is_refused_with_the_choices() -> None:
    with pytest.raises(
        UnknownNameError,
        match="unknown protocol 'random'; known: global-time, leave-last, recommenders, temporal",
    ):
        split(frame([("a", "x", 1.0, 1)]), "random")
