"""The learned ranker: LightGBM ``lambdarank`` over the feature schema, early-stopped on validation queries."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError, NotFittedError
from tastemaker.ranking.features import FeatureSchema
from tastemaker.ranking.training import RankingData

__all__ = ["LightGBMRanker", "RankerConfig", "SchemaMismatchError"]


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


class LightGBMRanker:
    def __init__(self, config: RankerConfig | None = None, *, seed: int = 42) -> None:
        self.config = config or RankerConfig()
        self.seed = seed
        self.booster = None
        self.schema: FeatureSchema | None = None

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
        categorical = [schema.names.index(c) for c in schema.categorical if c in schema.names]
        data = lgb.Dataset(train.x, train.y, group=train.groups, feature_name=schema.names,
                           categorical_feature=categorical, free_raw_data=True)  # fmt: skip
        sets, callbacks = [], []
        if valid is not None and len(valid.groups):
            sets = [lgb.Dataset(valid.x, valid.y, group=valid.groups, reference=data)]
            callbacks = [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]
        self.booster = lgb.train(params, data, num_boost_round=cfg.max_rounds, valid_sets=sets, callbacks=callbacks)
        self.schema = schema
        return self

    def predict(self, x: np.ndarray, schema: FeatureSchema) -> np.ndarray:
        """Scores of feature rows ``x`` (``rows × features`` in ``schema``'s order)."""
        if self.booster is None or self.schema is None:
            raise NotFittedError(type(self).__name__)
        if schema is not self.schema and (schema.version != self.schema.version or schema.names != self.schema.names):
            raise SchemaMismatchError(
                f"features follow schema v{schema.version} with {len(schema.names)} columns; the ranker was trained "
                f"on v{self.schema.version} with {len(self.schema.names)}: retrain, or serve the matching model"
            )
        return self.booster.predict(x, num_threads=1)

    def validation_score(self) -> float | None:
        """The best validation nDCG@eval_at reached during training (None without validation queries)."""
        if self.booster is None:
            raise NotFittedError(type(self).__name__)
        scores = self.booster.best_score.get("valid_0", {})
        value = scores.get(f"ndcg@{self.config.eval_at}")
        return None if value is None else float(value)

    def importances(self) -> dict[str, float]:
        """Total gain per feature, largest first."""
        if self.booster is None or self.schema is None:
            raise NotFittedError(type(self).__name__)
        gain = self.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.schema.names, map(float, gain), strict=True), key=lambda kv: -kv[1]))
