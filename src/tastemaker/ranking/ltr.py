"""The learned ranker: LightGBM ``lambdarank`` over the feature schema, early-stopped on validation queries.

The trees boost from a prior: the ranking of one source (by default the one whose own ranking scores best
on the validation queries), as ``-base_weight · log2(2 + rank)``. LightGBM takes it as the initial score,
so every tree learns a correction to that source's order, and early stopping keeps only corrections that
help on validation. A two-stage model trained on a thinner inner split otherwise has to relearn its best
source's ranking from a few hundred queries, and may lose to it; with the prior it starts where that
source ends. If no tree helps, the ranker is the prior alone.

Serving can run the trees compiled to native code (``compile``, with lleaves: the same model, the same
scores, about 3× faster on one request's 500 candidates than LightGBM's own predictor, whose per-call
overhead dominates at that size; benchmarks/ranking.py). The compiled code is for the machine that
compiled it: it is cached beside an artifact under a name that says which CPU and compiler it is for, and
never pickled.
"""

from __future__ import annotations

import hashlib
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


class LightGBMRanker:
    def __init__(self, config: RankerConfig | None = None, *, seed: int = 42) -> None:
        self.config = config or RankerConfig()
        self.seed = seed
        self.booster = None
        self.schema: FeatureSchema | None = None
        self.base: str | None = None  # the source whose ranking the trees correct
        self.prior_only = False  # no tree helped on validation: the ranker is the base source's ranking
        self.prior_score: float | None = None  # validation nDCG of the base's ranking alone
        self._compiled: Any = None  # the trees as native code (``compile``); None: LightGBM predicts

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None  # native code of this machine: compiled again (or read from cache) on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_compiled": None, **state})

    def fit(self, train: RankingData, valid: RankingData | None, schema: FeatureSchema) -> LightGBMRanker:
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
        self._compiled = None
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
        source = source or getattr(self, "base", None)
        if source is None:
            return None
        assert self.schema is not None
        rank = x[:, self.schema.names.index(f"{source}_rank")].astype(np.float64)
        return -self.config.base_weight * np.log2(2.0 + np.where(np.isnan(rank), 10_000.0, rank))

    def predict(self, x: np.ndarray, schema: FeatureSchema) -> np.ndarray:
        """Scores of feature rows ``x`` (``rows × features`` in ``schema``'s order)."""
        if self.booster is None or self.schema is None:
            raise NotFittedError(type(self).__name__)
        if schema is not self.schema and (schema.version != self.schema.version or schema.names != self.schema.names):
            raise SchemaMismatchError(
                f"features follow schema v{schema.version} with {len(schema.names)} columns; the ranker was trained "
                f"on v{self.schema.version} with {len(self.schema.names)}: retrain, or serve the matching model"
            )
        prior = self._prior(x)
        if self.prior_only:
            return prior
        compiled = self._compiled
        trees = compiled.predict(x, n_jobs=1) if compiled is not None else self.booster.predict(x, num_threads=1)
        return trees if prior is None else trees + prior

    def compile(self, cache: str | Path | None = None) -> float:
        """Compile the trees to native code for ``predict`` (lleaves); returns the seconds it took.

        With a ``cache`` folder, the object code is read from it when this CPU's is there (milliseconds) and
        written to it otherwise (about a second per 30 trees). Nothing to do, 0 s, when serving ignores the
        trees (``prior_only``)."""
        import lleaves

        if self.booster is None:
            raise NotFittedError(type(self).__name__)
        if self.prior_only:
            return 0.0
        with _COMPILING:  # LLVM's JIT set-up is not safe to run from two threads at once
            clock = time.perf_counter  # a duration, not "now"
            started = clock()
            with tempfile.TemporaryDirectory() as scratch:
                text = Path(scratch) / "ranker.txt"
                text.write_text(self.booster.model_to_string())
                model = lleaves.Model(model_file=str(text))
                if cache is None:
                    model.compile()
                else:
                    final = Path(cache) / _object_name(text.read_bytes())
                    if final.is_file():
                        model.compile(cache=str(final))
                    else:  # written aside and renamed: a process loading the same artifact never reads half
                        final.parent.mkdir(parents=True, exist_ok=True)
                        with tempfile.TemporaryDirectory(dir=final.parent) as aside:
                            model.compile(cache=str(Path(aside) / final.name))
                            os.replace(Path(aside) / final.name, final)
            self._compiled = model
            return clock() - started

    @property
    def compiled(self) -> bool:
        """True when ``predict`` runs the trees as native code."""
        return self._compiled is not None

    def validation_score(self) -> float | None:
        """The best validation nDCG@eval_at reached during training (None without validation queries)."""
        if self.booster is None:
            raise NotFittedError(type(self).__name__)
        if self.prior_only:
            return self.prior_score
        scores = self.booster.best_score.get("valid_0", {})
        value = scores.get(f"ndcg@{self.config.eval_at}")
        return None if value is None else float(value)

    def importances(self) -> dict[str, float]:
        """Total gain per feature, largest first."""
        if self.booster is None or self.schema is None:
            raise NotFittedError(type(self).__name__)
        gain = self.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.schema.names, map(float, gain), strict=True), key=lambda kv: -kv[1]))


_COMPILING = threading.Lock()


def _object_name(model_text: bytes) -> str:
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
    digest = hashlib.sha256(model_text + f"{binding.get_host_cpu_name()} {features} {built_by}".encode())
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
