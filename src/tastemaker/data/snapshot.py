"""Snapshots: the store (or a dataset) as of a cutoff, in the arrays models train on.

A snapshot holds id vocabularies, a ``scipy.sparse.csr_matrix`` of user×item weights, item metadata
arrays (categories as a sparse item×category matrix, text, created_at, provider, available) and
per-user last-activity times. Only events strictly before the cutoff are read. Item metadata is the
catalog's current state, except that items created after the cutoff are left out.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, model_validator

from tastemaker.config import ConfigModel
from tastemaker.data.dataset import Dataset
from tastemaker.errors import DataFormatError
from tastemaker.store.base import EVENT_COLUMNS, Store

__all__ = ["EventWeight", "Snapshot", "SnapshotConfig", "as_ids", "to_interactions"]

UNKNOWN_TIME = -1  # created_at / last activity when nothing is known; sorts as "oldest"


class EventWeight(ConfigModel):
    """How one event of a type counts: ``weight``, or ``strong_weight`` when its value is at least
    ``strong_value``; events whose value is below ``min_value`` are ignored."""

    weight: float = Field(1.0, gt=0)
    min_value: float | None = None
    strong_value: float | None = None
    strong_weight: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> EventWeight:
        if (self.strong_value is None) != (self.strong_weight is None):
            raise ValueError("strong_value and strong_weight go together")
        return self


class SnapshotConfig(ConfigModel):
    """Which event types count towards the user×item matrix, and how. Types not listed are ignored."""

    event_weights: dict[str, EventWeight] = Field(
        default_factory=lambda: {
            "view": EventWeight(weight=1.0),
            "click": EventWeight(weight=2.0),
            "play": EventWeight(weight=2.0),
            "complete": EventWeight(weight=4.0),
            "like": EventWeight(weight=4.0),
            "purchase": EventWeight(weight=4.0),
            "rating": EventWeight(weight=1.0),
        }
    )
    aggregate: Literal["sum", "max"] = "sum"
    #: the event type whose value is a pair's ``rating`` (what ``--relevance-threshold`` compares)
    rating_type: str | None = "rating"


def to_interactions(events: pd.DataFrame, config: SnapshotConfig) -> pd.DataFrame:
    """One row per (user, item) pair with counted events, in the input order of the pair's first row
    (so a split that shuffles within groups sees the rows in file order, as the published protocols do).

    Columns: user_id, item_id (as strings), weight (aggregated), rating (value of the pair's latest event
    of ``config.rating_type``, NaN if none), timestamp_us (first counted event), last_timestamp_us, n_events;
    and ``context`` (the first non-empty event context of the pair, a dict) when any event has one.
    """
    # columns read once as arrays (frame operations cost ~0.1 ms each, the cost of folding in a few events)
    counted = events["type"].isin(list(config.event_weights)).to_numpy()
    user_col = events["user_id"][counted].astype(str)
    item_col = events["item_id"][counted].astype(str)
    out = pair_arrays(
        user_col.to_numpy(object), item_col.to_numpy(object), events["type"][counted].to_numpy(),
        events["value"][counted].to_numpy(dtype=float),  # (only counted rows converted, as before)
        events["timestamp_us"][counted].to_numpy(np.int64), config,
        contexts=events["context"].to_numpy(object)[counted] if "context" in events else None,
        present=user_col.notna().to_numpy() & item_col.notna().to_numpy(),  # (a groupby drops missing keys)
    )  # fmt: skip
    out["user_id"] = pd.array(out["user_id"], dtype=user_col.dtype)
    out["item_id"] = pd.array(out["item_id"], dtype=item_col.dtype)
    return pd.DataFrame(out)


def pair_arrays(
    users: np.ndarray,
    items: np.ndarray,
    types: np.ndarray,
    value: np.ndarray,
    time: np.ndarray,
    config: SnapshotConfig,
    *,
    contexts: np.ndarray | None = None,
    present: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`to_interactions` on parallel arrays of events (ids as object arrays of strings, types, values
    with NaN where none, µs times, optional contexts; ``present``: rows whose ids exist), without a frame:
    the columns as arrays, ``user_id`` and ``item_id`` object arrays. Events of types ``config`` does not
    weigh are dropped (no rule keeps them)."""
    weight = np.zeros(len(value))
    keep = np.zeros(len(value), dtype=bool)
    for name, rule in config.event_weights.items():
        mask = types == name
        ok = mask.copy()
        if rule.min_value is not None:
            ok &= ~(value < rule.min_value)  # NaN values pass: nothing to compare
        w = np.full(len(value), rule.weight)
        if rule.strong_value is not None and rule.strong_weight is not None:
            w = np.where(value >= rule.strong_value, rule.strong_weight, rule.weight)
        weight[ok] = w[ok]
        keep |= ok
    rated = np.where(types == config.rating_type, value, np.nan)
    # one group per (user, item) pair, numbered in the order of its first row; aggregated with array operations
    # (a pandas groupby costs ~15 ms a call however few the events: the cost of folding one new event in)
    # a context column whenever a counted event has a context (where and how the pair began: device, keys)
    with_context = contexts is not None and bool(pd.notna(contexts[keep]).any())
    if present is not None:
        keep &= present
    users, items = users[keep], items[keep]
    time = time[keep]
    weight, rated = weight[keep], rated[keep]
    user_code, user_ids = pd.factorize(users)
    item_code, item_ids = pd.factorize(items)
    group, pairs = pd.factorize(user_code.astype(np.int64) * max(len(item_ids), 1) + item_code)
    n = len(pairs)
    # each group's rows in time order (ties: input order), so "first" and "last" mean earliest and latest
    order = np.lexsort((np.arange(len(group)), time, group))
    starts = np.searchsorted(group[order], np.arange(n))
    ends = np.r_[starts[1:], len(order)]
    reduce = np.add if config.aggregate == "sum" else np.maximum
    total = reduce.reduceat(weight[order], starts) if n else np.zeros(0)
    sorted_time = time[order]
    out = {
        "user_id": np.asarray(user_ids, dtype=object)[user_code[order[starts]]] if n else np.zeros(0, object),
        "item_id": np.asarray(item_ids, dtype=object)[item_code[order[starts]]] if n else np.zeros(0, object),
        "weight": total.astype(np.float64),
        "rating": _last_present(rated[order], group[order], n),
        "timestamp_us": sorted_time[starts] if n else np.zeros(0, np.int64),
        "last_timestamp_us": sorted_time[ends - 1] if n else np.zeros(0, np.int64),
        "n_events": (ends - starts).astype(np.int64),
    }
    if with_context:
        context = contexts[keep][order]  # type: ignore[index]
        shown = np.array([c is not None and c == c and bool(c) and c != "{}" for c in context.tolist()], bool)
        first = np.full(n, -1, np.int64)
        at = np.flatnonzero(shown)
        in_group = group[order][at]
        earliest = np.r_[True, in_group[1:] != in_group[:-1]] if len(at) else np.zeros(0, bool)
        first[in_group[earliest]] = at[earliest]
        out["context"] = np.array([context[i] if i >= 0 else None for i in first.tolist()], dtype=object)
    return out


def _last_present(values: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """Per group (``group`` sorted, rows in time order), its latest value that is not NaN; NaN if none."""
    out = np.full(n, np.nan)
    present = np.flatnonzero(~np.isnan(values))
    if len(present):
        in_group = group[present]
        latest = np.r_[in_group[1:] != in_group[:-1], True]
        out[in_group[latest]] = values[present[latest]]
    return out


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Training arrays as of ``cutoff_us``. Rows of ``matrix`` follow ``user_ids``, columns ``item_ids``."""

    cutoff_us: int | None
    user_ids: pd.Index
    item_ids: pd.Index
    matrix: sp.csr_matrix
    #: user_idx, item_idx, weight, rating, timestamp_us, last_timestamp_us (and ``context`` when events had one)
    interactions: pd.DataFrame
    categories: pd.Index
    item_categories: sp.csr_matrix  # n_items × n_categories, 1 where the item has the category
    item_title: np.ndarray
    item_text: np.ndarray
    item_provider: np.ndarray
    item_created_at_us: np.ndarray
    item_available: np.ndarray
    user_last_active_us: np.ndarray
    config: SnapshotConfig
    #: each user's attributes (e.g. onboarding ``preferred_categories``), aligned with ``user_ids``
    user_attributes: tuple[dict[str, Any], ...] = ()
    #: each item's declared attributes (e.g. ``duration``), aligned with ``item_ids``
    item_attributes: tuple[dict[str, Any], ...] = ()

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def end_us(self) -> int:
        """The snapshot's "now": its cutoff, or just after its latest interaction when it has none."""
        if self.cutoff_us is not None:
            return int(self.cutoff_us)
        return int(self.interactions["last_timestamp_us"].to_numpy().max(initial=-1)) + 1

    def user_index(self, user_ids: object) -> np.ndarray:
        """Row indices of ``user_ids``; -1 for users the snapshot does not know."""
        return positions(self.user_ids, user_ids)

    def item_index(self, item_ids: object) -> np.ndarray:
        """Column indices of ``item_ids``; -1 for items the snapshot does not know."""
        return positions(self.item_ids, item_ids)

    def restricted(
        self, keep: np.ndarray, *, cutoff_us: int | None = None, user_cut_us: np.ndarray | None = None
    ) -> Snapshot:
        """The same users, items and metadata with only the interactions where ``keep`` holds: an inner
        training split with unchanged indices. Creation times that were inferred from a first interaction
        are inferred again from what is kept, so an item first seen later does not look new.

        ``user_cut_us`` (one instant per user) caps what a kept pair says about time: a pair the user came
        back to at or after their cut keeps only its first time. Its weight still sums every event of the
        pair (a pair does not remember when each event came): build from events when repeats matter."""
        keep = np.asarray(keep, dtype=bool)
        table = self.interactions[keep].reset_index(drop=True)
        if user_cut_us is not None:
            cut = np.asarray(user_cut_us, dtype=np.int64)[table["user_idx"].to_numpy()]
            late = table["last_timestamp_us"].to_numpy(np.int64) >= cut
            table.loc[late, "last_timestamp_us"] = table.loc[late, "timestamp_us"]
        matrix = sp.csr_matrix(
            (table["weight"].to_numpy(np.float32), (table["user_idx"], table["item_idx"])), shape=self.matrix.shape
        )
        matrix.sum_duplicates()
        last = np.full(self.n_users, UNKNOWN_TIME, np.int64)
        np.maximum.at(last, table["user_idx"].to_numpy(), table["last_timestamp_us"].to_numpy(np.int64))
        first_all = _first_seen(self.interactions, self.n_items)
        inferred = (first_all != UNKNOWN_TIME) & (self.item_created_at_us == first_all)
        created = np.where(inferred, _first_seen(table, self.n_items), self.item_created_at_us)
        available = self.item_available
        if cutoff_us is not None:  # an item the catalog says was created at or after the new end does not exist yet
            available = available & ~(~inferred & (created >= cutoff_us))
        return dataclasses.replace(
            self,
            cutoff_us=self.cutoff_us if cutoff_us is None else cutoff_us,
            matrix=matrix,
            interactions=table,
            user_last_active_us=last,
            item_created_at_us=created.astype(np.int64),
            item_available=available,
        )

    @classmethod
    def from_store(
        cls, store: Store, *, cutoff_us: int | None = None, config: SnapshotConfig | None = None
    ) -> Snapshot:
        """Snapshot of ``store`` as of ``cutoff_us`` (default: the store clock's now)."""
        cutoff = store.clock.now_us() if cutoff_us is None else cutoff_us
        events = store.events_frame(until_us=cutoff, columns=(*EVENT_COLUMNS, "context"))
        return cls.from_frames(events, store.items_frame(), store.users_frame(), cutoff_us=cutoff, config=config)

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, *, cutoff_us: int | None = None, config: SnapshotConfig | None = None
    ) -> Snapshot:
        return cls.from_frames(dataset.events, dataset.items, dataset.users, cutoff_us=cutoff_us, config=config)

    @classmethod
    def from_frames(
        cls,
        events: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        *,
        cutoff_us: int | None = None,
        config: SnapshotConfig | None = None,
    ) -> Snapshot:
        """Snapshot of raw events (any types; weighted by ``config``) before ``cutoff_us``."""
        config = config or SnapshotConfig()
        if cutoff_us is not None:
            events = events[events["timestamp_us"] < cutoff_us]
        last_active = events.groupby("user_id", sort=False)["timestamp_us"].max()
        return cls.from_interactions(
            to_interactions(events, config),
            items,
            users,
            cutoff_us=cutoff_us,
            config=config,
            last_active=last_active,
        )

    @classmethod
    def from_interactions(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        *,
        cutoff_us: int | None = None,
        config: SnapshotConfig | None = None,
        last_active: pd.Series | None = None,
    ) -> Snapshot:
        """Snapshot of per-pair interactions (see :func:`to_interactions`)."""
        config = config or SnapshotConfig()
        items = _catalog(items, cutoff_us)
        user_ids = pd.Index(
            np.union1d(_ids(users, "user_id"), interactions["user_id"].astype(str).unique()), dtype=object
        )
        item_ids = pd.Index(np.union1d(items["item_id"].astype(str), interactions["item_id"].astype(str).unique()),
                            dtype=object)  # fmt: skip
        rows = user_ids.get_indexer(interactions["user_id"].astype(str))
        cols = item_ids.get_indexer(interactions["item_id"].astype(str))
        weight = interactions["weight"].to_numpy(dtype=np.float32)
        matrix = sp.csr_matrix((weight, (rows, cols)), shape=(len(user_ids), len(item_ids)), dtype=np.float32)
        matrix.sum_duplicates()
        table = pd.DataFrame({
            "user_idx": rows.astype(np.int32), "item_idx": cols.astype(np.int32),
            "weight": weight, "rating": interactions["rating"].to_numpy(dtype=float),
            "timestamp_us": interactions["timestamp_us"].to_numpy(dtype=np.int64),
            "last_timestamp_us": interactions["last_timestamp_us"].to_numpy(dtype=np.int64),
        })  # fmt: skip
        if "context" in interactions:
            table["context"] = _contexts(interactions["context"].to_numpy(dtype=object))
        if last_active is None:
            last_active = interactions.groupby("user_id", sort=False)["last_timestamp_us"].max()
        return cls(
            cutoff_us=cutoff_us,
            user_ids=user_ids,
            item_ids=item_ids,
            matrix=matrix,
            interactions=table,
            config=config,
            user_last_active_us=_aligned(last_active, user_ids, UNKNOWN_TIME).astype(np.int64),
            user_attributes=_attributes(users, "user_id", user_ids),
            **_item_arrays(items, item_ids, table),
        )


def positions(index: pd.Index, ids: object) -> np.ndarray:
    """Where each of ``ids`` is in ``index`` (unique string ids), -1 where it is not. A few ids (a request's)
    are looked up one by one: pandas' vectorised lookup costs tens of µs a call however few they are."""
    if isinstance(ids, list | tuple) and len(ids) <= _FEW:
        keys = [str(i) for i in ids]
        return np.array([index.get_loc(k) if k in index else -1 for k in keys], dtype=np.int64)
    return index.get_indexer(as_ids(ids))


_FEW = 16


def as_ids(ids: object) -> pd.Index:
    """External ids as the snapshot keeps them: strings (``7`` and ``"7"`` are the same user)."""
    return pd.Index([str(i) for i in np.atleast_1d(np.asarray(ids, dtype=object))], dtype=object)


def _catalog(items: pd.DataFrame | None, cutoff_us: int | None) -> pd.DataFrame:
    if items is None or items.empty:
        return pd.DataFrame({"item_id": pd.Series(dtype=object)})
    items = items.assign(item_id=items["item_id"].astype(str))
    repeated = items["item_id"][items["item_id"].duplicated()].unique()
    if len(repeated):
        raise DataFormatError(f"the catalog lists {len(repeated)} item ids more than once, e.g. {list(repeated[:3])}")
    if cutoff_us is not None and "created_at_us" in items:
        created = pd.to_numeric(items["created_at_us"], errors="coerce")
        items = items[~(created >= cutoff_us)]
    return items


def _item_arrays(items: pd.DataFrame, item_ids: pd.Index, table: pd.DataFrame) -> dict[str, object]:
    meta = items.set_index("item_id").reindex(item_ids)

    def column(name: str, default: object) -> np.ndarray:
        if name not in meta:
            return np.full(len(item_ids), default, dtype=object)
        return meta[name].astype(object).where(meta[name].notna(), default).to_numpy()

    cats = [c if isinstance(c, list | tuple | np.ndarray) else [] for c in column("categories", None)]
    vocab = pd.Index(sorted({c for cs in cats for c in cs}), dtype=object)
    indptr = np.cumsum([0, *map(len, cats)])
    indices = vocab.get_indexer([c for cs in cats for c in cs]) if len(vocab) else np.zeros(0, np.int64)
    item_categories = sp.csr_matrix(
        (np.ones(len(indices), np.float32), indices, indptr), shape=(len(item_ids), len(vocab))
    )
    first_seen = table.groupby("item_idx")["timestamp_us"].min()
    created = pd.to_numeric(pd.Series(column("created_at_us", np.nan)), errors="coerce").to_numpy()
    fallback = np.full(len(item_ids), UNKNOWN_TIME, dtype=np.float64)
    fallback[first_seen.index.to_numpy()] = first_seen.to_numpy()
    created = np.where(np.isnan(created), fallback, created).astype(np.int64)
    return {
        "categories": vocab,
        "item_categories": item_categories,
        "item_title": column("title", ""),
        "item_text": column("text", ""),
        "item_provider": column("provider", ""),
        "item_created_at_us": created,
        "item_available": column("available", True).astype(bool),
        "item_attributes": _attributes(items, "item_id", item_ids),
    }


def _first_seen(table: pd.DataFrame, n_items: int) -> np.ndarray:
    first = np.full(n_items, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, table["item_idx"].to_numpy(), table["timestamp_us"].to_numpy(np.int64))
    return np.where(first == np.iinfo(np.int64).max, UNKNOWN_TIME, first)


def _attributes(frame: pd.DataFrame | None, key: str, ids: pd.Index) -> tuple[dict[str, Any], ...]:
    if frame is None or frame.empty or "attributes" not in frame:
        return ({},) * len(ids)
    found = dict(zip(frame[key].astype(str), frame["attributes"], strict=True))
    return tuple(a if isinstance(a, dict) else {} for a in (found.get(i) for i in ids))


def _contexts(values: np.ndarray) -> np.ndarray:
    """Event contexts as dicts (a store may hand back JSON text); None where there is none."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        out[i] = value if isinstance(value, dict) and value else None
    return out


def _ids(frame: pd.DataFrame | None, column: str) -> np.ndarray:
    if frame is None or frame.empty:
        return np.array([], dtype=object)
    return frame[column].astype(str).unique()


def _aligned(series: pd.Series, index: pd.Index, default: int) -> np.ndarray:
    series = series.copy()
    series.index = series.index.astype(str)
    return series.reindex(index).fillna(default).to_numpy()
