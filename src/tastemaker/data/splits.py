"""Train/test splits of per-pair interactions (see ``snapshot.to_interactions``), each reproducible from a seed.

* ``recommenders`` — Microsoft Recommenders' MovieLens benchmark: rows grouped by item, each item's
  rows shuffled with a fresh ``numpy.random.RandomState(seed)`` (seed 42), the first ``round(0.75 * n)``
  to train, the rest to test.
* ``temporal`` — per user by time: the newest 20% (``max(1, round(0.2 * n))``) of each user with at
  least 5 interactions go to test; users with fewer stay whole in train.
* ``global-time`` — one cut at the 80th percentile of timestamps: train strictly before, test at or after.
* ``leave-last`` — each user's latest interaction (users with at least 2) is the test item.

Ties in time are broken by a seeded random key, so every split is a function of (data, seed).
Which users are evaluated is the same rule for all: users with at least one relevant test row and at
least one train row (see :func:`evaluation_pairs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tastemaker.errors import UnknownNameError

__all__ = ["PROTOCOLS", "Split", "evaluation_pairs", "split"]


@dataclass(frozen=True)
class Split:
    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)


def split(interactions: pd.DataFrame, protocol: str, *, seed: int = 42, **params: Any) -> Split:
    """Split ``interactions`` by the named protocol; ``params`` override its defaults."""
    if protocol not in PROTOCOLS:
        raise UnknownNameError("protocol", protocol, list(PROTOCOLS))
    frame = interactions.reset_index(drop=True)
    in_train, used = PROTOCOLS[protocol](frame, seed, **params)
    return Split(protocol, frame[in_train].reset_index(drop=True), frame[~in_train].reset_index(drop=True),
                 {"seed": seed, **used})  # fmt: skip


def evaluation_pairs(split_: Split, relevance_threshold: float | None = None) -> pd.DataFrame:
    """The relevant test pairs of evaluated users: test rows (rating at least the threshold, if one is
    set) of users who also have train rows."""
    test = split_.test
    if relevance_threshold is not None:
        test = test[test["rating"] >= relevance_threshold]
    return test[test["user_id"].isin(split_.train["user_id"].unique())].reset_index(drop=True)


def _recommenders(frame: pd.DataFrame, seed: int, ratio: float = 0.75) -> tuple[np.ndarray, dict[str, Any]]:
    groups = frame.groupby("item_id", sort=False)
    position = groups.cumcount().to_numpy()  # row's place within its item, in input order
    size = groups["item_id"].transform("size").to_numpy()
    in_train = np.zeros(len(frame), dtype=bool)
    for n in np.unique(size):
        # pandas' sample(frac=1, random_state=seed) per group == a fresh RandomState(seed).permutation(n)
        perm = np.random.RandomState(seed).permutation(n)
        rank = np.empty(n, dtype=np.int64)
        rank[perm] = np.arange(n)
        rows = size == n
        in_train[rows] = rank[position[rows]] < round(ratio * n)
    return in_train, {"ratio": ratio, "group_by": "item"}


def _temporal(
    frame: pd.DataFrame, seed: int, test_fraction: float = 0.2, min_interactions: int = 5
) -> tuple[np.ndarray, dict[str, Any]]:
    newest_first = _rank_in_user(frame, seed, descending=True)
    n = frame.groupby("user_id")["user_id"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(test_fraction * n))
    in_test = (n >= min_interactions) & (newest_first < n_test)
    return ~in_test, {"test_fraction": test_fraction, "min_interactions": min_interactions}


def _global_time(frame: pd.DataFrame, seed: int, quantile: float = 0.8) -> tuple[np.ndarray, dict[str, Any]]:
    cut = float(np.quantile(frame["timestamp_us"].to_numpy(), quantile))
    return frame["timestamp_us"].to_numpy() < cut, {"quantile": quantile, "cut_us": int(np.ceil(cut))}


def _leave_last(frame: pd.DataFrame, seed: int, min_interactions: int = 2) -> tuple[np.ndarray, dict[str, Any]]:
    newest_first = _rank_in_user(frame, seed, descending=True)
    n = frame.groupby("user_id")["user_id"].transform("size").to_numpy()
    return ~((n >= min_interactions) & (newest_first == 0)), {"min_interactions": min_interactions}


def _rank_in_user(frame: pd.DataFrame, seed: int, *, descending: bool) -> np.ndarray:
    """Each row's 0-based rank by time within its user, ties broken by a seeded random key."""
    tiebreak = np.random.default_rng(seed).random(len(frame))
    ts = frame["timestamp_us"].to_numpy()
    users = pd.factorize(frame["user_id"])[0]
    order = np.lexsort((tiebreak, -ts if descending else ts, users))
    ranks = np.empty(len(frame), dtype=np.int64)
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(frame)]))
    ranks[order] = np.arange(len(frame)) - group_start
    return ranks


PROTOCOLS: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "recommenders": _recommenders,
    "temporal": _temporal,
    "global-time": _global_time,
    "leave-last": _leave_last,
}
