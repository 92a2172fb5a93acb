"""The candidate-source contract, written once.

A source is configured in its constructor (which only stores the config), learns in :meth:`fit`, then
answers batch-first: :meth:`candidates` takes many users at once and returns parallel arrays.

**Users and items are indices.** After ``fit`` a source's users are the snapshot's rows and its items the
snapshot's columns. :meth:`fold_in` adds users the snapshot did not know (appended after its rows) and
:meth:`add_items` adds items upserted after training (appended after its columns), so existing indices
never change. Map external ids with :meth:`user_index` / :meth:`item_index`; ``item_ids`` and
``user_ids`` give them back.

Results have shape ``(len(users), n)``: item indices best first, padded with -1 where a user has fewer
than ``n`` candidates, and scores padded with ``-inf``. Scores are comparable within one source only.
Items in a user's row of ``exclude`` (a CSR matrix, one row per requested user, at most ``n_items``
wide) are never returned. Calling anything but ``fit`` first raises
:class:`~tastemaker.errors.NotFittedError`.

**Fold-in.** ``fold_in(history)`` takes what users did *after* the snapshot (a :class:`History`) and
makes the next ``candidates`` call reflect it without a retrain. It is idempotent per user: a user's state
is always the snapshot's row plus the latest history given for them, so folding the same events twice
does not count them twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastemaker.data.snapshot import Snapshot, SnapshotConfig, as_ids, to_interactions
from tastemaker.errors import DataFormatError, NotFittedError

__all__ = ["CandidateSource", "History", "local_columns", "pad_results", "top_n"]


@dataclass(frozen=True, eq=False)
class History:
    """Interactions of a batch of users after a snapshot, as weights over an item vocabulary.

    ``matrix`` and ``last_us`` (the latest interaction time per pair, µs) have one row per ``user_ids``
    entry and one column per ``item_ids`` entry. ``attributes`` holds each user's attributes (onboarding
    answers such as ``preferred_categories``), empty dicts where none are known.
    """

    user_ids: pd.Index
    item_ids: pd.Index
    matrix: sp.csr_matrix
    last_us: sp.csr_matrix
    attributes: tuple[dict[str, Any], ...] = field(default=())

    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        item_ids: pd.Index,
        *,
        config: SnapshotConfig | None = None,
        users: pd.DataFrame | None = None,
    ) -> History:
        """Weigh ``events`` by ``config`` (the snapshot's, so weights mean the same) over ``item_ids``.

        Users are those with events plus those in ``users`` (a frame with ``user_id`` and optionally
        ``attributes``), so a user known only from onboarding still gets a row. Events on items outside
        ``item_ids`` are dropped: no source could score them.
        """
        config = config or SnapshotConfig()
        pairs = to_interactions(events, config) if len(events) else None
        known = [] if users is None or users.empty else users["user_id"].astype(str).tolist()
        seen = [] if pairs is None else pairs["user_id"].tolist()
        user_ids = pd.Index(list(dict.fromkeys([*seen, *known])), dtype=object)
        shape = (len(user_ids), len(item_ids))
        if pairs is None:
            matrix = sp.csr_matrix(shape, dtype=np.float32)
            last = sp.csr_matrix(shape, dtype=np.float64)
        else:
            cols = item_ids.get_indexer(pairs["item_id"])
            pairs = pairs[cols >= 0]
            rows, cols = user_ids.get_indexer(pairs["user_id"]), cols[cols >= 0]
            matrix = sp.csr_matrix((pairs["weight"].to_numpy(np.float32), (rows, cols)), shape=shape)
            last = sp.csr_matrix((pairs["last_timestamp_us"].to_numpy(np.float64), (rows, cols)), shape=shape)
        attributes: dict[str, dict[str, Any]] = {}
        if users is not None and "attributes" in users:
            for uid, attrs in zip(users["user_id"].astype(str), users["attributes"], strict=True):
                attributes[uid] = attrs if isinstance(attrs, dict) else {}
        return cls(user_ids, item_ids, matrix, last, tuple(attributes.get(u, {}) for u in user_ids))

    def __post_init__(self) -> None:
        if self.matrix.shape != (len(self.user_ids), len(self.item_ids)) or self.last_us.shape != self.matrix.shape:
            raise DataFormatError(
                f"history arrays have shapes {self.matrix.shape} and {self.last_us.shape}; "
                f"expected ({len(self.user_ids)}, {len(self.item_ids)})"
            )
        if self.attributes and len(self.attributes) != len(self.user_ids):
            raise DataFormatError(f"history has {len(self.attributes)} attribute dicts for {len(self.user_ids)} users")


class CandidateSource(ABC):
    """Proposes items for users. See the module docstring for the contract.

    Subclasses implement :meth:`_fit` and :meth:`_candidates`; they may override :meth:`_folded` (called
    with the indices of users whose history changed) and :meth:`_items_added`. The base class keeps the
    id spaces and every user's interactions (``user_items``) and their latest times (``user_last_us``).
    """

    name: ClassVar[str]
    #: False for sources that serve users with no history at all (popular, fresh): the cold-start path
    needs_history: ClassVar[bool] = True
    _snapshot: Snapshot | None = None

    def fit(self, snapshot: Snapshot) -> Self:
        """Learn from ``snapshot``; returns self."""
        self._snapshot = None  # a failed refit leaves the source unfitted, not half-fitted
        self._users = snapshot.user_ids
        self._items = snapshot.item_ids
        self._base_items = snapshot.matrix.tocsr().astype(np.float32)
        self._base_last = _last_matrix(snapshot)
        self._user_items = self._base_items
        self._user_last = self._base_last
        self._attributes: dict[int, dict[str, Any]] = {
            row: dict(attrs) for row, attrs in enumerate(snapshot.user_attributes) if attrs
        }
        self._fit(snapshot)
        self._snapshot = snapshot
        return self

    def candidates(
        self, users: np.ndarray, n: int, *, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` items per user: ``(item_indices, scores)``, each of shape ``(len(users), n)``."""
        _ = self.snapshot
        users = np.asarray(users, dtype=np.int64)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"{type(self).__name__}: user indices must be in [0, {self.n_users})")
        if n < 1 or not len(users):
            return np.full((len(users), max(n, 0)), -1, np.int64), np.full((len(users), max(n, 0)), -np.inf, np.float32)
        return self._candidates(users, n, self._widen(exclude, len(users)))

    def fold_in(self, history: History) -> Self:
        """Make ``history`` (events after the snapshot) count for its users; see the module docstring."""
        snap = self.snapshot
        if not history.item_ids.equals(self._items[: len(history.item_ids)]):
            raise DataFormatError("history columns must follow the source's item vocabulary (item_ids)")
        new = history.user_ids[self._users.get_indexer(history.user_ids) < 0]
        if len(new):
            self._users = self._users.append(pd.Index(new, dtype=object))
            self._user_items = _resize(self._user_items, self.n_users, self.n_items)
            self._user_last = _resize(self._user_last, self.n_users, self.n_items)
        rows = self._users.get_indexer(history.user_ids)
        known = (rows < snap.n_users).astype(np.float32)
        own = np.where(rows < snap.n_users, rows, 0)
        base = sp.diags(known) @ _resize(self._base_items[own], len(rows), self.n_items)
        base_last = sp.diags(known) @ _resize(self._base_last[own], len(rows), self.n_items)
        extra = _resize(history.matrix, len(rows), self.n_items)
        extra_last = _resize(history.last_us, len(rows), self.n_items)
        combined = base.maximum(extra) if snap.config.aggregate == "max" else base + extra
        self._user_items = _replace_rows(self._user_items, rows, combined.tocsr())
        self._user_last = _replace_rows(self._user_last, rows, base_last.maximum(extra_last).tocsr())
        for row, attrs in zip(rows, history.attributes or ({},) * len(rows), strict=True):
            if attrs:
                self._attributes[int(row)] = dict(attrs)
        self._folded(rows)
        return self

    def add_items(self, items: pd.DataFrame) -> np.ndarray:
        """Append catalog items unknown to the source (``item_id`` plus any catalog columns); returns the
        indices of all of ``items``. Items already known keep their index and are not re-read."""
        _ = self.snapshot
        ids = items["item_id"].astype(str)
        fresh = items[(self._items.get_indexer(ids) < 0) & ~ids.duplicated().to_numpy()]
        if len(fresh):
            start = self.n_items
            self._items = self._items.append(pd.Index(fresh["item_id"].astype(str), dtype=object))
            self._user_items = _resize(self._user_items, self.n_users, self.n_items)
            self._user_last = _resize(self._user_last, self.n_users, self.n_items)
            self._items_added(np.arange(start, self.n_items), fresh.reset_index(drop=True))
        return self._items.get_indexer(ids)

    # -- id spaces -------------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The snapshot the source was fitted on."""
        if self._snapshot is None:
            raise NotFittedError(type(self).__name__)
        return self._snapshot

    @property
    def user_ids(self) -> pd.Index:
        _ = self.snapshot
        return self._users

    @property
    def item_ids(self) -> pd.Index:
        _ = self.snapshot
        return self._items

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_ids: object) -> np.ndarray:
        """Indices of ``user_ids`` (snapshot rows, then folded-in users); -1 for unknown users."""
        return self.user_ids.get_indexer(as_ids(user_ids))

    def item_index(self, item_ids: object) -> np.ndarray:
        return self.item_ids.get_indexer(as_ids(item_ids))

    def user_items(self, users: np.ndarray) -> sp.csr_matrix:
        """Interaction weights of ``users`` (snapshot plus folded-in history), ``n_items`` wide."""
        return self._user_items[np.asarray(users)]

    def user_last_us(self, users: np.ndarray) -> sp.csr_matrix:
        """Latest interaction time (µs) per (user, item), same pattern as :meth:`user_items`."""
        return self._user_last[np.asarray(users)]

    def user_attributes(self, user: int) -> dict[str, Any]:
        return self._attributes.get(int(user), {})

    def has_history(self, users: np.ndarray) -> np.ndarray:
        """Whether each user has any interaction (snapshot or folded-in)."""
        return np.diff(self._user_items.indptr)[np.asarray(users)] > 0

    # -- hooks -----------------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, snapshot: Snapshot) -> None: ...

    @abstractmethod
    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """``exclude`` is always a CSR matrix of ``len(users)`` rows and ``n_items`` columns."""

    def _folded(self, users: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Users whose history changed (their rows of ``user_items`` are already updated)."""

    def _items_added(self, items: np.ndarray, frame: pd.DataFrame) -> None:  # noqa: B027 - optional hook
        """Catalog items appended at ``items`` (``frame`` row j describes ``items[j]``)."""

    def _widen(self, exclude: sp.csr_matrix | None, rows: int) -> sp.csr_matrix:
        if exclude is None:
            return sp.csr_matrix((rows, self.n_items), dtype=np.float32)
        if exclude.shape[0] != rows or exclude.shape[1] > self.n_items:
            raise DataFormatError(f"exclude has shape {exclude.shape}; expected ({rows}, ≤ {self.n_items})")
        exclude = _resize(sp.csr_matrix(exclude), rows, self.n_items)
        if exclude.nnz and not exclude.data.all():  # a stored 0 excludes nothing, on every search path
            exclude = exclude.copy()
            exclude.eliminate_zeros()
        return exclude


def pad_results(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (or trim) result arrays to ``n`` columns with -1 / -inf."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if ids.shape[1] >= n:
        return ids[:, :n], scores[:, :n]
    pad = n - ids.shape[1]
    return (
        np.pad(ids, ((0, 0), (0, pad)), constant_values=-1),
        np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf),
    )


def top_n(scores: np.ndarray, n: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best columns of each row of a dense score matrix, best first; ``-inf`` and excluded
    entries are never returned (padded with -1 / -inf). Among the chosen, ties go to the lower index; which
    of several items tied at the cut-off is chosen is up to ``argpartition``."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    k = min(n, scores.shape[1])
    if k == 0:
        return pad_results(np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), np.float32), n)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (len(scores), 1))  # fmt: skip
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    valid = np.isfinite(best)
    return pad_results(np.where(valid, ids, -1), np.where(valid, best, -np.inf), n)


def local_columns(matrix: sp.csr_matrix, position: np.ndarray, width: int) -> sp.csr_matrix:
    """``matrix`` re-indexed to a subset of columns: ``position[item]`` is the item's column in the subset
    (-1 if outside it). Cheaper than column slicing when the subset is a fixed pool and rows are short."""
    matrix = sp.csr_matrix(matrix)
    local = position[np.minimum(matrix.indices, len(position) - 1)] if len(position) else matrix.indices
    inside = (matrix.indices < len(position)) & (local >= 0)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[inside]
    return sp.csr_matrix((matrix.data[inside], (rows, local[inside])), shape=(matrix.shape[0], width))


def _last_matrix(snapshot: Snapshot) -> sp.csr_matrix:
    table = snapshot.interactions
    last = sp.csr_matrix(
        (table["last_timestamp_us"].to_numpy(np.float64), (table["user_idx"], table["item_idx"])),
        shape=snapshot.matrix.shape,
    )
    return _max_duplicates(last)


def _max_duplicates(matrix: sp.csr_matrix) -> sp.csr_matrix:
    coo = matrix.tocoo()
    frame = pd.DataFrame({"r": coo.row, "c": coo.col, "v": coo.data}).groupby(["r", "c"], sort=True)["v"].max()
    rows, cols = frame.index.get_level_values(0), frame.index.get_level_values(1)
    return sp.csr_matrix((frame.to_numpy(), (rows, cols)), shape=matrix.shape)


def _resize(matrix: sp.spmatrix, rows: int, cols: int) -> sp.csr_matrix:
    """A CSR copy of ``matrix`` grown (or cut) to ``rows`` × ``cols``; the input is never modified."""
    matrix = sp.csr_matrix(matrix)
    if matrix.shape == (rows, cols):
        return matrix
    matrix = matrix.copy()
    matrix.resize((rows, cols))
    return matrix


def _replace_rows(matrix: sp.csr_matrix, rows: np.ndarray, values: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` with ``rows`` set to ``values`` (same order), other rows untouched."""
    keep = np.ones(matrix.shape[0], dtype=np.float32)
    keep[rows] = 0
    scatter = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))), shape=(matrix.shape[0], len(rows))
    )
    return (sp.diags(keep) @ matrix + scatter @ values).tocsr()
