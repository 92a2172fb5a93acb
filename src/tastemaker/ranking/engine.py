"""The engine: candidate sources, then the learned ranker over their candidates (model ``engine``).

``fit`` trains the ranker on an inner split of the snapshot (see :mod:`tastemaker.ranking.training`), then
refits the sources on the whole snapshot for serving. The ranker learned on sources fitted with less data;
its features are therefore scale-free where a source's scale moves with the data (scores relative to the
user's best score from that source, ranks), so the refit sources speak the language it learned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits

from tastemaker.candidates.base import CandidateSource, History, sparse_top_n, top_n
from tastemaker.candidates.merge import CandidateGenerator, Candidates, MergeConfig, make_source
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import ConfigError
from tastemaker.ranking.features import Context, FeatureBuilder, FeatureConfig, FeatureSchema
from tastemaker.ranking.ltr import LightGBMRanker, RankerConfig
from tastemaker.ranking.training import LabelConfig, RankingData, SplitConfig, inner_split, training_data
from tastemaker.reranking import Catalog, Chain, Feedback, Request, RerankConfig

__all__ = ["Engine", "EngineConfig", "Recommendations"]


class EngineConfig(ConfigModel):
    merge: MergeConfig = Field(default_factory=MergeConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    #: ``refit``: serve sources refitted on the whole snapshot (they know the most; their score scales may
    #: differ from the ones the ranker learned on); ``fold-in``: serve the very sources the ranker trained
    #: with, the held-out interactions folded in (same scales; the item side misses the held-out share)
    serve: Literal["refit", "fold-in"] = "refit"
    #: "now" when a request gives no context (offline evaluation): just after the user's latest interaction,
    #: or the snapshot's end for everyone
    offline_now: Literal["user-latest", "snapshot-end"] = "user-latest"
    #: layer 3, applied to every list (no stages: the ranker's order)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    #: offline lists (``candidates(users, n)``, what ``tastemaker evaluate`` scores): the first this many are
    #: the re-ranked list a user would be served, the rest follow in the ranker's order
    list_length: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _early_stopping_has_queries(self) -> EngineConfig:
        if self.ranker.folds == 1 and self.split.validation_users == 0:
            raise ValueError(
                "ranker.folds = 1 early-stops on validation users: give split.validation_users > 0 (e.g. 0.2), "
                "or ranker.folds > 1 (each booster then early-stops on its own fold of users)"
            )
        return self


class Engine(CandidateSource):
    name = "engine"
    needs_history = False

    def __init__(self, config: EngineConfig | None = None, *, seed: int = 42) -> None:
        self.config = config or EngineConfig()
        self.seed = seed

    def _fit(self, snapshot: Snapshot) -> None:
        cfg = self.config
        # a source the whole snapshot is too big for (EASE) must not be in the ranker's training either, or
        # the served features would not be the ones it learned
        serving = self._new_generator()
        served = {name: cfg.merge.quotas[name] for name in serving.plan(snapshot)[0]}
        merge = cfg.merge.model_copy(update={"quotas": served})
        builder = FeatureBuilder(cfg.features)
        clock = time.perf_counter  # durations for the manifest, not "now"
        started = clock()
        seconds: dict[str, float] = {}
        handoff = _Handoff(served)
        # the serving sources refit on everything in a second thread, from the start: those that cannot
        # warm-start beside the inner fit, then each of the others (ALS: a few iterations from the inner
        # factors) as soon as its inner twin is fitted, beside the rest of the inner fit and the training set
        # (BLAS, FAISS and sparse kernels release the GIL). BLAS is held at one thread for the whole fit: a
        # thread count that moved while the other thread computes (implicit limits it per fit) would change
        # its floating-point sums, and with them the fit
        with threadpool_limits(1, "blas"), ThreadPoolExecutor(1) as pool:
            refit = pool.submit(serving.warm_from(handoff.get).fit, snapshot) if cfg.serve == "refit" else None

            def inner_fitted(window: int, generator: CandidateGenerator) -> None:
                seconds[f"inner_sources_{window}"] = round(clock() - started, 2)
                if window == 0:
                    handoff.close()

            try:
                train, valid, inner = training_data(
                    snapshot, lambda: handoff.watch(self._inner_generator(merge)), builder, split=cfg.split,
                    labels=cfg.labels, seed=self.seed, on_fitted=inner_fitted,
                )  # fmt: skip
            except BaseException as exc:
                handoff.close(exc)  # the refit may wait for an inner source: let it fail rather than wait forever
                raise  # (a refit already under way finishes first: the pool waits for it on the way out)
            seconds["training_set"] = round(clock() - started, 2)
            schema = builder.schema()
            self.ranker = LightGBMRanker(cfg.ranker, seed=self.seed).fit(train, valid, schema)
            seconds["ranker"] = round(clock() - started, 2)
            self.generator = refit.result() if refit is not None else serving
            seconds["serving_sources"] = round(clock() - started, 2)
        if cfg.serve == "fold-in":
            _, kept, _ = inner_split(snapshot, cfg.split, self.seed)
            self.generator = inner.fold_in(_history(snapshot, ~kept))
        self.training = {"train": _summary(train), "validation": _summary(valid)}
        self.features = FeatureBuilder(cfg.features).fit(self.generator, snapshot, devices=schema.devices)
        served_names = self.features.names
        if served_names != schema.names:
            raise ConfigError(f"the served features {served_names} differ from the trained ones {schema.names}")
        self._schema = schema  # the ranker's own object: requests pass its check without comparing names
        self._now = snapshot.end_us
        als = self.generator.sources.get("als")
        self.catalog = Catalog.of(snapshot, vectors=getattr(als, "item_factors", None))
        self.chain = Chain(cfg.rerank)
        seconds["total"] = round(clock() - started, 2)
        #: seconds from the start of the fit at which each step ended (steps overlap: see above)
        self.fit_seconds = seconds

    def _new_generator(self) -> CandidateGenerator:
        return CandidateGenerator(self.config.merge, seed=self.seed)

    def _inner_generator(self, merge: MergeConfig) -> CandidateGenerator:
        """The sources the ranker trains with (every window's alike). When serving refits, a source that can
        (``first_part``: ALS) runs only the part of its fit the serving one does not: the serving ALS
        continues from the inner factors."""
        if self.config.serve != "refit":
            return CandidateGenerator(merge, seed=self.seed)
        sources = {name: make_source(name, self.seed, merge.settings.get(name)) for name in merge.quotas}
        sources = {name: s.first_part() if hasattr(s, "first_part") else s for name, s in sources.items()}
        return CandidateGenerator(merge, seed=self.seed, sources=sources)

    @property
    def schema(self) -> FeatureSchema:
        """The served features' schema (the ranker checks every request's features against it)."""
        _ = self.snapshot
        return self._schema

    def fold_in(self, history: History) -> Engine:
        super().fold_in(history)
        self.generator.fold_in(history)
        return self

    def add_items(self, items: pd.DataFrame) -> np.ndarray:
        known = len(self.item_ids)
        got = super().add_items(items)
        self.generator.add_items(items)
        ids = items["item_id"].astype(str)
        new = items[(got >= known) & ~ids.duplicated().to_numpy()]
        if len(new):
            self.catalog = self.catalog.with_items(new.reset_index(drop=True))
        return got

    def rank(
        self, users: np.ndarray, *, exclude: sp.csr_matrix | None = None, contexts: Sequence[Context] | None = None
    ) -> tuple[Candidates, np.ndarray]:
        """The generator's candidates for ``users`` and the ranker's score of each (-inf for padding)."""
        users = np.asarray(users, dtype=np.int64)
        found = self.generator.generate(users, exclude=exclude)
        if not len(users):
            return found, np.zeros(found.items.shape)
        if contexts is None:  # no request time given (offline evaluation)
            contexts = [Context(now_us=int(t)) for t in self._offline_nows(users)]
        x = self.features.compute(users, found, contexts)
        valid = found.items >= 0
        scores = np.full(found.items.shape, -np.inf)
        if valid.any():
            scores[valid] = self.ranker.predict(x[valid], self.schema)
        return found, scores

    def recommend(
        self,
        users: np.ndarray,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        contexts: Sequence[Context] | None = None,
        requests: Sequence[Request] | None = None,
        feedback: Feedback | None = None,
    ) -> Recommendations:
        """Each user's list of ``k``: ranked candidates through the re-ranking chain, each item with its
        strongest source, a reason and the propensity the chain placed it with. ``requests`` (one per user)
        carry the request id, seen items and per-request options; by default each user's request has the
        context's now and the id ``offline:USER``. ``feedback`` is the exposure log (default: none)."""
        users = np.asarray(users, dtype=np.int64)
        found, scores = self.rank(users, exclude=exclude, contexts=contexts)
        return self._rerank(users, k, found, scores, contexts, requests, feedback)

    def similar(self, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most like each of ``items`` (indices, -1 padded) and their similarity: the item-to-item
        source's neighbour weights (``sequence``'s, else ``item_knn``'s) when the engine has one, else the cosine
        of ALS item factors."""
        items = np.asarray(items, dtype=np.int64)
        itself = sp.csr_matrix((np.ones(len(items), np.float32), (np.arange(len(items)), items)),
                               shape=(len(items), self.n_items))  # an item is not its own neighbour  # fmt: skip
        knn = self.generator.item_to_item
        if knn is not None:
            known = items < knn.similarity.shape[0]
            rows = sp.diags(known.astype(np.float32)) @ knn.similarity[np.where(known, items, 0)]
            return sparse_top_n(sp.csr_matrix(rows), k, exclude=itself)
        als = self.generator.sources.get("als")
        if als is None:
            return np.full((len(items), k), -1, np.int64), np.full((len(items), k), -np.inf, np.float32)
        factors = np.asarray(als.item_factors, dtype=np.float32)
        unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
        scores = unit[np.minimum(items, len(unit) - 1)] @ unit.T
        scores[items >= len(unit)] = -np.inf
        return top_n(scores, k, exclude=itself)

    def _rerank(
        self,
        users: np.ndarray,
        k: int,
        found: Candidates,
        scores: np.ndarray,
        contexts: Sequence[Context] | None,
        requests: Sequence[Request] | None,
        feedback: Feedback | None,
    ) -> Recommendations:
        if requests is None:
            nows = [c.now_us for c in contexts] if contexts is not None else self._offline_nows(users)
            requests = [Request(user=int(u), now_us=int(t), k=k, request_id=f"offline:{self.user_ids[u]}")
                        for u, t in zip(users, nows, strict=True)]  # fmt: skip
        names = np.asarray(found.sources, dtype=object)
        sources = names[found.primary] if len(names) else np.full(found.items.shape, "", dtype=object)
        slates = self.chain.apply_rows(found.items, scores, sources, requests, self.catalog, feedback)
        items = np.full((len(users), k), -1, np.int64)
        best = np.full((len(users), k), -np.inf)
        propensity = np.full((len(users), k), np.nan)
        for row, slate in enumerate(slates):
            n = min(k, len(slate))
            items[row, :n], propensity[row, :n] = slate.items[:n], slate.propensity[:n]
            best[row, :n] = _scores_of(found.items[row], scores[row], slate.items[:n])
        seeds = self.generator.because(users, items)  # the history item that most explains each one
        listed = [[str(s) for s in slate.sources[:k]] + [""] * (k - min(k, len(slate))) for slate in slates]
        reasons = [
            [self._reason(s, i, seed) if i >= 0 else "" for s, i, seed in zip(srcs, row, seed_row, strict=True)]
            for srcs, row, seed_row in zip(listed, items, seeds, strict=True)
        ]
        return Recommendations(items, best, listed, reasons, propensity)

    def _reason(self, source: str, item: int, seed: int) -> str:
        snap = self.snapshot
        if source == "exploration":
            return "something new to try"
        if source == "pinned":
            return "featured"
        if source in _TEMPLATES:
            category = self._category(item)
            return _TEMPLATES[source].format(category=category) if category else _WITHOUT_CATEGORY[source]
        if seed >= 0:
            title = str(snap.item_title[seed]) if seed < snap.n_items and snap.item_title[seed] else self.item_ids[seed]
            return f"similar to {title}" if source == "content" else f"because you liked {title}"
        return "picked for you"

    def _category(self, item: int) -> str | None:
        cats = self.snapshot.item_categories
        if item >= cats.shape[0] or cats.indptr[item] == cats.indptr[item + 1]:
            return None
        return str(self.snapshot.categories[cats.indices[cats.indptr[item]]])

    def _offline_nows(self, users: np.ndarray) -> np.ndarray:
        if self.config.offline_now == "snapshot-end":
            return np.full(len(users), self._now, np.int64)
        return self._latest(users)

    def _latest(self, users: np.ndarray) -> np.ndarray:
        """Just after each user's latest interaction (the snapshot's end for users without one). Training
        puts "now" where a user's held-out interactions begin, right after their last known one; an offline
        evaluation has no request time, so this is the closest match to what the ranker learned."""
        last = self.generator.user_last_rows(users)
        latest = np.full(len(users), -1, np.int64)
        np.maximum.at(latest, last.row_ids(), last.data.astype(np.int64))
        return np.where(latest >= 0, latest + 1, self._now)

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """The served list (``list_length`` items through the chain), then the rest of the ranked
        candidates in the ranker's order, up to ``n``."""
        found, scores = self.rank(users, exclude=exclude)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        ids = np.take_along_axis(found.items, order, axis=1)
        best = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        ids = np.where(np.isfinite(best), ids, -1)
        pad = n - ids.shape[1]  # fewer candidates than asked for (a pin may still add one): pad first
        if pad > 0:
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
        if self.chain.stages:
            listed = self._rerank(users, min(n, self.config.list_length), found, scores, None, None, None)
            for row in range(len(users)):
                head = listed.items[row][listed.items[row] >= 0]
                rest = ids[row][(ids[row] >= 0) & ~np.isin(ids[row], head)]
                merged = np.r_[head, rest][:n]
                ids[row] = -1
                ids[row, : len(merged)] = merged
                best[row] = -np.inf
                best[row, : len(merged)] = _scores_of(found.items[row], scores[row], merged)
        return ids, best


class _Handoff:
    """The inner fit's sources, handed to the serving refit one by one as each is fitted. Only the first
    generator watched reports: the training set fits window 0's first, the one whose sources serving
    continues from."""

    def __init__(self, names: Iterable[str]) -> None:
        self._sources: dict[str, Future[CandidateSource | None]] = {name: Future() for name in names}
        self._watching = False

    def watch(self, generator: CandidateGenerator) -> CandidateGenerator:
        if not self._watching:
            self._watching = True
            generator.on_source_fitted(self._fitted)
        return generator

    def _fitted(self, name: str, source: CandidateSource) -> None:
        found = self._sources.get(name)
        if found is not None and not found.done():
            found.set_result(source)

    def get(self, name: str) -> CandidateSource | None:
        """The inner source ``name`` once fitted (waits for it); None if the inner fit has none."""
        found = self._sources.get(name)
        return None if found is None else found.result()

    def close(self, error: BaseException | None = None) -> None:
        """No more sources come: whoever waits gets None (start cold), or ``error``."""
        for found in self._sources.values():
            if not found.done():
                if error is None:
                    found.set_result(None)
                else:
                    found.set_exception(error)


@dataclass(frozen=True)
class Recommendations:
    """Ranked lists for a batch of users: item indices (-1 padded), the ranker's scores, and per item the
    source that proposed it most strongly and a reason a person can read."""

    items: np.ndarray
    scores: np.ndarray
    sources: list[list[str]]
    reasons: list[list[str]]
    #: the chance the re-ranking policy put each item at its position (1 unless it explored; NaN: padding)
    propensity: np.ndarray


_TEMPLATES = {
    "popular": "popular in {category}",
    "trending": "trending in {category} this week",
    "fresh": "new in {category}",
}
_WITHOUT_CATEGORY = {"popular": "popular right now", "trending": "trending this week", "fresh": "new"}


def _scores_of(candidates: np.ndarray, scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The ranker's score of each of ``items`` among one user's ``candidates`` (NaN for an item the ranker
    did not score, e.g. a pinned one)."""
    if not len(candidates):
        return np.full(len(items), np.nan)
    order = np.argsort(candidates, kind="stable")
    at = np.minimum(np.searchsorted(candidates[order], items), len(candidates) - 1)
    found = order[at]
    return np.where(candidates[found] == items, scores[found], np.nan)


def _history(snapshot: Snapshot, rows: np.ndarray) -> History:
    """The interactions where ``rows`` holds, as a :class:`History` over the snapshot's items."""
    table = snapshot.interactions[rows]
    users = np.unique(table["user_idx"].to_numpy())
    row = np.searchsorted(users, table["user_idx"].to_numpy())
    col = table["item_idx"].to_numpy()
    shape = (len(users), snapshot.n_items)
    weight = sp.csr_matrix((table["weight"].to_numpy(np.float32), (row, col)), shape=shape)
    last = sp.csr_matrix((table["last_timestamp_us"].to_numpy(np.float64), (row, col)), shape=shape)
    attributes = tuple(snapshot.user_attributes[u] if snapshot.user_attributes else {} for u in users)
    return History(pd.Index(snapshot.user_ids[users], dtype=object), snapshot.item_ids, weight, last, attributes)


def _summary(data: RankingData) -> dict[str, int]:
    return {"queries": len(data.groups), "rows": len(data.y), "positives": data.positives}
