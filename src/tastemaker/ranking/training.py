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

from collections.abc import Callable, Sequence
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

__all__ = ["LabelConfig", "RankingData", "SplitConfig", "event_devices", "inner_split", "training_data"]


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
    #: the share of users whose newest window is validation queries (every candidate kept) rather than training
    #: ones. 0: every query trains — the ranker's folds (``ranker.folds`` > 1) early-stop on their own users,
    #: and under a ``random`` split the validation users' other windows are no longer left unused
    validation_users: float = Field(default=0.2, ge=0, lt=1)
    #: at most this many users' queries per window (a seeded sample): bounds time and memory — each costs a
    #: candidate request and features for ~500 candidates (~4.6 ms at 1M interactions); 3,000 users still give
    #: ~150k training rows, and a 1M retrain stays under 60 s (benchmarks/ranking.py)
    max_users: int = Field(default=3_000, ge=10)
    #: keep every positive and at most this many (seeded) negatives per training query (validation queries
    #: keep all); None keeps every candidate. 50 matched or beat all candidates on validation at 1/8 the rows
    negatives: int | None = Field(default=50, ge=1)
    #: label windows pooled into one training set (see :func:`inner_split`); each refits the sources on its
    #: own inner side, so training time grows with it
    windows: int = Field(default=1, ge=1)
    #: ``newest`` / ``global``: the validation users' older windows are training queries too (see training_data)
    validation_history: bool = True


@dataclass(frozen=True)
class RankingData:
    """Rows of candidates with features ``x``, graded labels ``y`` and query ``groups`` (one per user)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # rows per query, in row order
    users: np.ndarray  # the user of each query
    windows: np.ndarray  # the label window of each query (0: the newest)

    @property
    def positives(self) -> int:
        return int((self.y > 0).sum())

    @classmethod
    def concat(cls, parts: Sequence[RankingData]) -> RankingData:
        """The queries of every part, in order."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            groups=np.concatenate([p.groups for p in parts]),
            users=np.concatenate([p.users for p in parts]),
            windows=np.concatenate([p.windows for p in parts]),
        )

    def queries(self, keep: np.ndarray) -> RankingData:
        """The queries where ``keep`` holds, with their rows."""
        rows = np.repeat(keep, self.groups)
        return RankingData(self.x[rows], self.y[rows], self.groups[keep], self.users[keep], self.windows[keep])


def inner_split(
    snapshot: Snapshot, config: SplitConfig, seed: int, window: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which interactions are labels (``held``) and which the sources and features may see (``kept``), and
    each user's "now": the start of their held-out ones (``newest``), just after their latest kept one
    (``random``), t0 (``global``), or the snapshot's end for users without.

    ``window`` 0 is the newest label window; window ``w`` moves it ``w`` label-fractions back in time
    (``newest``: each user's interactions ``w·m … (w+1)·m`` newest-first, ``m`` = their label count;
    ``global``: the instants between the quantiles ``1 - (w+1)·f`` and ``1 - w·f``) and hides everything
    after it; a ``random`` window ``w`` is another seeded draw."""
    table = snapshot.interactions
    users = table["user_idx"].to_numpy()
    when = table["timestamp_us"].to_numpy(np.int64)
    f = config.label_fraction
    if config.kind == "global":
        if config.t0_us is not None and window == 0:
            t0, t1 = config.t0_us, None
        else:
            base = 1.0  # window w labels the quantiles base - (w+1)·f … base - w·f
            if config.t0_us is not None and len(when):
                base = float(np.mean(when < config.t0_us)) + f
            t0 = _quantile_time(when, base - (window + 1) * f, snapshot.end_us)
            t1 = None if window == 0 else _quantile_time(when, base - window * f, snapshot.end_us)
        held = (when >= t0) if t1 is None else (when >= t0) & (when < t1)
        return held, when < t0, np.full(snapshot.n_users, t0, np.int64)
    rng = np.random.default_rng(seed + 1_000 * window if config.kind == "random" else seed)
    tiebreak = rng.random(len(table))
    # per user, newest first (or in a seeded random order)
    order = np.lexsort((tiebreak, -when, users)) if config.kind == "newest" else np.lexsort((tiebreak, users))
    counts = np.bincount(users, minlength=snapshot.n_users)
    starts = np.cumsum(counts) - counts
    position = np.empty(len(table), np.int64)
    position[order] = np.arange(len(table)) - starts[users[order]]
    n = counts[users]
    labels = np.maximum(1, np.round(f * n)).astype(np.int64)
    first = labels * window if config.kind == "newest" else 0  # where this window's labels start, newest-first
    enough = n - first >= config.min_interactions
    held = enough & (position >= first) & (position < first + labels)
    # an older window hides its labels and everything newer, for every user (those too short for it keep less)
    kept = ~held if config.kind == "random" or window == 0 else position >= first + labels
    cut = np.full(snapshot.n_users, snapshot.end_us, np.int64)
    if config.kind == "newest":
        np.minimum.at(cut, users[held], when[held])
    else:  # random labels have no time of their own: "now" is just after the user's latest kept interaction
        latest = np.full(snapshot.n_users, -1, np.int64)
        np.maximum.at(latest, users[kept], table["last_timestamp_us"].to_numpy(np.int64)[kept])
        cut = np.where(latest >= 0, latest + 1, cut)
    return held, kept, cut


def _quantile_time(when: np.ndarray, q: float, default: int) -> int:
    if not len(when):
        return default
    return int(np.ceil(np.quantile(when, min(max(q, 0.0), 1.0))))


def training_data(
    snapshot: Snapshot,
    make_generator: Callable[[], CandidateGenerator],
    builder: FeatureBuilder,
    *,
    split: SplitConfig,
    labels: LabelConfig,
    seed: int,
    on_fitted: Callable[[int, CandidateGenerator], object] | None = None,
) -> tuple[RankingData, RankingData, CandidateGenerator]:
    """Training and validation data from ``split.windows`` inner splits of ``snapshot``; also the generator
    fitted on the newest window's inner side (its score scales are the ones the ranker learns).
    ``on_fitted(window, generator)`` is called as soon as a window's generator is fitted.

    Users are split once into training and validation users (a seeded draw per user), the same in every
    window; validation queries come from the newest window only, training queries from every window. With
    ``split.validation_history`` (and ``newest`` or ``global`` windows) the validation users' older windows
    train too: early stopping then watches a window later than anything those users trained with."""
    plan = _Plan(
        snapshot, make_generator, split, labels, seed, on_fitted, devices=event_devices(snapshot),
        validation_user=np.random.default_rng(seed).random(snapshot.n_users) < split.validation_users,
    )  # fmt: skip
    # window 0's builder serves the schema; older windows get their own
    parts = [_window(plan, builder if w == 0 else FeatureBuilder(builder.config), w) for w in range(split.windows)]
    train = RankingData.concat([train for train, _, _ in parts])
    if not len(train.groups):
        raise ConfigError(
            f"no training query: no user has {split.min_interactions}+ interactions with a held-out one among "
            "their candidates; the ranker needs more data (or a lower split.min_interactions)"
        )
    _, valid, newest = parts[0]
    return train, valid, newest


@dataclass(frozen=True)
class _Plan:
    """What every window of one training set shares."""

    snapshot: Snapshot
    make_generator: Callable[[], CandidateGenerator]
    split: SplitConfig
    labels: LabelConfig
    seed: int
    on_fitted: Callable[[int, CandidateGenerator], object] | None
    devices: list[str]
    validation_user: np.ndarray  # per user: a validation user (the same in every window)


def _window(plan: _Plan, builder: FeatureBuilder, window: int) -> tuple[RankingData, RankingData, CandidateGenerator]:
    """One window's training and validation queries (validation ones only from window 0), and its generator."""
    snapshot, split = plan.snapshot, plan.split
    held, kept, cut = inner_split(snapshot, split, plan.seed, window)
    t0 = int(cut[0]) if split.kind == "global" and len(cut) else None  # the inner snapshot ends at t0
    inner = snapshot.restricted(kept, cutoff_us=t0, user_cut_us=cut)
    generator = plan.make_generator().fit(inner)
    if plan.on_fitted is not None:
        plan.on_fitted(window, generator)
    builder.fit(generator, inner, devices=plan.devices)
    table = snapshot.interactions[held]
    users = np.unique(table["user_idx"].to_numpy())
    rng = np.random.default_rng(plan.seed + window)
    if len(users) > split.max_users:
        users = np.sort(rng.choice(users, split.max_users, replace=False))
    found = generator.generate(users, exclude=inner.matrix[users])
    y = _labels(table, _grades(table, plan.labels), users, found.items, snapshot.n_items)
    every = found.items >= 0
    rows = every.copy()
    if split.negatives is not None:  # a seeded random subset of each query's negatives, every positive
        noise = np.where(rows & (y == 0), rng.random(y.shape), np.inf)
        kth = np.sort(noise, axis=1)[:, min(split.negatives, y.shape[1]) - 1 : min(split.negatives, y.shape[1])]
        rows &= (y > 0) | (noise <= kth)
    # a query without a positive teaches a ranking nothing: features only for the others
    useful = np.flatnonzero((y > 0).any(axis=1))
    users, found, y, every, rows = users[useful], found.take(useful), y[useful], every[useful], rows[useful]
    contexts = _label_contexts(table, users, cut, builder.config.context_keys, label_clock=split.kind == "global")
    x = builder.compute(users, found, contexts)
    validating = plan.validation_user[users]
    trains = ~validating
    if window > 0 and split.kind != "random" and split.validation_history:
        trains[:] = True  # older than every validation label: the validation window stays later than training
    valid = _rows(x, y, every, users, validating & (window == 0), window)  # validation ranks them all
    return _rows(x, y, rows, users, trains, window), valid, generator


def event_devices(snapshot: Snapshot) -> list[str]:
    """The devices the snapshot's event contexts name, sorted (the ``context_device`` feature's codes)."""
    if "context" not in snapshot.interactions:
        return []
    return sorted({str(c["device"]) for c in snapshot.interactions["context"] if c and c.get("device") is not None})


def _label_contexts(
    table: pd.DataFrame, users: np.ndarray, cut: np.ndarray, keys: Sequence[str], label_clock: bool
) -> list[Context]:
    """Each query's context: "now" is the user's cut; device and declared keys are those of the user's first
    held-out interaction (the request those labels answered), and so are hour and weekday under one global
    cut (``newest`` cuts at that interaction anyway; ``random`` labels are spread over the user's history,
    so the cut — just after the latest kept interaction, where offline requests are asked — keeps them)."""
    first = table.sort_values("timestamp_us", kind="stable").drop_duplicates("user_idx")
    when = dict(zip(first["user_idx"], first["timestamp_us"].to_numpy(np.int64), strict=True)) if label_clock else {}
    found = dict(zip(first["user_idx"].to_numpy(), first["context"], strict=True)) if "context" in table else {}
    return [Context.of_event(int(cut[u]), found.get(u), keys, at_us=when.get(u)) for u in users]


def _labels(table: pd.DataFrame, grade: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Each candidate slot's grade: the best of the user's held-out interactions with the item, 0 if none."""
    key = pd.Series(grade, index=table["user_idx"].to_numpy().astype(np.int64) * n_items + table["item_idx"])
    key = key.groupby(level=0).max()
    slots = users[:, None].astype(np.int64) * n_items + np.maximum(items, 0)
    return np.where(items >= 0, key.reindex(slots.ravel()).fillna(0).to_numpy().reshape(slots.shape), 0)


def _grades(table: pd.DataFrame, labels: LabelConfig) -> np.ndarray:
    strong = np.zeros(len(table), bool)
    if labels.high_rating is not None:
        strong |= table["rating"].to_numpy(float) >= labels.high_rating
    if labels.strong_weight is not None:
        strong |= table["weight"].to_numpy(float) >= labels.strong_weight
    return np.where(strong, 2, 1)


def _rows(
    x: np.ndarray, y: np.ndarray, rows: np.ndarray, users: np.ndarray, keep: np.ndarray, window: int
) -> RankingData:
    valid = rows[keep]
    return RankingData(
        x=x[keep][valid].astype(np.float32),
        y=y[keep][valid].astype(np.int32),
        groups=valid.sum(axis=1),
        users=users[keep],
        windows=np.full(int(keep.sum()), window, np.int32),
    )
