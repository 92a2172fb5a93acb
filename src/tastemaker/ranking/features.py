"""Ranking features: named columns computed as arrays over every candidate of a batch of requests at once.

A :class:`FeatureBuilder` is fitted beside a :class:`~tastemaker.candidates.merge.CandidateGenerator` (it
reads the generator's sources and the snapshot they were fitted on) and turns the generator's
:class:`~tastemaker.candidates.merge.Candidates` into a ``(users, candidates, features)`` float32 array:
NaN where a value does not exist (an item a source did not propose, a padding slot), which LightGBM treats
as missing. Every column is listed, with its meaning, by :meth:`FeatureBuilder.schema`; the schema is
versioned and travels with a trained ranker, which refuses features of another schema.

Point in time: everything is read from the generator's state (the snapshot it was fitted on, plus
folded-in history) and from the request's :class:`Context`, whose ``now_us`` is injected — never the wall
clock. Item popularity, trend and age, and the user's windows, are counted before the request's ``now``
(a training query's now is its cut), so a ranker trained on users at many different times reads each at
its own time. Item popularity and trend are counted before the start of now's minute, everywhere: requests
of the same minute (serving's) then share the searches through a cache of item statistics for that minute.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator

from tastemaker.candidates.merge import CandidateGenerator, Candidates
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import UNKNOWN_TIME, Snapshot
from tastemaker.errors import ConfigError, NotFittedError, UnknownNameError

__all__ = ["SCHEMA_VERSION", "Context", "FeatureBuilder", "FeatureConfig", "FeatureSchema"]

#: bump when a feature's meaning or order changes: a ranker trained on another version is refused
SCHEMA_VERSION = 3  # 3: item popularity and trend counted before now's minute; at most 16 categories an item
_DAY_US = 86_400 * 1_000_000
_MINUTE_US = 60 * 1_000_000
#: category features read at most this many categories of an item (its first ones)
_MAX_CATEGORIES = 16


@dataclass(frozen=True)
class Context:
    """Where and when one request happens. ``now_us`` is injected (the request's time, or a training cut);
    ``device`` is a free string (e.g. ``mobile``); ``values`` holds any declared numeric context keys."""

    now_us: int
    device: str | None = None
    values: dict[str, float] = field(default_factory=dict)
    #: the instant hour and weekday are read from when it is not ``now_us``: a training query whose
    #: statistics are cut at one t0 answers label events that came later, each at its own hour
    clock_us: int | None = None

    @classmethod
    def of_event(
        cls, now_us: int, context: dict[str, Any] | None, keys: Sequence[str] = (), *, at_us: int | None = None
    ) -> Context:
        """The context an event (at ``at_us``) was recorded in (``{"device": ..., KEY: number}``); other entries
        are ignored."""
        context = context or {}
        device = context.get("device")
        values = {key: float(context[key]) for key in keys if _is_number(context.get(key))}
        device = None if device is None else str(device)
        return cls(now_us=int(now_us), device=device, values=values, clock_us=None if at_us is None else int(at_us))


class FeatureConfig(ConfigModel):
    #: numeric context keys the model may use (each becomes a feature ``context_KEY``); others are ignored
    context_keys: list[str] = Field(default_factory=list)
    #: how many of a user's newest items their content similarity is taken over
    recent_items: int = Field(default=20, ge=1)
    #: numeric item attributes the model may use (each becomes a feature ``item_KEY``; NaN where an item
    #: lacks it), e.g. ``duration``: with the context features they let a ranker learn "short on mobile"
    item_keys: list[str] = Field(default_factory=list)
    #: when item popularity, trend and age are counted: before each request's ``now`` (what serving sees), or
    #: at the snapshot's end for every request (for offline protocols without time, e.g. a random split)
    item_time: Literal["now", "snapshot-end"] = "now"
    #: features kept in the schema but always missing: an ablation, or a feature known to be wrong switched
    #: off without changing the schema's columns
    disabled: list[str] = Field(default_factory=list)

    @field_validator("context_keys", "item_keys")
    @classmethod
    def _not_reserved(cls, keys: list[str]) -> list[str]:
        reserved = {"hour_sin", "hour_cos", "weekday", "device", "popularity_7d", "popularity_30d",
                    "popularity_all", "trend", "age_days", "available"}  # fmt: skip
        for key in keys:
            if key in reserved or key.endswith(("_rank", "_score", "_proposed")) or not key.isidentifier():
                raise ValueError(f"{key!r} would collide with a built-in feature name; name it otherwise")
        if len(set(keys)) != len(keys):
            raise ValueError(f"keys repeat: {keys}")
        return keys


class FeatureSchema(ConfigModel):
    """What a ranker was trained on: the features' names and meanings, in column order."""

    version: int
    names: list[str]
    descriptions: dict[str, str]
    #: devices seen in training, in code order (the ``device`` feature is an index into this list)
    devices: list[str]
    categorical: list[str]


class FeatureBuilder:
    """Computes the features of a generator's candidates; see the module docstring."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._generator: CandidateGenerator | None = None

    def fit(self, generator: CandidateGenerator, snapshot: Snapshot, devices: Sequence[str] = ()) -> FeatureBuilder:
        """Read item statistics from ``snapshot`` (the one ``generator`` was fitted on)."""
        table = snapshot.interactions
        # every pair's start, keyed item-major (item · stride + seconds since the first start): one sorted array
        # answers "how many users started on item i before t" for any request's now by a binary search
        seconds = table["timestamp_us"].to_numpy(np.int64) // 1_000_000
        self._first_s = int(seconds.min()) if len(seconds) else 0
        self._span = int(seconds.max() - self._first_s) + 1 if len(seconds) else 1
        items = table["item_idx"].to_numpy().astype(np.int64)
        self._starts = np.sort(items * (self._span + 1) + (seconds - self._first_s))
        self._end_us = snapshot.end_us
        per_item = np.bincount(items, minlength=snapshot.n_items).astype(np.float64)
        self._item_first = np.cumsum(per_item) - per_item  # where each item's entries begin
        self._minute = _MinuteCache(snapshot.n_items)
        self._n_items = snapshot.n_items
        self._created = snapshot.item_created_at_us.astype(np.float64)
        self._item = {"item_available": snapshot.item_available.astype(np.float32)}
        for key in self.config.item_keys:
            self._item[f"item_{key}"] = _numeric(snapshot.item_attributes, key, snapshot.n_items)
        self._item_cats = _padded(snapshot.item_categories.tocsr(), _MAX_CATEGORIES)
        self._n_categories = snapshot.item_categories.shape[1]
        self._devices = list(dict.fromkeys(str(d) for d in devices))
        self._generator = generator
        unknown = sorted(set(self.config.disabled) - set(self.names))
        if unknown:
            raise UnknownNameError("feature", unknown[0], self.names)
        self._disabled = [self.names.index(name) for name in self.config.disabled]
        return self

    # -- the schema --------------------------------------------------------------------------------------
    def schema(self) -> FeatureSchema:
        names, descriptions = [], {}
        for name, text in self._columns():
            names.append(name)
            descriptions[name] = text
        return FeatureSchema(
            version=SCHEMA_VERSION, names=names, descriptions=descriptions, devices=self._devices,
            categorical=["context_weekday", "context_device"],
        )  # fmt: skip

    def _columns(self) -> list[tuple[str, str]]:
        gen = self._require()
        columns = []
        for source in gen.sources:
            columns += [
                (f"{source}_rank", f"rank (from 0) of the item in {source}'s list; missing if it did not propose it"),
                (f"{source}_score", f"{source}'s score over its best score for this user; missing if not proposed"),
                (f"{source}_proposed", f"1 if {source} proposed the item"),
            ]  # fmt: skip
        columns += [
            ("item_popularity_7d", "log(1 + users who started on the item in the 7 days before now's minute)"),
            ("item_popularity_30d", "log(1 + users who started on the item in the 30 days before now's minute)"),
            ("item_popularity_all", "log(1 + users who started on the item before now's minute)"),
            ("item_trend", "(7-day users + 1) / (30-day users scaled to 7 days + 1): above 1 is rising"),
            ("item_age_days", "days from the item's creation (or first interaction) to now; negative: not yet"),
            ("item_available", "1 if the item is available"),
            ("user_activity_7d", "items the user last interacted with in the 7 days before now"),
            ("user_activity_30d", "items the user last interacted with in the 30 days before now"),
            ("user_history", "log(1 + the number of items the user interacted with)"),
            ("user_tenure_days", "days since the oldest latest-interaction among the user's items (a lower bound "
                                 "on the days since their first interaction)"),
            ("user_days_since_last", "days since the user's latest interaction (time since the last session)"),
            ("category_affinity", "the user's share of interactions in the item's categories (an item's first 16)"),
            ("category_recency_days", "days since the user last interacted with an item of the item's categories"),
            ("content_similarity", "cosine of the item's content vector with the user's recent-history profile"),
            ("als_dot", "ALS user vector · item vector"),
            ("context_hour_sin", "sine of the request's hour of day (UTC; a training query's: its first label's)"),
            ("context_hour_cos", "cosine of the request's hour of day (UTC)"),
            ("context_weekday", "the request's weekday, 0 = Monday (categorical)"),
            ("context_device", "the request's device, an index into the schema's devices (categorical)"),
        ]  # fmt: skip
        columns += [(f"context_{key}", f"declared context key {key!r}") for key in self.config.context_keys]
        columns += [(f"item_{key}", f"declared item attribute {key!r}") for key in self.config.item_keys]
        return columns

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._columns()]

    # -- computing ---------------------------------------------------------------------------------------
    def compute(self, users: np.ndarray, candidates: Candidates, contexts: Sequence[Context]) -> np.ndarray:
        """``(len(users), candidates, features)`` float32, NaN where a value does not exist."""
        self._require()
        users = np.asarray(users, dtype=np.int64)
        if len(contexts) != len(users):
            raise ConfigError(f"got {len(contexts)} contexts for {len(users)} users; give one per user")
        items = candidates.items
        valid = items >= 0
        safe = np.where(valid, items, 0)
        now = np.array([c.now_us for c in contexts], dtype=np.int64)
        parts = [self._source_features(candidates)]
        item_now = now if self.config.item_time == "now" else np.full_like(now, self._end_us)
        parts += self._item_features(safe, item_now)
        parts += [self._gather(self._item["item_available"], safe)]
        parts += self._user_features(users, now, items.shape[1])
        parts += self._user_item_features(users, safe, now)
        parts += self._context_features(contexts, items.shape[1])
        parts += [self._gather(self._item[f"item_{key}"], safe) for key in self.config.item_keys]
        out = np.concatenate([p if p.ndim == 3 else p[:, :, None] for p in parts], axis=2).astype(np.float32)
        out[~valid] = np.nan
        out[..., self._disabled] = np.nan
        return out

    def _source_features(self, candidates: Candidates) -> np.ndarray:
        ranks, scores = candidates.ranks, candidates.scores
        proposed = ranks >= 0
        best = np.max(np.where(proposed, np.abs(scores), 0.0), axis=1, keepdims=True)  # 0: nothing proposed
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = np.where(proposed & (best > 0), scores / best, np.nan)
        rank = np.where(proposed, ranks, np.nan)
        stacked = np.stack([rank, relative, proposed.astype(np.float32)], axis=3)  # users, items, sources, 3
        return stacked.reshape(ranks.shape[0], ranks.shape[1], 3 * ranks.shape[2])

    def _item_features(self, items: np.ndarray, now: np.ndarray) -> list[np.ndarray]:
        """Popularity over 7 / 30 days and all time, and trend, before the start of each request's minute;
        age at now. A batch within one minute reads (and fills) the minute's cache of item statistics."""
        inside = items < self._n_items  # items added after the snapshot have no statistics yet
        safe = np.where(inside, items, 0)
        minute = now // _MINUTE_US * _MINUTE_US
        shared = bool(len(now)) and (minute == minute[0]).all()
        counted = self._minute.read(safe, int(minute[0]), self._counted) if shared else None
        if counted is None:
            counted = self._counted(safe, np.broadcast_to(minute[:, None], safe.shape))
        created = self._created[safe]
        age = np.where(created == UNKNOWN_TIME, np.nan, (now[:, None] - created) / _DAY_US)
        return [np.where(inside[..., None], counted, np.nan), np.where(inside, age, np.nan)]

    def _counted(self, items: np.ndarray, before_us: np.ndarray) -> np.ndarray:
        """``(*items.shape, 4)``: log(1 + users who started on each item in the 7 / 30 days before
        ``before_us`` and at any time before it), and the 7-day over 30-day trend."""
        base = items.astype(np.int64) * (self._span + 1)
        before_s = before_us[..., None] // 1_000_000 - self._first_s
        back = np.array([30 * 86_400, 7 * 86_400, 0])
        found = np.searchsorted(self._starts, (base[..., None] + np.clip(before_s - back, 0, self._span)).ravel())
        found = found.astype(np.float64).reshape(*items.shape, 3)
        week = found[..., 2] - found[..., 1]
        month = found[..., 2] - found[..., 0]
        before = found[..., 2] - self._item_first[items]
        trend = (week + 1.0) / (month * 7.0 / 30.0 + 1.0)
        return np.stack([np.log1p(week), np.log1p(month), np.log1p(before), trend], axis=-1)

    def _gather(self, values: np.ndarray, items: np.ndarray) -> np.ndarray:
        inside = items < len(values)  # items added after the snapshot have no statistics yet
        return np.where(inside, values[np.minimum(items, len(values) - 1)], np.nan)

    def _user_features(self, users: np.ndarray, now: np.ndarray, width: int) -> list[np.ndarray]:
        gen = self._require()
        last = gen.user_last_rows(users)
        rows = last.row_ids()
        when = last.data.astype(np.float64)
        age = (now[rows] - when) / _DAY_US
        count = np.bincount(rows, minlength=len(users)).astype(np.float64)
        week = np.bincount(rows, weights=(age >= 0) & (age < 7), minlength=len(users))
        month = np.bincount(rows, weights=(age >= 0) & (age < 30), minlength=len(users))
        first = np.full(len(users), np.inf)
        latest = np.full(len(users), -np.inf)
        np.minimum.at(first, rows, when)
        np.maximum.at(latest, rows, when)
        tenure = np.where(count > 0, (now - first) / _DAY_US, np.nan)
        since = np.where(count > 0, (now - latest) / _DAY_US, np.nan)
        return [np.repeat(v[:, None], width, axis=1) for v in (week, month, np.log1p(count), tenure, since)]

    def _user_item_features(self, users: np.ndarray, items: np.ndarray, now: np.ndarray) -> list[np.ndarray]:
        gen = self._require()
        cats, stride = self._item_cats, self._n_categories + 1  # cell n_categories of each user: padding
        # each user's share of history and latest time per category, as (user · stride + category) cells
        history = gen.user_rows(users).nonzero()
        h_rows, h_items = history.row_ids(), history.indices
        known = h_items < len(cats)
        h_rows, h_items = h_rows[known], h_items[known]
        h_when = gen.user_last_at(users, h_rows, h_items).astype(np.float64)
        h_cats = cats[h_items]
        has = h_cats >= 0
        cells = (h_rows[:, None] * stride + h_cats)[has]
        counts = np.bincount(cells, minlength=len(users) * stride).reshape(len(users), stride).astype(np.float64)
        shares = (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)).ravel()
        latest = np.full(len(users) * stride, -np.inf)
        np.maximum.at(latest, cells, np.broadcast_to(h_when[:, None], h_cats.shape)[has])
        # the same cells for every candidate's categories (padding reads the empty cell: share 0, never)
        inside = items < len(cats)
        c_cats = np.where(inside[..., None], cats[np.where(inside, items, 0)], -1)  # (users, candidates, width)
        c_cells = np.arange(len(users))[:, None, None] * stride + np.where(c_cats >= 0, c_cats, stride - 1)
        affinity = shares[c_cells].sum(axis=2)
        recent = latest[c_cells].max(axis=2)
        recency = np.where(np.isfinite(recent), (now[:, None] - recent) / _DAY_US, np.nan)
        return [affinity, recency, self._content(users, items), self._als(users, items)]

    def _content(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        source: Any = self._require().sources.get("content")
        if source is None:
            return np.full(items.shape, np.nan)
        profiles = source.profiles(users)
        inside = items < len(source.vectors)
        vectors = source.vectors[np.where(inside, items, 0)]
        similarity = np.einsum("ud,ukd->uk", profiles, vectors)
        known = np.linalg.norm(profiles, axis=1) > 0
        return np.where(inside & known[:, None], similarity, np.nan)

    def _als(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        source: Any = self._require().sources.get("als")
        if source is None:
            return np.full(items.shape, np.nan)
        factors = source.user_factors[users]
        inside = items < len(source.item_factors)
        dot = np.einsum("ud,ukd->uk", factors, source.item_factors[np.where(inside, items, 0)])
        known = np.abs(factors).sum(axis=1) > 0
        return np.where(inside & known[:, None], dot, np.nan)

    def _context_features(self, contexts: Sequence[Context], width: int) -> list[np.ndarray]:
        now = np.array([c.now_us if c.clock_us is None else c.clock_us for c in contexts], dtype=np.int64)
        hour = (now // 3_600_000_000) % 24 + (now % 3_600_000_000) / 3.6e9
        weekday = ((now // _DAY_US) + 3) % 7  # 1970-01-01 was a Thursday
        code = {d: i for i, d in enumerate(self._devices)}
        device = np.array([code.get(str(c.device), np.nan) if c.device is not None else np.nan for c in contexts])
        columns = [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24), weekday.astype(float), device]
        for key in self.config.context_keys:
            columns.append(np.array([float(c.values.get(key, np.nan)) for c in contexts]))
        return [np.repeat(np.asarray(v, dtype=np.float64)[:, None], width, axis=1) for v in columns]

    def _require(self) -> CandidateGenerator:
        if self._generator is None:
            raise NotFittedError(type(self).__name__)
        return self._generator


def _numeric(attributes: Sequence[dict[str, Any]], key: str, n: int) -> np.ndarray:
    """One numeric attribute per item; NaN where it is absent or not a number."""
    out = np.full(n, np.nan, np.float32)
    for i, attrs in enumerate(attributes[:n]):
        if _is_number(attrs.get(key)):
            out[i] = attrs[key]
    return out


def _is_number(value: object) -> bool:
    """A JSON number (a bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class _MinuteCache:
    """Item statistics at one minute, each item counted the first time a request of that minute asks for
    it: requests in the same minute (serving's, one after another) share the searches. The minute only moves
    forward; a request of an earlier minute is answered without the cache. Thread-safe."""

    def __init__(self, n_items: int) -> None:
        self._lock = threading.Lock()
        self._at = -1  # the minute (µs) the cached rows belong to
        self._rows = np.zeros((n_items, 4))
        self._filled = np.zeros(n_items, bool)

    def read(
        self, items: np.ndarray, minute_us: int, count: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray | None:
        """``count``'s rows for ``items`` at ``minute_us``, or None for a minute older than the cache's."""
        with self._lock:
            if minute_us < self._at:
                return None
            if minute_us > self._at:
                self._at = minute_us
                self._filled[:] = False
            stale = np.unique(items[~self._filled[items]])
            if len(stale):
                self._rows[stale] = count(stale, np.full(len(stale), minute_us, np.int64))
                self._filled[stale] = True
            return self._rows[items]

    def __getstate__(self) -> dict[str, Any]:
        return {"n_items": len(self._filled)}  # pickled empty: filled again by requests

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["n_items"])


def _padded(matrix: sp.csr_matrix, cap: int) -> np.ndarray:
    """Each row's column indices, left-aligned in ``(rows, min(longest row, cap))`` int32, -1 padded; a row
    longer than ``cap`` keeps its first ``cap``."""
    per = np.diff(matrix.indptr)
    width = max(min(int(per.max()) if len(per) else 0, cap), 1)
    rows = np.repeat(np.arange(matrix.shape[0]), per)
    position = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], per)
    keep = position < width
    out = np.full((matrix.shape[0], width), -1, np.int32)
    out[rows[keep], position[keep]] = matrix.indices[keep]
    return out
