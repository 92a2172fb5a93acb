"""Freshness: new items get a utility boost that halves with age, and a list shows at least a minimum
number of fresh items when enough fresh candidates exist."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from tastemaker.config import ConfigModel
from tastemaker.reranking.base import Catalog, Feedback, Phase, Request, Reranker, Slate

__all__ = ["FreshBoost", "FreshBoostConfig", "MinFresh", "MinFreshConfig"]


class FreshBoostConfig(ConfigModel):
    stage: Literal["fresh_boost"] = "fresh_boost"
    #: utility × (1 + boost · 0.5^(age / half_life)): a brand-new item's utility is multiplied by 1 + boost
    boost: float = Field(default=0.5, ge=0)
    half_life_days: float = Field(default=7.0, gt=0)


class FreshBoost(Reranker):
    """Items of unknown age, or not yet created at the request's now, get no boost."""

    phase: ClassVar[Phase] = "score"
    config_type = FreshBoostConfig
    config: FreshBoostConfig

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        age = catalog.age_days(slate.items, request.now_us)
        known = ~np.isnan(age) & (np.nan_to_num(age, nan=-1.0) >= 0)
        factor = 1 + self.config.boost * 0.5 ** (np.where(known, age, 0.0) / self.config.half_life_days)
        return slate.with_utility(slate.utility * np.where(known, factor, 1.0))


class MinFreshConfig(ConfigModel):
    stage: Literal["min_fresh"] = "min_fresh"
    #: at least this many items of the first k are fresh...
    min_items: int = Field(default=2, ge=0)
    #: ...an item being fresh up to this many days after its creation
    max_age_days: float = Field(default=14.0, gt=0)


class MinFresh(Reranker):
    """When the first ``k`` hold fewer than ``min_items`` fresh items, the best fresh items from below
    replace the lowest non-fresh ones (which move down, in order)."""

    phase: ClassVar[Phase] = "arrange"
    config_type = MinFreshConfig
    config: MinFreshConfig

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        age = catalog.age_days(slate.items, request.now_us)
        fresh = ~np.isnan(age) & (np.nan_to_num(age, nan=-1.0) >= 0) & (np.nan_to_num(age) <= self.config.max_age_days)
        return promote(slate, fresh, self.config.min_items, request.k)


def promote(slate: Slate, wanted: np.ndarray, minimum: int, k: int) -> Slate:
    """At least ``minimum`` entries where ``wanted`` holds in the first ``k`` positions, if that many
    exist: the best wanted entries from below ``k`` swap in for the lowest unwanted free ones above it."""
    k = min(k, len(slate))
    short = minimum - int(wanted[:k].sum())
    if short <= 0:
        return slate
    below = np.flatnonzero(wanted[k:] & ~slate.fixed[k:])[:short] + k
    above = np.flatnonzero(~wanted[:k] & ~slate.fixed[:k])[::-1][: len(below)]
    if not len(below) or not len(above):
        return slate
    below = below[: len(above)]
    keep = np.ones(len(slate), bool)
    keep[below] = False
    keep[above] = False
    # the first k without the displaced, the promoted at the end of the first k, then the displaced
    top = [i for i in range(k) if keep[i]]
    order = np.r_[top, below, np.sort(above), [i for i in range(k, len(slate)) if keep[i]]].astype(np.int64)
    return slate.reorder(order)
