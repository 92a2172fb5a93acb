"""The learned ranker: LightGBM ``lambdarank`` over the feature schema, early-stopped on validation queries.

The trees boost from a prior: the ranking of one source (by default the one whose own ranking scores best
on the validation queries), as ``-base_weight · log2(2 + rank)``. LightGBM takes it as the initial score,
so every tree learns a correction to that source's order, and early stopping keeps only corrections that
help on validation. A two-stage model trained on a thinner inner split otherwise has to relearn its best
source's ranking from a few hundred queries, and may lose to it; with the prior it starts where that
source ends. If no tree helps, the ranker is the prior alone.

The ranker is an average of such boosters (``folds``, 3 by default): the queries are split by user into
folds, each booster trains on all folds but one and early-stops on, and picks its base by, the one left out.
One booster early-stopped on a few hundred validation queries is a noisy fit; the mean of three is steadier,
and every query trains two of them. On the harness validation splits the mean of three beat one booster by
1.0% under ``recommenders`` (2.1% with every query training there) and 3.8% under ``temporal``, while one
booster trained on every query for the members' mean number of rounds did not (docs/EVALUATION.md).

Serving can run the trees compiled to native code (``compile``, with lleaves: the same model, the same
scores, about 3× faster on one request's 500 candidates than LightGBM's own predictor, whose per-call
overhead dominates at that size; benchmarks/ranking.py). The compiled code is for the machine that
compiled it: it is cached beside an artifact under a name that says which CPU and compiler it is for, and
never pickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError, NotFittedError
from tastemaker.ranking.features import FeatureSchema
from tastemaker.ranking.training import RankingData

__all__ = ["LightGBMRanker", "RankerConfig", "SchemaMismatchError", "ndcg"]

_log = logging.getLogger(__name__)


class SchemaMismatchError(ConfigError):
    """Features of one schema given to a ranker trained on another."""


class RankerConfig(ConfigModel):
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=31, ge=2)
    min_data_in_leaf: int = Field(default=50, ge=1)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    bagging_fraction: float = Field(default=0.8, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    max_rounds: int = Field(default=500, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    #: the nDCG cut-off lambdarank optimises and early stopping watches
    eval_at: int = Field(default=10, ge=1)
    threads: int = Field(default=2, ge=1)
    #: the source whose ranking the trees correct: ``auto`` (the best on validation queries), a source's name,
    #: or None (the trees start from nothing)
    base: str | None = "auto"
    #: how strongly the prior holds: trees override a rank gap of ``log2`` ratio 1 with this much score
    base_weight: float = Field(default=0.5, gt=0)  # validation: 0.5 > 1 > 2 > 4
    #: boosters averaged: every query (training and validation alike, as given) goes to one of this many folds
    #: by its user; each booster trains on the other folds and early-stops on (and picks its base by) its own,
    #: and a request's score is their mean. 1: one booster, trained on the training queries and early-stopped
    #: on the validation ones. Validation nDCG@10 (recommenders / temporal, docs/EVALUATION.md): 1 0.2260 /
    #: 0.1574, 3 0.2283 / 0.1634, 5 0.2304 / 0.1636; serving time grows with it (every booster's trees run)
    folds: int = Field(default=3, ge=1)


class LightGBMRanker:
    """One or more :class:`_Member` rankers (``config.folds``), each boosting from its base source's ranking;
    the ranker's score is their mean."""

    def __init__(self, config: RankerConfig | None = None, *, seed: int = 42) -> None:
        self.config = config or RankerConfig()
        self.seed = seed
        self.members: list[_Member] = []
        self.schema: FeatureSchema | None = None

    def fit(self, train: RankingData, valid: RankingData | None, schema: FeatureSchema) -> LightGBMRanker:
        self.schema = schema
        if self.config.folds == 1:
            self.members = [_Member(self.config, self.seed).fit(train, valid, schema)]
            return self
        pooled = train if valid is None else RankingData.concat([train, valid])
        users = np.unique(pooled.users)
        if len(users) < 2:
            raise ConfigError(
                f"ranker.folds = {self.config.folds} needs queries of 2+ users, got {len(users)}: more data, or "
                "ranker.folds = 1 with validation users"
            )
        if len(users) < self.config.folds:
            _log.warning("ranker.folds = %d but only %d users have queries: %d boosters", self.config.folds,
                         len(users), len(users))  # fmt: skip
        shuffled = np.random.default_rng(self.seed).permutation(users)
        parts = np.array_split(shuffled, min(self.config.folds, len(users)))
        fold = np.empty(len(pooled.users), np.int64)
        for f, part in enumerate(parts):
            fold[np.isin(pooled.users, part)] = f
        self.members = [
            _Member(self.config, self.seed + f).fit(pooled.queries(fold != f), pooled.queries(fold == f), schema)
            for f in range(len(parts))
        ]
        return self

    @property
    def prior_only(self) -> bool:
        """True when no member's trees beat its base source's ranking: serving needs no trees then (the score is
        the mean of the members' base rankings, one source's when they share a base)."""
        self._require()
        return all(m.prior_only for m in self.members)

    @property
    def prior_score(self) -> float | None:
        """The members' mean validation nDCG of their base source's ranking alone (None without validation)."""
        scores = [m.prior_score for m in self._require()]
        return None if any(s is None for s in scores) else float(np.mean(scores))

    def validation_score(self) -> float | None:
        """The members' mean best validation nDCG@eval_at (each on its own queries; None without validation)."""
        scores = [m.validation_score() for m in self._require()]
        return None if any(s is None for s in scores) else float(np.mean(scores))

    def predict(self, x: np.ndarray, schema: FeatureSchema) -> np.ndarray:
        """Scores of feature rows ``x`` (``rows × features`` in ``schema``'s order)."""
        members = self._require()
        assert self.schema is not None
        if schema is not self.schema and (schema.version != self.schema.version or schema.names != self.schema.names):
            raise SchemaMismatchError(
                f"features follow schema v{schema.version} with {len(schema.names)} columns; the ranker was trained "
                f"on v{self.schema.version} with {len(self.schema.names)}: retrain, or serve the matching model"
            )
        if len(members) == 1:
            return members[0].predict(x)
        wide = None if all(m.prior_only or m.native is None for m in members) else np.asarray(x, np.float64)
        priors: dict[str | None, Any] = {}
        return np.mean([m.predict(x, wide, priors) for m in members], axis=0)

    def compile(self, cache: str | Path | None = None) -> float:
        """Compile each member's trees to native code for ``predict`` (lleaves); returns the seconds it took.

        With a ``cache`` folder, the object code is read from it when this CPU's is there (milliseconds) and
        written to it otherwise (about a second per 30 trees). Nothing to do for a member whose trees serving
        ignores (``prior_only``)."""
        return sum(m.compile(cache) for m in self._require())

    @property
    def compiled(self) -> bool:
        """True when ``predict`` runs every member's trees as native code (and there are trees to run)."""
        members = self._require()
        return not self.prior_only and all(m.prior_only or m.native is not None for m in members)

    def importances(self) -> dict[str, float]:
        """Total gain per feature over the members whose trees serve, largest first."""
        members = self._require()
        assert self.schema is not None
        gain = np.zeros(len(self.schema.names))
        for m in members:
            if not m.prior_only:
                gain += m.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.schema.names, map(float, gain), strict=True), key=lambda kv: -kv[1]))

    def _require(self) -> list[_Member]:
        if not self.members:
            raise NotFittedError(type(self).__name__)
        return self.members


class _Member:
    """One LightGBM ``lambdarank`` booster over the schema, boosting from its base source's ranking."""

    def __init__(self, config: RankerConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.booster: Any = None
        self.schema: FeatureSchema | None = None
        self.base: str | None = None  # the source whose ranking the trees correct
        self.prior_only = False  # no tree helped on validation: the ranker is the base source's ranking
        self.prior_score: float | None = None  # validation nDCG of the base's ranking alone
        self.held_users = np.zeros(0, np.int64)  # the users of the queries it early-stopped on
        self.native: Any = None  # the trees as native code (``compile``); None: LightGBM predicts

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["native"] = None  # native code of this machine: compiled again (or read from cache) on load
        return state

    def fit(self, train: RankingData, valid: RankingData | None, schema: FeatureSchema) -> _Member:
        import lightgbm as lgb

        cfg = self.config
        params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [cfg.eval_at],
            "lambdarank_truncation_level": max(cfg.eval_at * 2, 20), "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1,
            "lambda_l2": cfg.lambda_l2, "num_threads": cfg.threads, "seed": self.seed, "deterministic": True,
            "force_row_wise": True, "verbosity": -1,
        }  # fmt: skip
        self.schema = schema
        has_valid = valid is not None and len(valid.groups) > 0
        self.held_users = np.unique(valid.users) if valid is not None else np.zeros(0, np.int64)
        self.base = self._choose_base(valid if has_valid else None)
        categorical = [schema.names.index(c) for c in schema.categorical if c in schema.names]
        data = lgb.Dataset(train.x, train.y, group=train.groups, feature_name=schema.names,
                           categorical_feature=categorical, init_score=self._prior(train.x),
                           free_raw_data=True)  # fmt: skip
        sets, callbacks = [], []
        if has_valid:
            assert valid is not None
            sets = [lgb.Dataset(valid.x, valid.y, group=valid.groups, reference=data, init_score=self._prior(valid.x))]
            callbacks = [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]
        self.booster = lgb.train(params, data, num_boost_round=cfg.max_rounds, valid_sets=sets, callbacks=callbacks)
        self.native = None
        self.prior_only = False
        self.prior_score = None
        if has_valid and self.base is not None:  # no tree at all may be best: keep the prior alone then
            assert valid is not None
            self.prior_score = ndcg(self._prior(valid.x), valid.y, valid.groups, cfg.eval_at)
            best = self.validation_score()
            self.prior_only = best is None or self.prior_score >= best  # (validation_score reads prior_only)
        return self

    def _choose_base(self, valid: RankingData | None) -> str | None:
        cfg = self.config
        assert self.schema is not None
        sources = [n.removesuffix("_rank") for n in self.schema.names if n.endswith("_rank")]
        if cfg.base is None:
            return None
        if cfg.base != "auto":
            if cfg.base not in sources:
                raise ConfigError(f"ranker.base {cfg.base!r} is not a source of this engine; sources: {sources}")
            return cfg.base
        if valid is None or not sources:
            return None
        scores = {s: ndcg(self._prior(valid.x, s), valid.y, valid.groups, cfg.eval_at) for s in sources}
        return max(scores, key=lambda s: scores[s])

    def _prior(self, x: np.ndarray, source: str | None = None) -> np.ndarray | None:
        """``-base_weight · log2(2 + rank)`` in the base source's ranking (rank 10,000 where it did not
        propose the item); None without a base."""
        source = source or self.base
        if source is None:
            return None
        assert self.schema is not None
        rank = x[:, self.schema.names.index(f"{source}_rank")].astype(np.float64)
        return -self.config.base_weight * np.log2(2.0 + np.where(np.isnan(rank), 10_000.0, rank))

    def predict(
        self, x: np.ndarray, wide: np.ndarray | None = None, priors: dict[str | None, Any] | None = None
    ) -> np.ndarray:
        """Scores of rows ``x`` (checked against the schema by the caller); ``wide``: the same rows as float64,
        converted once for every member's native code; ``priors``: each base's prior, shared by the members (the
        two save ~0.05 ms of a three-booster request's ~0.6 ms of trees)."""
        if priors is None:
            prior = self._prior(x)
        elif self.base in priors:
            prior = priors[self.base]
        else:
            prior = priors[self.base] = self._prior(x)
        if self.prior_only:
            return prior
        # one request's rows: one thread (a pool costs more than it saves); a batch's: every configured one
        threads = 1 if len(x) < _ROWS_PER_THREAD else self.config.threads
        if self.native is not None:
            trees = self.native.predict(x if wide is None else wide, n_jobs=threads)
        else:
            trees = self.booster.predict(x, num_threads=threads)
        return trees if prior is None else trees + prior

    def compile(self, cache: str | Path | None = None) -> float:
        """The trees as native code (see :meth:`LightGBMRanker.compile`); the seconds it took."""
        import lleaves

        if self.prior_only:
            return 0.0
        with _COMPILING:  # LLVM's JIT set-up is not safe to run from two threads at once
            clock = time.perf_counter  # a duration, not "now"
            started = clock()
            with tempfile.TemporaryDirectory() as scratch:
                text = Path(scratch) / "ranker.txt"
                text.write_text(self.booster.model_to_string())
                model = lleaves.Model(model_file=str(text))
                # LLVM's small code model: ~12% faster on the benchmark's three boosters × 500 rows; lleaves
                # warns it fails on very large forests, far above what one booster here may grow to
                options = {"fcodemodel": "small" if self.booster.num_trees() <= _SMALL_CODE_TREES else "large"}
                if cache is None:
                    model.compile(**options)
                else:
                    final = Path(cache) / _object_name(text.read_bytes(), options)
                    if final.is_file():
                        model.compile(cache=str(final), **options)
                    else:  # written aside and renamed: a process loading the same artifact never reads half
                        final.parent.mkdir(parents=True, exist_ok=True)
                        with tempfile.TemporaryDirectory(dir=final.parent) as aside:
                            model.compile(cache=str(Path(aside) / final.name), **options)
                            os.replace(Path(aside) / final.name, final)
            self.native = model
            return clock() - started

    def validation_score(self) -> float | None:
        """The best validation nDCG@eval_at reached during training (None without validation queries)."""
        if self.prior_only:
            return self.prior_score
        scores = self.booster.best_score.get("valid_0", {})
        value = scores.get(f"ndcg@{self.config.eval_at}")
        return None if value is None else float(value)


_COMPILING = threading.Lock()
#: LightGBM's predictor uses more than one thread from this many rows on (rows are scored independently)
_ROWS_PER_THREAD = 50_000
#: boosters up to this many trees compile with LLVM's small code model (the most one grows to: max_rounds' 500)
_SMALL_CODE_TREES = 2_000


def _object_name(model_text: bytes, options: dict[str, str]) -> str:
    """The cache file of one model's object code on this CPU, by these lleaves and LLVM versions: lleaves
    reads a cached file without checking it, and code built for another CPU or by another compiler may not
    run here, or not the same."""
    from importlib import metadata

    from llvmlite import binding

    try:
        features = binding.get_host_cpu_features().flatten()
    except RuntimeError:  # not every host reports its features (lleaves compiles without them then)
        features = ""
    built_by = f"{metadata.version('lleaves')} {metadata.version('llvmlite')} {binding.llvm_version_info}"
    digest = hashlib.sha256(model_text + f"{binding.get_host_cpu_name()} {features} {built_by} {options}".encode())
    return f"ranker-{binding.get_host_cpu_name()}-{digest.hexdigest()[:16]}.o"


def ndcg(scores: np.ndarray | None, y: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Mean nDCG@k (gains ``2^y - 1``, as LightGBM's metric) of ranking each query's rows by ``scores``
    (descending; ties in row order). A query without a positive counts 1, as in LightGBM."""
    if scores is None:
        scores = np.zeros(len(y))
    total = 0.0
    start = 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for size in groups:
        gain = 2.0 ** y[start : start + size] - 1.0
        order = np.argsort(-scores[start : start + size], kind="stable")[:k]
        ideal = np.sort(gain)[::-1][:k]
        best = float(ideal @ discount[: len(ideal)])
        total += float(gain[order] @ discount[: len(order)]) / best if best > 0 else 1.0
        start += size
    return total / max(len(groups), 1)
