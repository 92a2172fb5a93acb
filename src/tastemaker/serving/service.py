"""The request path, in-process: assignment → history → candidates → rank → re-rank → response + exposure.

The HTTP API, the CLI's ``recommend`` and (later) the simulator and batch runs call :class:`Recommender`;
nothing here knows about HTTP. Calls are batch-first (many users per call); "now" comes from the injected
clock.

Per request: the user's variant from the holdout hash; the user's events from the store (they are the seen
filter, and those after the model's training end are folded into the user's vectors, so an event changes the
next list without a retrain); then either popularity (the control arm, or the fallback when no model can be
served) or the engine. Every response is queued to the exposure log.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastemaker.candidates.base import History
from tastemaker.clock import Clock
from tastemaker.data.snapshot import positions
from tastemaker.models.registry import Registry
from tastemaker.ranking.features import Context
from tastemaker.reranking import Request, Seen
from tastemaker.reranking.filters import Filter
from tastemaker.serving.catalog import CatalogView
from tastemaker.serving.exposures import ExposureWriter
from tastemaker.serving.feedback import ExposureLog
from tastemaker.serving.holdout import CONTROL, PERSONALIZED, assign
from tastemaker.serving.models import Loaded, ModelSlot
from tastemaker.serving.settings import ServerSettings
from tastemaker.store.base import EMPTY_EVENTS, ExposedItem, Exposure, Store, UserEvents

__all__ = ["ListItem", "ListRequest", "Recommender", "ServedList", "context_value"]

_log = logging.getLogger(__name__)
POPULARITY = "popularity"
_ANONYMOUS = "\x00anonymous"  # not a storable id (the store refuses NUL), so never a real user


@dataclass(frozen=True)
class ListRequest:
    user_id: str
    k: int = 30
    category: str | None = None
    exclude: tuple[str, ...] = ()
    #: ``device`` and any numeric keys the model declared (``features.context_keys``)
    context: Mapping[str, Any] = field(default_factory=dict)
    #: the response's id (a new one when not given); exploration is deterministic given it
    request_id: str | None = None


@dataclass(frozen=True)
class ListItem:
    item_id: str
    score: float | None
    position: int
    source: str
    reason: str
    propensity: float


@dataclass(frozen=True)
class ServedList:
    request_id: str
    user_id: str
    variant: str
    model_version: str
    config_hash: str | None
    items: list[ListItem]
    #: why popularity was served to a personalized user (None when it was not)
    fallback: str | None = None


class Recommender:
    def __init__(
        self,
        store: Store,
        slot: ModelSlot,
        catalog: CatalogView,
        settings: ServerSettings,
        writer: ExposureWriter | None,
        clock: Clock,
        *,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self.store, self.slot, self.catalog, self.settings = store, slot, catalog, settings
        self.writer, self.clock = writer, clock
        self._on_fallback = on_fallback or (lambda reason: None)
        self._refreshing = threading.Lock()
        self._served: Loaded | None = None  # the model the last refresh saw
        self._counted_us: int | None = None  # when popularity was last brought up to date
        self._unavailable_cache: tuple[Loaded, set[str], int, np.ndarray] | None = None
        self._exposures = ExposureLog(store, days=settings.feedback_days, engagement_types=settings.engagement_types,
                                      max_rows=settings.feedback_max_rows, pause=_pace)  # fmt: skip

    @classmethod
    def from_settings(
        cls,
        store: Store,
        settings: ServerSettings,
        clock: Clock,
        *,
        writer: ExposureWriter | None = None,
        on_fallback: Callable[[str], None] | None = None,
        on_load_failed: Callable[[str], None] | None = None,
    ) -> Recommender:
        """A recommender over ``store`` serving the registry under ``settings.models_dir``, loaded and
        refreshed once (the promoted model, the catalog view, the exposure log)."""
        slot = ModelSlot(Registry(settings.models_dir), on_load_failed=on_load_failed)
        catalog = CatalogView(store, days=settings.popularity_days)
        recommender = cls(store, slot, catalog, settings, writer, clock, on_fallback=on_fallback)
        recommender.refresh()
        return recommender

    # -- lists -----------------------------------------------------------------------------------------

    def recommend(self, requests: Sequence[ListRequest]) -> list[ServedList]:
        """One list per request, each written to the exposure log (when the recommender has a writer)."""
        if not requests:
            return []
        now = self.clock.now_us()
        ids = [r.request_id or uuid.uuid4().hex for r in requests]
        variants = assign([r.user_id for r in requests], self.settings.holdout)
        by_user = self.store.user_events([r.user_id for r in requests], until_us=now + 1)
        loaded = self.slot.current  # one reference for the whole call: a swap meanwhile does not touch it
        served: list[ServedList | None] = [None] * len(requests)
        personal = [i for i, v in enumerate(variants) if v == PERSONALIZED and loaded is not None]
        failure = None
        if personal:
            try:
                lists = self._personalized(loaded, [requests[i] for i in personal], [ids[i] for i in personal],
                                           by_user, now)  # fmt: skip
            except Exception as exc:  # a model that fails on a request: popularity, logged and counted
                _log.exception("the model failed on a request; serving popularity")
                failure = f"the model failed on this request: {type(exc).__name__}"
            else:
                for i, one in zip(personal, lists, strict=True):
                    served[i] = one
        for i, request in enumerate(requests):
            if served[i] is None:
                reason = None if variants[i] == CONTROL else (failure or self.slot.error or "no model loaded")
                if reason is not None:
                    self._on_fallback(reason)
                served[i] = self._popular(request, ids[i], str(variants[i]), by_user.get(request.user_id), reason,
                                          loaded, now)  # fmt: skip
        done = [s for s in served if s is not None]
        if self.writer is not None:
            for request, one in zip(requests, done, strict=True):
                self.writer.submit(_exposure(one, request, now))
        return done

    def _popular(
        self,
        request: ListRequest,
        request_id: str,
        variant: str,
        events: UserEvents | None,
        fallback: str | None,
        loaded: Loaded | None,
        now: int,
    ) -> ServedList:
        where = self._filters(loaded, events, now)
        # without a model to say which consumed items may return, none does
        seen = set() if events is None or where is not None else set(events.item_id.tolist())
        found = self.catalog.popular(request.k, category=request.category, exclude=seen | set(request.exclude),
                                     where=where)  # fmt: skip
        items = self._popular_items(found.item_ids, found.scores, request.category)
        return ServedList(request_id, request.user_id, variant, POPULARITY, None, items, fallback)

    def _filters(
        self, loaded: Loaded | None, events: UserEvents | None, now: int
    ) -> Callable[[list[str]], np.ndarray] | None:
        """The served model's filter stages as a test over item ids, for the lists the engine does not rank
        (the control arm, the fallback, popular and similar items): they show nothing the personalized arm
        would filter out (blocked items, providers and categories, item age, the seen rule with its event
        types and cooldown), so the holdout differs from it only in the ranking. None without a model.

        An item the model does not know yet (stored since the last refresh, at most ``refresh_seconds`` ago) is
        judged by what the server knows of it: its id (blocked items), its categories, and whether the user has
        any event on it (consumed, whatever the rule's types and cooldown); its provider and age are not known
        here. A filter that fails is logged and lets everything through: these lists are the fallback, and
        never fail a request."""
        if loaded is None:
            return None
        try:
            engine = loaded.engine
            stages = [s for s in engine.chain.stages if isinstance(s, Filter)]
            blocked = {i for s in stages for i in s.config.blocked_items}
            blocked_categories = {c for s in stages for c in s.config.blocked_categories}
            seen_rule = events is not None and any(s.config.seen for s in stages)
            consumed = set(events.item_id.tolist()) if seen_rule else set()
            with loaded.lock:
                seen = Seen() if events is None else _seen(engine.item_ids, events)
            ask = Request(user=0, now_us=now, k=1, seen=seen)
        except Exception:
            _log.exception("the model's filters could not be read; serving a popularity list without them")
            return None

        def allowed(ids: list[str]) -> np.ndarray:
            try:
                with loaded.lock:  # (items added meanwhile grow the index and the catalog together)
                    index, catalog = engine.item_index(ids), engine.catalog
                keep = np.ones(len(ids), bool)
                known = index >= 0
                for stage in stages:
                    keep[known] &= stage.allowed(index[known], ask, catalog)
                for j in np.flatnonzero(~known).tolist():
                    item = ids[j]
                    in_blocked = not blocked_categories.isdisjoint(self.catalog.categories(item))
                    keep[j] = not (item in blocked or item in consumed or in_blocked)
                return keep
            except Exception:
                _log.exception("the model's filters failed on a popularity list; serving it without them")
                return np.ones(len(ids), bool)

        return allowed

    def _personalized(
        self,
        loaded: Loaded,
        requests: Sequence[ListRequest],
        request_ids: Sequence[str],
        by_user: Mapping[str, UserEvents],
        now: int,
    ) -> list[ServedList]:
        engine = loaded.engine
        histories = [by_user.get(r.user_id, EMPTY_EVENTS) for r in requests]
        with loaded.lock:
            rows = engine.user_index([r.user_id for r in requests])
            if self._fold_in(loaded, requests, histories, rows >= 0):  # (it may add users: look them up again)
                rows = engine.user_index([r.user_id for r in requests])
            users = self._rows(engine, rows)
            keys = engine.config.features.context_keys
            contexts = [Context.of_event(now, dict(r.context), keys) for r in requests]
            unavailable = self._unavailable(loaded)
            seen = [_seen(engine.item_ids, h) for h in histories]
            excluded = [np.union1d(unavailable, _known(engine.item_ids, r.exclude)) if r.exclude else unavailable
                        for r in requests]  # fmt: skip
            asks = [
                Request(user=int(u), now_us=now, k=r.k, request_id=rid, seen=s, exclude=x, category=r.category)
                for u, r, rid, s, x in zip(users, requests, request_ids, seen, excluded, strict=True)
            ]
            exclude = self._exclude(engine, seen)
            k = max(r.k for r in requests)
            found = engine.recommend(users, k, exclude=exclude, contexts=contexts, requests=asks,
                                     feedback=loaded.feedback)  # fmt: skip
        out = []
        for row, (request, rid) in enumerate(zip(requests, request_ids, strict=True)):
            items = []
            for pos in range(request.k):
                item = int(found.items[row, pos])
                if item < 0:
                    break
                score = float(found.scores[row, pos])
                items.append(ListItem(str(engine.item_ids[item]), score if np.isfinite(score) else None, pos + 1,
                                      found.sources[row][pos], found.reasons[row][pos],
                                      float(found.propensity[row, pos])))  # fmt: skip
            out.append(ServedList(rid, request.user_id, PERSONALIZED, loaded.version, loaded.config_hash, items))
        return out

    def _unavailable(self, loaded: Loaded) -> np.ndarray:
        """The model's indices of the catalog's unavailable items, mapped again only when the set (replaced,
        never changed in place) or the model's items change, not per request."""
        now_unavailable, n_items = self.catalog.unavailable, loaded.engine.n_items
        cached = self._unavailable_cache
        if cached is None or cached[0] is not loaded or cached[1] is not now_unavailable or cached[2] != n_items:
            indices = _known(loaded.engine.item_ids, list(now_unavailable))
            cached = self._unavailable_cache = (loaded, now_unavailable, n_items, indices)
        return cached[3]

    def _fold_in(
        self, loaded: Loaded, requests: Sequence[ListRequest], histories: Sequence[UserEvents], known: np.ndarray
    ) -> bool:
        """Fold each user's events since the model's training end into its vectors, when they changed since
        the last fold (``known``: whether the model knows each user). A user the model does not know is added
        once they have events or stored attributes; until then they are served as the anonymous newcomer
        (see :meth:`_rows`), so made-up ids do not grow the model. Whether anything was folded."""
        engine = loaded.engine
        end = loaded.trained_until_us
        marks: dict[str, tuple[int, str]] = {}
        recents: dict[str, UserEvents] = {}
        for request, events, is_known in zip(requests, histories, known, strict=True):
            after = events.timestamp_us >= end
            if is_known and not after.any():  # the common case
                continue
            recent = events.take(after)
            mark = (len(recent), str(recent.event_id[-1]) if len(recent) else "")
            if mark == (0, "") and is_known or loaded.folded.get(request.user_id) == mark:
                continue
            if request.user_id in marks:  # the same user twice in one batch: their events count once
                continue
            marks[request.user_id] = mark
            recents[request.user_id] = recent
        if not marks:
            return False
        stored = {u["user_id"]: u.get("attributes") or {} for u in self.store.get_users(list(marks))}
        changed = [u for u, mark in marks.items() if mark != (0, "") or stored.get(u)]
        if changed:
            history = History.of_events(np.array(changed, dtype=object), [recents[u] for u in changed],
                                        engine.item_ids, config=engine.snapshot.config, attributes=stored)  # fmt: skip
            engine.fold_in(history)
        loaded.folded.update({u: marks[u] for u in changed})  # only once folded: a failure is retried next time
        return bool(changed)

    def _rows(self, engine: Any, rows: np.ndarray) -> np.ndarray:
        """Each user's row in the engine (``rows``: the engine's index, -1 where unknown); users it does not
        know (no events, no attributes) share one row without history, added once per model."""
        if (rows < 0).any():
            anonymous = engine.user_index([_ANONYMOUS])[0]
            if anonymous < 0:
                engine.fold_in(History.of_events(np.array([_ANONYMOUS], dtype=object), [EMPTY_EVENTS], engine.item_ids,
                                                 config=engine.snapshot.config))  # fmt: skip
                anonymous = engine.user_index([_ANONYMOUS])[0]
            rows = np.where(rows < 0, anonymous, rows)
        return rows

    def _exclude(self, engine: Any, seen: Sequence[Seen]) -> sp.csr_matrix | None:
        """What the candidate sources skip: the user's consumed items, when the chain's filter drops all of
        them anyway (the default); otherwise the sources propose everything and the filter decides."""
        stages = [s for s in engine.chain.stages if isinstance(s, Filter)]
        if not stages or not any(s.config.seen and not s.config.seen_types and s.config.cooldown_days is None
                                 for s in stages):  # fmt: skip
            return None
        cols = [np.unique(s.items) for s in seen]  # sorted, once each: a canonical CSR built directly
        indptr = np.zeros(len(seen) + 1, np.int64)
        np.cumsum([len(c) for c in cols], out=indptr[1:])
        indices = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(seen), engine.n_items))

    # -- item lists ------------------------------------------------------------------------------------

    def popular(self, k: int, category: str | None = None) -> list[ListItem]:
        found = self.catalog.popular(k, category=category, where=self._filters(self.slot.current, None,
                                                                               self.clock.now_us()))  # fmt: skip
        return self._popular_items(found.item_ids, found.scores, category)

    def _popular_items(self, ids: Sequence[str], scores: Sequence[float], category: str | None) -> list[ListItem]:
        return [ListItem(i, s, p + 1, "popular", _popular_reason(self.catalog.categories(i), category), 1.0)
                for p, (i, s) in enumerate(zip(ids, scores, strict=True))]  # fmt: skip

    def similar(self, item_id: str, k: int) -> tuple[str, list[ListItem]] | None:
        """Items like ``item_id`` and the model that chose them: the served model's neighbours, or popular
        items of the item's first category (``popularity``) when no model knows it well enough; None for an
        item neither the model nor the store knows."""
        loaded = self.slot.current
        where = self._filters(loaded, None, self.clock.now_us())
        if loaded is not None:
            engine = loaded.engine
            index = engine.item_index([item_id])
            if index[0] >= 0:
                unavailable = self.catalog.unavailable
                asked, items = 2 * k + len(unavailable), []
                while True:  # filters may drop most of an item's neighbours (they share its category): ask for more
                    with loaded.lock:
                        ids, scores = engine.similar(index, asked)
                    pairs = [(str(engine.item_ids[i]), float(s)) for i, s in zip(ids[0], scores[0], strict=True)
                             if i >= 0]  # fmt: skip
                    shown = where([i for i, _ in pairs]) if pairs and where else np.ones(len(pairs), bool)
                    items = [p for p, ok in zip(pairs, shown.tolist(), strict=True)
                             if ok and p[0] not in unavailable][:k]  # fmt: skip
                    if len(items) >= k or len(pairs) < asked or asked >= engine.n_items:
                        break
                    asked *= 4
                if items:  # (an item added since training has no neighbours yet)
                    listed = [ListItem(i, s, p + 1, "similar", "similar items", 1.0) for p, (i, s) in enumerate(items)]
                    return loaded.version, listed
        stored = self.store.get_items([item_id])
        if not stored:
            return None
        cats = list(stored[0].get("categories") or [])
        found = self.catalog.popular(k, category=cats[0] if cats else None, exclude={item_id}, where=where)
        return POPULARITY, self._popular_items(found.item_ids, found.scores, None)

    # -- upkeep ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the registry (hot-swap), the catalog view and what is new in the exposure log (one refresh at
        a time: the refresher thread and a promotion through the API may ask together)."""
        with self._refreshing:
            self._refresh()

    def _refresh(self) -> None:
        now = self.clock.now_us()
        swapped = self.slot.sync() is not self._served
        every = self.settings.popularity_refresh_seconds * 1e6
        recount = self._counted_us is None or now - self._counted_us >= every
        changed = self.catalog.refresh(now, popularity=recount)
        if recount:
            self._counted_us = now
        self._exposures.update(now)
        loaded = self._served = self.slot.current
        if loaded is None:
            return
        if swapped:  # a model just loaded has not seen the items added since its training
            changed = self.store.items_frame(updated_since_us=loaded.trained_until_us)
        known = loaded.engine.item_index(changed["item_id"].astype(str).tolist()) if len(changed) else []
        new = changed[np.asarray(known) < 0] if len(changed) else changed
        if len(new):  # catalog items added since training: the sources that can (fresh, content) serve them
            with loaded.lock:
                loaded.engine.add_items(new.reset_index(drop=True))
        loaded.feedback = loaded.feedback_from(self._exposures)  # built outside the lock, swapped in as one reference


def _pace(took: float) -> None:
    """The refresher's pause after each slice of its exposure-log reads (a few seconds of exposures at a time):
    three times the slice's own time, so a refresh takes a quarter of a core at most while it lasts, instead of a
    whole one in every worker at once (those bursts were what set the HTTP p99; docs/BENCHMARKS.md)."""
    time.sleep(3 * took)


def context_value(key: str, text: str) -> float | str:
    """A context parameter sent as text (a query string, a command line): ``device`` stays text; other keys
    are numbers when they are finite ones (``nan``, ``inf``, ``1e400`` stay text: JSON cannot hold them)."""
    if key == "device":
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _seen(item_ids: pd.Index, events: UserEvents) -> Seen:
    if not len(events):
        return Seen()
    ids = events.item_id  # a few looked up one by one; more as an object index (no str inference: 4× cheaper)
    idx = positions(item_ids, ids.tolist()) if len(ids) <= 16 else item_ids.get_indexer(pd.Index(ids, dtype=object))
    keep = idx >= 0
    return Seen(idx[keep].astype(np.int64), events.timestamp_us[keep], events.type[keep])


def _known(item_ids: pd.Index, ids: Sequence[str]) -> np.ndarray:
    if not ids:
        return np.zeros(0, np.int64)
    found = item_ids.get_indexer(pd.Index(list(ids), dtype=object))
    return found[found >= 0].astype(np.int64)


def _popular_reason(categories: Sequence[str], asked: str | None) -> str:
    category = asked or (categories[0] if categories else None)
    return f"popular in {category}" if category else "popular right now"


def _exposure(served: ServedList, request: ListRequest, now: int) -> Exposure:
    items = [ExposedItem(it.position, it.item_id, it.score, it.source, it.propensity) for it in served.items]
    context = dict(request.context) or None
    return Exposure(served.request_id, served.user_id, served.variant, now, items, served.model_version,
                    served.config_hash, context)  # fmt: skip
