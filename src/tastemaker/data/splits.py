"""Train/test splits of events, each a function of (data, seed) alone.

The unit of the split is the (user, item) pair (see ``snapshot.to_interactions``):

* ``recommenders`` — the protocol of Microsoft Recommenders' MovieLens benchmark as the issue defines it:
  pairs grouped by item, each item's pairs put in a canonical order (time, then user) and shuffled with a
  fresh ``numpy.random.RandomState(seed)`` (what pandas' ``group.sample(frac=1, random_state=42)`` does),
  the first ``round(0.75 * n)`` to train, the rest to test.
* ``temporal`` — per user by time: the newest ``max(1, round(0.2 * n))`` pairs of each user with at least
  5 go to test; users with fewer stay whole in train.
* ``global-time`` — one cut at the 80th percentile of event timestamps: pairs that began before it train,
  pairs that began at or after it test.
* ``leave-last`` — each user's newest pair (users with at least 2) is the test item.

Time-based protocols never let training see the future: each user has a cut (the start of their first
test pair, or the global cut), and train pairs are aggregated from that user's events before it only, so
a view before the cut and a purchase after it count as the view alone. Ties in time are broken by a seeded
random key. Which users are evaluated is one rule for all: at least one relevant test pair and at least
one train pair (see :func:`evaluation_pairs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tastemaker.data.snapshot import SnapshotConfig, to_interactions
from tastemaker.errors import ConfigError, UnknownNameError

__all__ = ["PROTOCOLS", "Split", "evaluation_pairs", "split"]

NO_CUT = np.iinfo(np.int64).max
# A protocol returns: which pairs train, each pair's user's time cut (None: no time cut), the parameters used.
Protocol = Callable[..., tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]


@dataclass(frozen=True)
class Split:
    """Train and test pairs (``to_interactions`` columns) and the protocol's parameters."""

    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)


def split(
    events: pd.DataFrame,
    protocol: str,
    *,
    config: SnapshotConfig | None = None,
    seed: int = 42,
    **params: Any,
) -> Split:
    """Split ``events`` (a ``Dataset.events`` frame) by the named protocol; ``params`` override its defaults."""
    if protocol not in PROTOCOLS:
        raise UnknownNameError("protocol", protocol, list(PROTOCOLS))
    config = config or SnapshotConfig()
    pairs = to_interactions(events, config)
    if pairs.empty:
        raise ConfigError(f"nothing to split: no events of a counted type ({', '.join(config.event_weights)})")
    counted = events[events["type"].isin(list(config.event_weights))]
    in_train, cut_us, used = PROTOCOLS[protocol](pairs, counted["timestamp_us"].to_numpy(), seed, **params)
    train = pairs[in_train] if cut_us is None else _train_before_cut(counted, pairs, in_train, cut_us, config)
    return Split(
        protocol, train.reset_index(drop=True), pairs[~in_train].reset_index(drop=True), {"seed": seed, **used}
    )


def evaluation_pairs(split_: Split, relevance_threshold: float | None = None) -> pd.DataFrame:
    """The relevant test pairs of evaluated users: test pairs (rated at least the threshold, if one is
    set) of users who also have train pairs."""
    test = split_.test
    if relevance_threshold is not None:
        test = test[test["rating"] >= relevance_threshold]
    return test[test["user_id"].isin(split_.train["user_id"].unique())].reset_index(drop=True)


def _train_before_cut(
    events: pd.DataFrame, pairs: pd.DataFrame, in_train: np.ndarray, cut_us: np.ndarray, config: SnapshotConfig
) -> pd.DataFrame:
    """Train pairs re-aggregated from the events before their user's cut (always keeping a pair's first
    event, which a tie in time may put exactly at the cut)."""
    info = pairs.loc[in_train, ["user_id", "item_id"]].assign(
        _first=pairs.loc[in_train, "timestamp_us"].to_numpy(), _cut=cut_us[in_train]
    )
    ev = events.assign(user_id=events["user_id"].astype(str), item_id=events["item_id"].astype(str))
    ev = ev.merge(info, on=["user_id", "item_id"], how="inner")  # keeps the events' order
    keep = (ev["timestamp_us"] < ev["_cut"]) | (ev["timestamp_us"] == ev["_first"])
    return to_interactions(ev.loc[keep, list(events.columns)], config)


def _recommenders(
    pairs: pd.DataFrame, _times: np.ndarray, seed: int, ratio: float = 0.75
) -> tuple[np.ndarray, None, dict[str, Any]]:
    # A canonical order inside each item, so the split does not depend on how the source ordered rows.
    order = np.lexsort((pairs["user_id"].to_numpy(), pairs["timestamp_us"].to_numpy(), pairs["item_id"].to_numpy()))
    canonical = pairs.iloc[order]
    position = np.empty(len(pairs), dtype=np.int64)
    position[order] = canonical.groupby("item_id", sort=False).cumcount().to_numpy()
    size = pairs.groupby("item_id", sort=False)["item_id"].transform("size").to_numpy()
    in_train = np.zeros(len(pairs), dtype=bool)
    for n in np.unique(size):
        perm = np.random.RandomState(seed).permutation(n)  # == sample(frac=1, random_state=seed) per group
        rank = np.empty(n, dtype=np.int64)
        rank[perm] = np.arange(n)
        rows = size == n
        in_train[rows] = rank[position[rows]] < round(ratio * n)
    return in_train, None, {"ratio": ratio, "group_by": "item"}


def _temporal(
    pairs: pd.DataFrame, _times: np.ndarray, seed: int, test_fraction: float = 0.2, min_interactions: int = 5
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    newest_first = _rank_in_user(pairs, seed)
    n = pairs.groupby("user_id")["user_id"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(test_fraction * n))
    in_test = (n >= min_interactions) & (newest_first < n_test)
    return ~in_test, _user_cuts(pairs, in_test), {"test_fraction": test_fraction, "min_interactions": min_interactions}


def _global_time(
    pairs: pd.DataFrame, times: np.ndarray, seed: int, quantile: float = 0.8
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    cut = int(np.ceil(np.quantile(times, quantile)))  # timestamps are integers: < ceil(q) is < q
    in_train = pairs["timestamp_us"].to_numpy() < cut
    return in_train, np.full(len(pairs), cut, dtype=np.int64), {"quantile": quantile, "cut_us": cut}


def _leave_last(
    pairs: pd.DataFrame, _times: np.ndarray, seed: int, min_interactions: int = 2
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    newest_first = _rank_in_user(pairs, seed)
    n = pairs.groupby("user_id")["user_id"].transform("size").to_numpy()
    in_test = (n >= min_interactions) & (newest_first == 0)
    return ~in_test, _user_cuts(pairs, in_test), {"min_interactions": min_interactions}


def _user_cuts(pairs: pd.DataFrame, in_test: np.ndarray) -> np.ndarray:
    """Each pair's user's cut: the start of the user's earliest test pair (``NO_CUT`` without one)."""
    first_test = pd.Series(np.where(in_test, pairs["timestamp_us"].to_numpy(), NO_CUT)).groupby(
        pairs["user_id"].to_numpy()
    )
    return first_test.transform("min").to_numpy(dtype=np.int64)


def _rank_in_user(pairs: pd.DataFrame, seed: int) -> np.ndarray:
    """Each pair's 0-based rank within its user, newest first, ties broken by a seeded random key."""
    tiebreak = np.random.default_rng(seed).random(len(pairs))
    users = pd.factorize(pairs["user_id"])[0]
    order = np.lexsort((tiebreak, -pairs["timestamp_us"].to_numpy(), users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(pairs)]))
    ranks = np.empty(len(pairs), dtype=np.int64)
    ranks[order] = np.arange(len(pairs)) - group_start
    return ranks


PROTOCOLS: dict[str, Protocol] = {
    "recommenders": _recommenders,
    "temporal": _temporal,
    "global-time": _global_time,
    "leave-last": _leave_last,
}
