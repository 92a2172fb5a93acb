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

    @property
    def config_hash(self) -> str:
        return str(self.manifest.get("config_hash", ""))

    @property
    def trained_until_us(self) -> int:
        return int(self.engine.snapshot.end_us)

    def feedback_from(self, exposures: pd.DataFrame) -> FeedbackLog:
        """The exposure log the re-rankers read, from the store's rows (user_id, item_id, timestamp_us,
        engaged_us); rows of users or items this model does not know are left out. Built beside the
        requests: the caller swaps it in (``loaded.feedback = ...``), one reference."""
        engine = self.engine
        n = len(exposures)
        # (looked up as object indexes: a str column would be converted first, several times slower)
        user = engine.user_ids.get_indexer(pd.Index(exposures["user_id"].to_numpy(object), dtype=object))
        item = engine.item_ids.get_indexer(pd.Index(exposures["item_id"].to_numpy(object), dtype=object))
        keep = (user >= 0) & (item >= 0) & (item < len(engine.catalog))
        engaged_us = exposures["engaged_us"].to_numpy(np.float64) if n else np.zeros(0)
        shown_us = exposures["timestamp_us"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        rows = pd.DataFrame({"user": user[keep], "item": item[keep], "shown_us": shown_us[keep],
                             "engaged": ~np.isnan(engaged_us[keep]), "engaged_us": engaged_us[keep]})  # fmt: skip
        return FeedbackLog(rows, engine.catalog)


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
