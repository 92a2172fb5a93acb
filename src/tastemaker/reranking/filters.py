"""Filters: items a list must not show — already consumed, unavailable, blocked, outside the item-age bounds
or outside the request's own scope (``include``, ``exclude``, ``category``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from tastemaker.candidates.base import member
from tastemaker.config import ConfigModel
from tastemaker.reranking.base import DAY_US, Catalog, Feedback, Phase, Request, Reranker, Slate

__all__ = ["Filter", "FilterConfig"]


class FilterConfig(ConfigModel):
    stage: Literal["filter"] = "filter"
    #: drop what the user already consumed: events of these types (empty: of any type)
    seen_types: list[str] = Field(default_factory=list)
    #: False keeps consumed items (a domain where repeats are the point)
    seen: bool = True
    #: a consumed item may come back this many days after the user's last event on it (None: never)
    cooldown_days: float | None = Field(default=None, gt=0)
    unavailable: bool = True
    blocked_items: list[str] = Field(default_factory=list)
    blocked_providers: list[str] = Field(default_factory=list)
    blocked_categories: list[str] = Field(default_factory=list)
    #: keep items at least / at most this many days old (items of unknown age are kept)
    min_age_days: float | None = None
    max_age_days: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> FilterConfig:
        if self.min_age_days is not None and self.max_age_days is not None and self.min_age_days > self.max_age_days:
            raise ValueError(f"min_age_days {self.min_age_days} is above max_age_days {self.max_age_days}")
        return self


class Filter(Reranker):
    phase: ClassVar[Phase] = "filter"
    config_type = FilterConfig
    config: FilterConfig

    def __init__(self, config: FilterConfig | None = None) -> None:
        super().__init__(config)
        self._key = ("filter", self.config.model_dump_json())

    def allowed(self, items: np.ndarray, request: Request, catalog: Catalog) -> np.ndarray:
        """Per item: whether this filter lets it through."""
        cfg = self.config
        keep = (items >= 0) & (items < len(catalog))
        items = np.where(keep, items, 0)
        if cfg.seen and len(request.seen.items):
            keep &= ~member(items, self._consumed(request))
        keep &= catalog.cached(self._key, lambda: self._static(catalog))[items]
        if cfg.min_age_days is not None or cfg.max_age_days is not None:
            age = catalog.age_days(items, request.now_us)
            known = ~np.isnan(age)
            if cfg.min_age_days is not None:
                keep &= ~known | (np.nan_to_num(age) >= cfg.min_age_days)
            if cfg.max_age_days is not None:
                keep &= ~known | (np.nan_to_num(age) <= cfg.max_age_days)
        if request.include is not None:
            keep &= member(items, np.asarray(request.include, np.int64))
        if len(request.exclude):
            keep &= ~member(items, np.asarray(request.exclude, np.int64))
        if request.category is not None:
            keep &= catalog.in_categories([request.category])[items]
        return keep

    def _static(self, catalog: Catalog) -> np.ndarray:
        """Items this config lets through whoever asks: available, not blocked."""
        cfg = self.config
        keep = catalog.available.copy() if cfg.unavailable else np.ones(len(catalog), bool)
        blocked = catalog.item_ids.get_indexer(cfg.blocked_items)
        keep[blocked[blocked >= 0]] = False
        keep &= ~np.isin(catalog.provider, catalog.provider_codes(cfg.blocked_providers))
        keep &= ~catalog.in_categories(cfg.blocked_categories)
        return keep

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        return slate.take(self.allowed(slate.items, request, catalog))

    def _consumed(self, request: Request) -> np.ndarray:
        seen, cfg = request.seen, self.config
        counts = np.ones(len(seen.items), bool)
        if cfg.seen_types:
            counts &= np.isin(seen.types.astype(str), cfg.seen_types) | (seen.types.astype(str) == "")
        if cfg.cooldown_days is not None:
            counts &= seen.last_us > request.now_us - cfg.cooldown_days * DAY_US
        return np.asarray(seen.items, np.int64)[counts]
