"""The model a server serves: the registry's current artifact, loaded, with what serving adds to it
(events folded in since training, the exposure log the re-rankers read).

Hot-swap: :meth:`ModelSlot.sync` loads a newly promoted version beside the served one and then replaces
one reference; a request takes that reference once at its start, so requests in flight finish on the
model they began with. An artifact that cannot be loaded (missing, corrupt, incompatible) is not
served: the slot is then empty, the server answers with popularity, and ``error`` says why.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tastemaker.models.registry import Registry, load_engine
from tastemaker.ranking.engine import Engine
from tastemaker.reranking import FeedbackLog
from tastemaker.serving.feedback import ExposureLog

__all__ = ["Loaded", "ModelSlot"]

_log = logging.getLogger(__name__)


@dataclass(eq=False)
class Loaded:
    """One loaded artifact and its serving state. ``lock`` guards the engine: folding events in changes
    the sources' user rows, which a concurrent request must not read half-way."""

    version: str
    engine: Engine
    manifest: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: per user: (events since training, last event id) when they were last folded in
    folded: dict[str, tuple[int, str]] = field(default_factory=dict)
    feedback: FeedbackLog | None = None
    #: the exposure log's rows in this model's indices, kept in step with the log (see ``feedback_from``)
    mapped: _MappedRows = field(default_factory=lambda: _MappedRows())

    @property
    def config_hash(self) -> str:
        return str(self.manifest.get("config_hash", ""))

    @property
    def trained_until_us(self) -> int:
        return int(self.engine.snapshot.end_us)

    def feedback_from(self, log: ExposureLog) -> FeedbackLog:
        """The exposure log the re-rankers read, from the serving exposure log; rows of users or items this
        model does not know are left out. Built beside the requests: the caller swaps it in
        (``loaded.feedback = ...``), one reference. One refresh at a time (it updates ``mapped``)."""
        user, item, by_user = self.mapped.sync(log, self.engine)
        keep = (user >= 0) & (item >= 0)
        if keep.all():  # (copies throughout: the log's columns change in place at its next update, and the
            shown_us = log.shown_us.copy()  # log served meanwhile must not; engaged times are copied by of_arrays)
            return FeedbackLog.of_arrays(shown_us, user, item, log.engaged_us, self.engine.catalog, by_user)
        renumber = np.cumsum(keep) - 1  # the order by user of the rows kept, renumbered
        order = renumber[by_user[keep[by_user]]]
        return FeedbackLog.of_arrays(log.shown_us[keep], user[keep], item[keep], log.engaged_us[keep],
                                     self.engine.catalog, order)  # fmt: skip


class _MappedRows:
    """The exposure log's users and items as a model's indices (-1: unknown to it), and the rows' order by
    user then time, kept in step with the log: each refresh looks up only the rows it read anew (and those
    still unknown: a user folded in, an item added since), and merges the new rows into the order by user
    instead of sorting the whole log again (a timsort of one sorted run and a short one is a merge)."""

    def __init__(self) -> None:
        self._first = 0  # the log's absolute number of row 0 here
        self._user = np.zeros(0, np.int64)
        self._item = np.zeros(0, np.int64)
        self._by_user = np.zeros(0, np.int64)

    def sync(self, log: ExposureLog, engine: Engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user, item, by_user)`` for every row of ``log`` now."""
        drop = min(max(log.first - self._first, 0), len(self._user))
        same = max(min(log.fresh - log.first, len(self._user) - drop), 0)  # rows unchanged since the last sync
        # (copies: the last sync's arrays may be the feedback being served)
        user, item = self._user[drop : drop + same].copy(), self._item[drop : drop + same].copy()
        by_user = self._by_user[(self._by_user >= drop) & (self._by_user < drop + same)] - drop
        unknown = np.flatnonzero((user < 0) | (item < 0))
        moved = np.zeros(0, np.int64)  # rows whose user became known: they leave the unknown users' run
        if len(unknown):
            was_unknown = user[unknown] < 0
            user[unknown] = _positions(engine.user_ids, log.users[unknown])
            item[unknown] = _item_positions(engine, log.items[unknown])
            moved = unknown[was_unknown & (user[unknown] >= 0)]
        user = np.concatenate([user, _positions(engine.user_ids, log.users[same:])])
        item = np.concatenate([item, _item_positions(engine, log.items[same:])])
        if len(moved):
            gone = np.zeros(len(user), bool)
            gone[moved] = True
            by_user = by_user[~gone[by_user]]
        # the kept rows are one run by user; after them the moved and the new rows, by time (a user's rows are
        # all known or all unknown, so none of a moved user's rows is in the run): a stable sort merges them
        merged = np.concatenate([by_user, moved, np.arange(same, len(user))])
        by_user = merged[np.argsort(user[merged], kind="stable")]
        self._first, self._user, self._item, self._by_user = log.first, user, item, by_user
        return user, item, by_user


def _positions(index: pd.Index, ids: np.ndarray) -> np.ndarray:
    # (looked up as object indexes: a str column would be converted first, several times slower)
    return index.get_indexer(pd.Index(ids, dtype=object)).astype(np.int64) if len(ids) else np.zeros(0, np.int64)


def _item_positions(engine: Engine, ids: np.ndarray) -> np.ndarray:
    found = _positions(engine.item_ids, ids)
    return np.where(found < len(engine.catalog), found, -1)


def _settle() -> None:
    """Free the model just replaced and move everything loaded out of the garbage collector's sight: a model
    is millions of long-lived objects (ids, attribute dicts), and a full collection walking them in the middle
    of requests stalls them all (hundreds of ms on a 100k-item catalog). Once per load."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelSlot:
    def __init__(self, registry: Registry, *, on_load_failed: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self._current: Loaded | None = None
        self._swap = threading.Lock()  # one load at a time
        self._broken: str | None = None  # the version that failed to load (not retried until promoted anew)
        self._on_load_failed = on_load_failed or (lambda message: None)
        #: why no model is served (None while one is)
        self.error: str | None = "no model loaded yet"

    @property
    def current(self) -> Loaded | None:
        return self._current

    def forget_failure(self) -> None:
        """Try a version that failed to load again at the next sync (after a promotion: it may be fixed)."""
        self._broken = None

    def sync(self) -> Loaded | None:
        """Serve the registry's current version: load it if it is not the one served. Never raises."""
        with self._swap:
            try:
                wanted = self.registry.current
            except Exception as exc:  # an unreadable registry file: keep what is served
                self._failed(f"cannot read the model registry under {self.registry.root}: {exc}", keep=True)
                return self._current
            if wanted is None:
                self._current, self.error = None, f"no model promoted under {self.registry.root}"
                return None
            if self._current is not None and self._current.version == wanted:
                return self._current
            if wanted == self._broken:
                return None
            try:
                engine, manifest = load_engine(self.registry.root / wanted)
            except Exception as exc:  # missing, corrupt, incompatible: popularity until a good one is promoted
                self._broken = wanted
                self._failed(f"model {wanted} cannot be served: {exc}", keep=False)
                return None
            self._current, self.error = Loaded(wanted, engine, manifest), None
            _settle()
            _log.info("serving model %s", wanted)
            return self._current

    def _failed(self, message: str, *, keep: bool) -> None:
        _log.warning("%s; serving %s", message, "the loaded model" if keep and self._current else "popularity")
        if not keep:
            self._current = None
        self.error = message
        self._on_load_failed(message)
