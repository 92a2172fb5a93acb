"""Metrics: offline ranking and beyond-accuracy measures."""

from tastemaker.metrics.offline import (
    average_precision,
    catalog_coverage,
    exposure_gini,
    hit_rate,
    hits,
    intra_list_diversity,
    ndcg,
    novelty,
    precision,
    recall,
    reciprocal_rank,
)

__all__ = [
    "average_precision",
    "catalog_coverage",
    "exposure_gini",
    "hit_rate",
    "hits",
    "intra_list_diversity",
    "ndcg",
    "novelty",
    "precision",
    "recall",
    "reciprocal_rank",
]
