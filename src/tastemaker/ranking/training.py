"""The ranker's training set: per user, labels after a cut and features from before it.

Each user's newest ``label_fraction`` of interactions (users with at least ``min_interactions``) are held
out; the sources and features are fitted on the rest (``Snapshot.restricted``: same indices), the user's
"now" is the start of their held-out interactions, and the held-out pairs are the labels, graded by
:class:`LabelConfig`. This mirrors how the engine is used — sources fitted on the past, asked about what
comes next — and gives every user with enough history a query group. A share of the users (chosen by a
seeded permutation) is kept apart for early stopping.

What this cut does and does not hide: nothing the user did at or after their own cut reaches a feature
(held-out pairs are dropped; a kept pair the user came back to keeps only its first time — its weight
still counts the later events, a limit of pair-level data). Other users' interactions are cut at the
snapshot's end, not at this user's cut, exactly as in the outer ``temporal`` protocol; item popularity
and the collaborative sources therefore know the crowd's behaviour after a user's cut. ``kind="global"``
(every user at the same t0, the inner snapshot ending at t0, items created after t0 unavailable) removes
that too; ``tastemaker train`` uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from tastemaker.candidates.merge import CandidateGenerator
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import ConfigError
from tastemaker.ranking.features import Context, FeatureBuilder

__all__ = ["LabelConfig", "RankingData", "SplitConfig", "inner_split", "training_data"]


class LabelConfig(ConfigModel):
    """Grades of held-out interactions: 1 for any, 2 for a strong one (a high rating, or a weight at least
    ``strong_weight``, e.g. a purchase or a completed play); candidates not interacted with are 0."""

    high_rating: float | None = 4.0
    strong_weight: float | None = None


class SplitConfig(ConfigModel):
    #: ``newest``: each user's newest interactions are the labels (what serving predicts: what comes next);
    #: ``random``: a seeded random share of each user's interactions (matches a missing-at-random offline
    #: protocol such as ``recommenders``, where the held-out items are spread over the user's whole history);
    #: ``global``: one instant t0 for everyone (the ``label_fraction`` quantile of interaction starts from the
    #: end): nothing anyone did at or after t0 reaches a feature — what production training uses
    kind: Literal["newest", "random", "global"] = "newest"
    #: ``global`` only: the cut itself (default: the quantile above, which depends on how much came after)
    t0_us: int | None = None
    label_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_interactions: int = Field(default=5, ge=2)
    validation_users: float = Field(default=0.2, gt=0, lt=1)
    #: at most this many users' queries (a seeded sample): bounds memory (each brings ~500 candidate rows)
    max_users: int = Field(default=20_000, ge=10)
    #: keep every positive and at most this many (seeded) negatives per training query (validation queries
    #: keep all); None keeps every candidate. 50 matched or beat all candidates on validation at 1/8 the rows
    negatives: int | None = Field(default=50, ge=1)


@dataclass(frozen=True)
class RankingData:
    """Rows of candidates with features ``x``, graded labels ``y`` and query ``groups`` (one per user)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # rows per query, in row order
    users: np.ndarray  # the user of each query

    @property
    def positives(self) -> int:
        return int((self.y > 0).sum())


def inner_split(snapshot: Snapshot, config: SplitConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which interactions are held out as labels, and each user's "now": the start of their held-out ones
    (``newest``), just after their latest kept one (``random``), t0 (``global``), or the snapshot's end for
    users without."""
    table = snapshot.interactions
    users = table["user_idx"].to_numpy()
    when = table["timestamp_us"].to_numpy(np.int64)
    if config.kind == "global":
        t0 = config.t0_us
        if t0 is None:
            t0 = int(np.ceil(np.quantile(when, 1 - config.label_fraction))) if len(when) else snapshot.end_us
        return when >= t0, np.full(snapshot.n_users, t0, np.int64)
    tiebreak = np.random.default_rng(seed).random(len(table))
    # per user, newest first (or in a seeded random order)
    order = np.lexsort((tiebreak, -when, users)) if config.kind == "newest" else np.lexsort((tiebreak, users))
    counts = np.bincount(users, minlength=snapshot.n_users)
    starts = np.cumsum(counts) - counts
    newest_first = np.empty(len(table), np.int64)
    newest_first[order] = np.arange(len(table)) - starts[users[order]]
    n = counts[users]
    held = (n >= config.min_interactions) & (newest_first < np.maximum(1, np.round(config.label_fraction * n)))
    cut = np.full(snapshot.n_users, snapshot.end_us, np.int64)
    if config.kind == "newest":
        np.minimum.at(cut, users[held], when[held])
    else:  # random labels have no time of their own: "now" is just after the user's latest kept interaction
        latest = np.full(snapshot.n_users, -1, np.int64)
        np.maximum.at(latest, users[~held], table["last_timestamp_us"].to_numpy(np.int64)[~held])
        cut = np.where(latest >= 0, latest + 1, cut)
    return held, cut


def training_data(
    snapshot: Snapshot,
    make_generator: Callable[[], CandidateGenerator],
    builder: FeatureBuilder,
    *,
    split: SplitConfig,
    labels: LabelConfig,
    seed: int,
) -> tuple[RankingData, RankingData, CandidateGenerator]:
    """Training and validation data from an inner split of ``snapshot``; also the generator fitted on the
    inner side (its score scales are the ones the ranker learns)."""
    held, cut = inner_split(snapshot, split, seed)
    t0 = int(cut[0]) if split.kind == "global" and len(cut) else None  # the inner snapshot ends at t0
    inner = snapshot.restricted(~held, cutoff_us=t0, user_cut_us=cut)
    generator = make_generator().fit(inner)
    builder.fit(generator, inner)
    table = snapshot.interactions[held]
    grade = _grades(table, labels)
    users = np.unique(table["user_idx"].to_numpy())
    if len(users) > split.max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, split.max_users, replace=False))
    found = generator.generate(users, exclude=inner.matrix[users])
    contexts = [Context(now_us=int(cut[u])) for u in users]
    x = builder.compute(users, found, contexts)
    key = pd.Series(grade, index=table["user_idx"].to_numpy().astype(np.int64) * snapshot.n_items + table["item_idx"])
    key = key.groupby(level=0).max()
    slots = users[:, None].astype(np.int64) * snapshot.n_items + np.maximum(found.items, 0)
    y = np.where(found.items >= 0, key.reindex(slots.ravel()).fillna(0).to_numpy().reshape(slots.shape), 0)
    useful = (y > 0).any(axis=1)  # a query without a positive teaches a ranking nothing
    if not useful.any():
        raise ConfigError(
            f"no training query: no user has {split.min_interactions}+ interactions with a held-out one among "
            "their candidates; the ranker needs more data (or a lower split.min_interactions)"
        )
    rng = np.random.default_rng(seed)
    validation = rng.random(len(users)) < split.validation_users
    rows = found.items >= 0
    if split.negatives is not None:  # a seeded random subset of each query's negatives, every positive
        noise = np.where(rows & (y == 0), rng.random(y.shape), np.inf)
        kth = np.sort(noise, axis=1)[:, min(split.negatives, y.shape[1]) - 1 : min(split.negatives, y.shape[1])]
        rows &= (y > 0) | (noise <= kth)
    return (
        _rows(x, y, rows, users, useful & ~validation),
        _rows(x, y, found.items >= 0, users, useful & validation),  # validation ranks every candidate
        generator,
    )


def _grades(table: pd.DataFrame, labels: LabelConfig) -> np.ndarray:
    strong = np.zeros(len(table), bool)
    if labels.high_rating is not None:
        strong |= table["rating"].to_numpy(float) >= labels.high_rating
    if labels.strong_weight is not None:
        strong |= table["weight"].to_numpy(float) >= labels.strong_weight
    return np.where(strong, 2, 1)


def _rows(x: np.ndarray, y: np.ndarray, rows: np.ndarray, users: np.ndarray, keep: np.ndarray) -> RankingData:
    valid = rows[keep]
    return RankingData(
        x=x[keep][valid].astype(np.float32),
        y=y[keep][valid].astype(np.int32),
        groups=valid.sum(axis=1),
        users=users[keep],
    )
