"""Layer 2: features over candidates, the point-in-time training set, the LightGBM ranker, the engine."""

from tastemaker.ranking.engine import Engine, EngineConfig, Recommendations
from tastemaker.ranking.features import SCHEMA_VERSION, Context, FeatureBuilder, FeatureConfig, FeatureSchema
from tastemaker.ranking.ltr import LightGBMRanker, RankerConfig, SchemaMismatchError
from tastemaker.ranking.training import LabelConfig, RankingData, SplitConfig, inner_split, training_data

__all__ = [
    "SCHEMA_VERSION", "Context", "Engine", "EngineConfig", "FeatureBuilder", "FeatureConfig", "FeatureSchema",
    "LabelConfig", "LightGBMRanker", "RankerConfig", "RankingData", "Recommendations", "SchemaMismatchError",
    "SplitConfig", "inner_split", "training_data",
]  # fmt: skip
