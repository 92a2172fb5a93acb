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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastemaker.data.snapshot import Snapshot, SnapshotConfig, pair_arrays, positions, to_interactions
from tastemaker.errors import DataFormatError, NotFittedError

__all__ = [
    "CandidateSource", "History", "Rows", "UserRows", "as_rows", "csr_from_sorted", "local_columns", "member",
    "pad_results", "row_pointers", "sparse_top_n", "take_rows", "top_n",
]  # fmt: skip


@dataclass(frozen=True, eq=False)
class Rows:
    """Some rows of a CSR matrix as plain arrays (``indptr``, ``indices``, ``data``, like scipy's).

    The request path works on these: scipy's row indexing, column slicing and pair lookups each cost about
    0.1 ms a call, which over a few dozen calls per request was most of a request's time. Anything that
    takes ``Rows`` also takes a ``csr_matrix`` (the same three arrays and ``shape``)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row_ids(self) -> np.ndarray:
        """The row of every stored entry."""
        if self.shape[0] == 1:
            return np.zeros(self.nnz, np.int64)
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))

    def csr(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def narrow(self, width: int) -> Rows:
        """Only the columns below ``width`` (the matrix is as wide as ``width`` after)."""
        if self.shape[1] <= width:
            return self
        return self.select(self.indices < width, (self.shape[0], width))

    def nonzero(self) -> Rows:
        """Without stored zeros."""
        return self if self.data.all() else self.select(self.data != 0)

    def select(self, keep: np.ndarray, shape: tuple[int, int] | None = None) -> Rows:
        """Only the stored entries where ``keep`` holds (rows stay where they are)."""
        counts = np.bincount(self.row_ids()[keep], minlength=self.shape[0])
        return Rows(row_pointers(counts), self.indices[keep], self.data[keep], shape or self.shape)

    def lookup(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The stored value at each (``rows[j]``, ``cols[j]``), 0 where nothing is stored. Needs each row's
        indices sorted (sources keep their user matrices so)."""
        keys = _keys(self.row_ids(), self.indices, self.shape[1])
        wanted = _keys(np.asarray(rows), np.asarray(cols), self.shape[1])
        at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        found = (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), bool)
        return np.where(found, self.data[at] if len(keys) else 0, 0)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """For a ``(rows, k)`` array of column ids (negative = padding), whether each is stored in its row."""
        ids = np.asarray(ids)
        if not self.nnz:
            return np.zeros(ids.shape, bool)
        rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)
        valid = (ids >= 0) & (ids < self.shape[1])
        listed = _keys(self.row_ids(), self.indices, self.shape[1])
        return valid & member(_keys(rows, np.where(valid, ids, 0), self.shape[1]), listed)


def take_rows(matrix: sp.csr_matrix | Rows, rows: np.ndarray) -> Rows:
    """``matrix[rows]`` without scipy's per-call cost."""
    rows = np.asarray(rows, dtype=np.int64)
    start, end = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = end - start
    indptr = row_pointers(lengths)
    if len(rows) == 1:
        at: slice | np.ndarray = slice(int(start[0]), int(end[0]))
    else:
        at = np.repeat(start - indptr[:-1], lengths) + np.arange(indptr[-1])
    return Rows(indptr, matrix.indices[at], matrix.data[at], (len(rows), matrix.shape[1]))


def member(values: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """``np.isin(values, listed)`` by binary search: for a request's few hundred listed keys it is several
    times faster than ``isin``, which may build a lookup table as wide as the key range."""
    if not len(listed):
        return np.zeros(np.shape(values), bool)
    listed = np.sort(listed)
    at = np.minimum(np.searchsorted(listed, values), len(listed) - 1)
    return listed[at] == values


def csr_from_sorted(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR matrix from entries already grouped by row (ascending), without scipy's COO conversion."""
    indptr = row_pointers(np.bincount(rows, minlength=shape[0]))
    return sp.csr_matrix((data, np.asarray(cols, np.int32), indptr), shape=shape)


def row_pointers(counts: np.ndarray) -> np.ndarray:
    """A CSR ``indptr`` from the number of entries in each row."""
    indptr = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def _keys(rows: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    return np.asarray(rows, np.int64) * max(width, 1) + np.asarray(cols, np.int64)


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
        attributes: dict[str, dict[str, Any]] = {}
        if users is not None and "attributes" in users:
            for uid, attrs in zip(users["user_id"].astype(str), users["attributes"], strict=True):
                attributes[uid] = attrs if isinstance(attrs, dict) else {}
        known = [] if users is None or users.empty else users["user_id"].astype(str).tolist()
        columns = None if pairs is None else {name: pairs[name].to_numpy() for name in
                                              ("user_id", "item_id", "weight", "last_timestamp_us")}  # fmt: skip
        return cls._of_pairs(columns, item_ids, known, attributes)

    @classmethod
    def of_events(
        cls,
        user_ids: np.ndarray,
        events: Sequence[Any],
        item_ids: pd.Index,
        *,
        config: SnapshotConfig | None = None,
        attributes: Mapping[str, dict[str, Any]] | None = None,
    ) -> History:
        """:meth:`from_events` for the request path: ``events[i]`` (a store's ``UserEvents``: parallel arrays
        of event ids, item ids, types, values and times) are ``user_ids[i]``'s, and no frame is built (folding
        one new event in costs what the arrays cost). Every user gets a row; ``attributes`` by user id."""
        config = config or SnapshotConfig()
        lengths = [len(e) for e in events]
        columns = None
        if sum(lengths):
            pairs = pair_arrays(
                np.repeat(np.asarray(user_ids, dtype=object), lengths),
                np.concatenate([e.item_id for e in events]).astype(object),
                np.concatenate([e.type for e in events]).astype(object),
                np.concatenate([e.value for e in events]).astype(np.float64),
                np.concatenate([e.timestamp_us for e in events]).astype(np.int64),
                config,
            )  # fmt: skip
            columns = {name: pairs[name] for name in ("user_id", "item_id", "weight", "last_timestamp_us")}
        return cls._of_pairs(columns, item_ids, [str(u) for u in user_ids], dict(attributes or {}))

    @classmethod
    def _of_pairs(
        cls,
        pairs: dict[str, np.ndarray] | None,
        item_ids: pd.Index,
        known: list[str],
        attributes: dict[str, dict[str, Any]],
    ) -> History:
        seen = [] if pairs is None else pairs["user_id"].tolist()
        user_ids = pd.Index(list(dict.fromkeys([*seen, *known])), dtype=object)
        shape = (len(user_ids), len(item_ids))
        if pairs is None:
            matrix = sp.csr_matrix(shape, dtype=np.float32)
            last = sp.csr_matrix(shape, dtype=np.float64)
        else:
            cols = positions(item_ids, pairs["item_id"].tolist())  # (a request's few ids: one by one)
            ok = cols >= 0
            users = pairs["user_id"][ok]
            if len(users) <= 256:  # a request's few: a dict (pandas' lookup converts the ids first)
                row_of = {u: row for row, u in enumerate(user_ids)}
                rows = np.array([row_of[u] for u in users.tolist()], np.int64)
            else:
                rows = user_ids.get_indexer(pd.Index(users, dtype=object))
            cols = cols[ok]
            matrix = sp.csr_matrix((pairs["weight"][ok].astype(np.float32), (rows, cols)), shape=shape)
            last = sp.csr_matrix((pairs["last_timestamp_us"][ok].astype(np.float64), (rows, cols)), shape=shape)
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
        self.__dict__.pop("_prefix", None)
        self._users = snapshot.user_ids
        self._items = snapshot.item_ids
        self._base_items = snapshot.matrix.tocsr().astype(np.float32)
        self._base_last = _last_matrix(snapshot)
        self._base_items.sort_indices()
        self._base_last.sort_indices()
        self._user_items = UserRows(self._base_items)
        self._user_last = UserRows(self._base_last)
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
        vocabulary = history.item_ids
        same = vocabulary is self._items or vocabulary is self.__dict__.get("_prefix") or (
            len(vocabulary) <= len(self._items) and vocabulary.equals(self._items[: len(vocabulary)])
        )
        if not same:
            raise DataFormatError("history columns must follow the source's item vocabulary (item_ids)")
        self._prefix = vocabulary  # (items only ever join at the end: a prefix once is a prefix for good)
        new = history.user_ids[self._users.get_indexer(history.user_ids) < 0]
        if len(new):
            self._users = self._users.append(pd.Index(new, dtype=object))
            self._user_items = self._user_items.grown(self.n_users, self.n_items)
            self._user_last = self._user_last.grown(self.n_users, self.n_items)
        rows = self._users.get_indexer(history.user_ids)
        # each user's snapshot row (none for a user the snapshot did not know) with their later history: a few
        # rows, combined with array operations (scipy's per-call cost, times the engine's sources, was most of
        # a fold-in's)
        known = rows < snap.n_users
        own = np.where(known, rows, 0)
        base = take_rows(self._base_items, own)
        base_last = take_rows(self._base_last, own)
        if not known.all():
            base, base_last = base.select(known[base.row_ids()]), base_last.select(known[base_last.row_ids()])
        how = np.maximum if snap.config.aggregate == "max" else np.add
        combined = _combined(base, as_rows(history.matrix), how, self.n_items)
        latest = _combined(base_last, as_rows(history.last_us), np.maximum, self.n_items)
        self._user_items = self._user_items.replaced(rows, combined)
        self._user_last = self._user_last.replaced(rows, latest)
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
            self._user_items = self._user_items.grown(self.n_users, self.n_items)
            self._user_last = self._user_last.grown(self.n_users, self.n_items)
            self._items_added(np.arange(start, self.n_items), fresh.reset_index(drop=True))
        return self._items.get_indexer(ids)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in ("_user_items", "_user_last", "_shares"):  # artifacts of format 3 hold plain CSR matrices
            if isinstance(self.__dict__.get(name), sp.spmatrix):
                self.__dict__[name] = UserRows(sp.csr_matrix(self.__dict__[name]))

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
        return positions(self.user_ids, user_ids)

    def item_index(self, item_ids: object) -> np.ndarray:
        return positions(self.item_ids, item_ids)

    def user_items(self, users: np.ndarray) -> sp.csr_matrix:
        """Interaction weights of ``users`` (snapshot plus folded-in history), ``n_items`` wide (a copy)."""
        return self.user_rows(users).csr().copy()

    def user_last_us(self, users: np.ndarray) -> sp.csr_matrix:
        """Latest interaction time (µs) per (user, item), same pattern as :meth:`user_items`."""
        return self._user_last.take(np.atleast_1d(users)).csr().copy()

    def user_rows(self, users: np.ndarray) -> Rows:
        """:meth:`user_items` as :class:`Rows` (the request path's form; indices sorted per row). For one user
        the arrays are views of the source's own: read them, never write to them."""
        return self._user_items.take(np.atleast_1d(users))

    def user_last_rows(self, users: np.ndarray) -> Rows:
        """:meth:`user_last_us` as :class:`Rows`."""
        return self._user_last.take(np.atleast_1d(users))

    def user_last_at(self, users: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Latest interaction time (µs) of ``users[rows[j]]`` with ``items[j]``; 0 where none."""
        return self._user_last.take(np.atleast_1d(users)).lookup(rows, items)

    def user_attributes(self, user: int) -> dict[str, Any]:
        return self._attributes.get(int(user), {})

    def has_history(self, users: np.ndarray) -> np.ndarray:
        """Whether each user has any interaction (snapshot or folded-in)."""
        return self._user_items.lengths(np.asarray(users, dtype=np.int64)) > 0

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
        if type(exclude) is sp.csr_matrix and exclude.shape[1] == self.n_items and exclude.data.all():
            return exclude  # the request path's case: nothing to convert (each conversion costs ~0.1 ms)
        exclude = _resize(sp.csr_matrix(exclude), rows, self.n_items)
        if exclude.nnz and not exclude.data.all():  # a stored 0 excludes nothing, on every search path
            exclude = exclude.copy()
            exclude.eliminate_zeros()
        return exclude


class UserRows:
    """Every user's row of a matrix (interaction weights, or latest times) as fold-ins change it: rows a fold-in
    replaced since the last merge are kept beside the CSR matrix (``changed``, each row's sorted indices and
    values) and merged into it only once there are many of them, so a fold-in costs its own rows, not a copy
    of every user's (on 1M interactions that copy was ~1.2 ms, for each of a model's eight sources and both of
    their matrices, at every fold-in). Never changed in place: a change gives a new ``UserRows`` sharing the
    unchanged arrays, so a reader holding the previous one sees a whole matrix and memos keyed on it notice.
    Rows past the matrix's last (users added since) are empty unless changed."""

    __slots__ = ("changed", "matrix", "shape")

    def __init__(
        self,
        matrix: sp.csr_matrix,
        changed: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
        shape: tuple[int, int] | None = None,
    ) -> None:
        if not matrix.has_sorted_indices:
            matrix = matrix.sorted_indices()
        self.matrix = matrix
        self.changed = changed if changed is not None else {}
        self.shape = shape or matrix.shape

    def take(self, rows: np.ndarray) -> Rows:
        """The rows ``rows``, as :func:`take_rows` gives them (each row's indices sorted)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise IndexError(f"user rows must be in [0, {self.shape[0]})")
        inside = len(rows) == 0 or rows.max() < self.matrix.shape[0]
        if inside and (not self.changed or not any(r in self.changed for r in rows.tolist())):
            found = take_rows(self.matrix, rows)
            return found if found.shape[1] == self.shape[1] else Rows(found.indptr, found.indices, found.data,
                                                                          (len(rows), self.shape[1]))  # fmt: skip
        indptr, indices, data = self.matrix.indptr, self.matrix.indices, self.matrix.data
        empty = (indices[:0], data[:0])
        parts = []
        for row in rows.tolist():
            if row in self.changed:
                parts.append(self.changed[row])
            elif row < self.matrix.shape[0]:
                parts.append((indices[indptr[row] : indptr[row + 1]], data[indptr[row] : indptr[row + 1]]))
            else:
                parts.append(empty)
        lengths = np.array([len(i) for i, _ in parts], np.int64)
        return Rows(row_pointers(lengths), np.concatenate([i for i, _ in parts]), np.concatenate([d for _, d in parts]),
                    (len(rows), self.shape[1]))  # fmt: skip

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """How many entries each of ``rows`` stores."""
        rows = np.asarray(rows, dtype=np.int64)
        indptr = self.matrix.indptr
        inside = rows < self.matrix.shape[0]
        at = np.where(inside, rows, 0)
        out = np.where(inside, indptr[at + 1] - indptr[at], 0)
        if self.changed:
            for j, row in enumerate(rows.tolist()):
                if row in self.changed:
                    out[j] = len(self.changed[row][0])
        return out

    def grown(self, n_rows: int, n_cols: int) -> UserRows:
        """As wide and as tall as given (never narrower or shorter): new rows and columns are empty."""
        if (n_rows, n_cols) == self.shape:
            return self
        if n_rows < self.shape[0] or n_cols < self.shape[1]:
            raise DataFormatError(f"user rows cannot shrink from {self.shape} to {(n_rows, n_cols)}")
        return UserRows(self.matrix, self.changed, (n_rows, n_cols))

    def replaced(self, rows: np.ndarray, values: sp.csr_matrix | Rows) -> UserRows:
        """``rows`` (distinct, inside the shape) set to the rows of ``values``, in that order (``Rows`` must have
        each row's indices sorted)."""
        if not isinstance(values, Rows):
            values = sp.csr_matrix(values, copy=True)
            values.sort_indices()
        changed = dict(self.changed)
        for j, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            lo, hi = values.indptr[j], values.indptr[j + 1]
            changed[row] = (values.indices[lo:hi].astype(self.matrix.indices.dtype, copy=False),
                            values.data[lo:hi].astype(self.matrix.dtype, copy=False))  # fmt: skip
        if len(changed) <= max(_MERGE_AT, self.shape[0] // 64):
            return UserRows(self.matrix, changed, self.shape)
        return UserRows(self.merged(changed), None, self.shape)

    def merged(self, changed: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> sp.csr_matrix:
        """One CSR matrix of every row (``changed``: the rows to merge; by default this one's)."""
        changed = self.changed if changed is None else changed
        matrix = _resize(self.matrix, *self.shape) if self.matrix.shape != self.shape else self.matrix
        if not changed:
            return matrix
        rows = np.array(sorted(changed), np.int64)
        lengths = np.array([len(changed[r][0]) for r in rows.tolist()], np.int64)
        indices = np.concatenate([changed[r][0] for r in rows.tolist()])
        data = np.concatenate([changed[r][1] for r in rows.tolist()])
        values = sp.csr_matrix((data, indices, row_pointers(lengths)), shape=(len(rows), self.shape[1]))
        values.has_sorted_indices = True
        return _replace_rows(matrix, rows, values)


def _combined(a: Rows, b: Rows, how: np.ufunc, width: int) -> Rows:
    """``a`` and ``b`` (as many rows) entry by entry: ``how`` (``np.add``, ``np.maximum``) where both store one,
    the one stored elsewhere; no stored zeros; each row's indices sorted; ``width`` columns."""
    rows = np.concatenate([a.row_ids(), b.row_ids()])
    cols = np.concatenate([np.asarray(a.indices, np.int64), np.asarray(b.indices, np.int64)])
    values = np.concatenate([a.data, b.data])
    key = rows * max(width, 1) + cols
    order = np.argsort(key, kind="stable")  # ``a``'s entry before ``b``'s: sums add in scipy's order
    key, values = key[order], values[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    merged = how.reduceat(values, starts) if len(starts) else values
    key = key[starts]
    keep = merged != 0
    key, merged = key[keep], merged[keep]
    counts = np.bincount(key // max(width, 1), minlength=a.shape[0])
    return Rows(row_pointers(counts), key % max(width, 1), merged, (a.shape[0], width))


#: changed rows kept beside a user matrix before they are merged into it (or a 64th of its rows, if more)
_MERGE_AT = 256


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


def top_n(scores: np.ndarray, n: int, exclude: sp.csr_matrix | Rows | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best columns of each row of a dense score matrix, best first; ``-inf`` and excluded
    entries (stored non-zeros of ``exclude``) are never returned (padded with -1 / -inf). Among the chosen,
    ties go to the lower index; which of several items tied at the cut-off is chosen is up to
    ``argpartition``."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        banned = as_rows(exclude).nonzero()
        inside = banned.indices < scores.shape[1]
        scores[banned.row_ids()[inside], banned.indices[inside]] = -np.inf
    k = min(n, scores.shape[1])
    if k == 0:
        return pad_results(np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0), np.float32), n)
    if len(scores) == 1:  # one request: the same steps on a 1-d row (the axis=1 forms cost more per call)
        row = scores[0]
        top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        top = top[np.lexsort((top, -row[top]))]
        top = top[np.isfinite(row[top])]
        ids = np.full((1, n), -1, np.int64)
        best = np.full((1, n), -np.inf, np.float32)
        ids[0, : len(top)], best[0, : len(top)] = top, row[top]
        return ids, best
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (len(scores), 1))  # fmt: skip
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    valid = np.isfinite(best)
    return pad_results(np.where(valid, ids, -1), np.where(valid, best, -np.inf), n)


def sparse_top_n(
    scores: sp.csr_matrix | Rows, n: int, exclude: sp.csr_matrix | Rows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_n` over the stored entries of a sparse score matrix (unstored items are never returned):
    the cost follows the entries, not the catalog. Ties go to the lower index."""
    scores = as_rows(scores)
    rows, cols, values = scores.row_ids(), np.asarray(scores.indices, np.int64), np.asarray(scores.data, np.float32)
    keep = np.isfinite(values)
    if exclude is not None and exclude.nnz:
        banned = as_rows(exclude).nonzero().narrow(scores.shape[1])  # wider columns would alias other rows' keys
        keep &= ~member(_keys(rows, cols, scores.shape[1]), _keys(banned.row_ids(), banned.indices, scores.shape[1]))
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(scores.shape[0]))
    rank = np.arange(len(rows)) - starts[rows]
    top = rank < n
    ids = np.full((scores.shape[0], n), -1, np.int64)
    best = np.full((scores.shape[0], n), -np.inf, np.float32)
    ids[rows[top], rank[top]] = cols[top]
    best[rows[top], rank[top]] = values[top]
    return ids, best


def local_columns(matrix: sp.csr_matrix | Rows, position: np.ndarray, width: int) -> Rows:
    """``matrix`` re-indexed to a subset of columns: ``position[item]`` is the item's column in the subset
    (-1 if outside it). Cheaper than column slicing when the subset is a fixed pool and rows are short.
    The result's rows are not sorted by column (``top_n`` does not need them to be)."""
    matrix = as_rows(matrix)
    local = position[np.minimum(matrix.indices, len(position) - 1)] if len(position) else matrix.indices
    inside = (matrix.indices < len(position)) & (local >= 0)
    counts = np.bincount(matrix.row_ids()[inside], minlength=matrix.shape[0])
    return Rows(row_pointers(counts), local[inside], matrix.data[inside], (matrix.shape[0], width))


def as_rows(matrix: sp.csr_matrix | Rows) -> Rows:
    if isinstance(matrix, Rows):
        return matrix
    if not isinstance(matrix, sp.csr_matrix):
        matrix = sp.csr_matrix(matrix)
    return Rows(matrix.indptr, matrix.indices, matrix.data, matrix.shape)


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
    """``matrix`` with ``rows`` (distinct) set to ``values`` (same order), other rows untouched: a new CSR
    assembled from slices of the two (a fold-in's cost is then a copy of the arrays, not sparse algebra)."""
    if type(matrix) is not sp.csr_matrix:  # (re-wrapping a csr_matrix would forget its known sortedness)
        matrix = sp.csr_matrix(matrix)
    values = sp.csr_matrix(values, copy=True)
    values.sort_indices()  # the few new rows: sorted here, the result keeps the matrix's own sortedness
    rows = np.asarray(rows, np.int64)
    if len(rows) > 1 and (np.diff(rows) < 0).any():
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
    new_lengths = np.diff(matrix.indptr).astype(np.int64)
    new_lengths[rows] = np.diff(values.indptr)
    indptr = np.zeros(matrix.shape[0] + 1, np.int64)
    np.cumsum(new_lengths, out=indptr[1:])
    # the old entries between replaced rows, each replaced row's new entries: slices, joined in one copy
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    cuts = np.r_[0, ends], np.r_[starts, matrix.indptr[-1]]
    dtype = np.result_type(matrix.dtype, values.dtype)
    index_parts, data_parts = [], []
    for n, (lo, hi) in enumerate(zip(*cuts, strict=True)):
        index_parts.append(matrix.indices[lo:hi])
        data_parts.append(matrix.data[lo:hi].astype(dtype, copy=False))
        if n < len(rows):
            index_parts.append(values.indices[values.indptr[n] : values.indptr[n + 1]])
            data_parts.append(values.data[values.indptr[n] : values.indptr[n + 1]].astype(dtype, copy=False))
    indices = np.concatenate(index_parts) if index_parts else np.zeros(0, np.int64)
    data = np.concatenate(data_parts) if data_parts else np.zeros(0, dtype)
    index_type = np.int32 if max(indptr[-1], matrix.shape[1]) < 2**31 else np.int64
    out = sp.csr_matrix(
        (data, indices.astype(index_type, copy=False), indptr.astype(index_type, copy=False)), shape=matrix.shape
    )
    out.has_sorted_indices = matrix.has_sorted_indices  # (a full sort_indices would cost O(nnz log) per call)
    return out
