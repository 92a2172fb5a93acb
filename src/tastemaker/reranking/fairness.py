"""Provider fairness: no provider above a share of a list, and a floor for long-tail providers — the
providers outside the head that took ``head_share`` of recent exposures (from the exposure log)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from tastemaker.config import ConfigModel
from tastemaker.reranking.base import DAY_US, Catalog, Feedback, Phase, Request, Reranker, Slate
from tastemaker.reranking.diversity import WindowCap, WindowCapConfig, keep_caps
from tastemaker.reranking.freshness import promote

__all__ = ["ProviderFairness", "ProviderFairnessConfig"]


class ProviderFairnessConfig(ConfigModel):
    stage: Literal["provider_fairness"] = "provider_fairness"
    #: no provider takes more than this share of the first k positions (at least one item each)
    max_share: float = Field(default=0.3, gt=0, le=1)
    #: at least this share of the first k comes from long-tail providers, when the candidates have them
    long_tail_floor: float = Field(default=0.0, ge=0, le=1)
    #: the head: the most-exposed providers that together took this share of recent exposures
    head_share: float = Field(default=0.8, gt=0, lt=1)
    window_days: float = Field(default=28.0, gt=0)


class ProviderFairness(Reranker):
    phase: ClassVar[Phase] = "arrange"
    config_type = ProviderFairnessConfig
    config: ProviderFairnessConfig

    def __init__(self, config: ProviderFairnessConfig | None = None) -> None:
        super().__init__(config)
        self._head: tuple[object, Catalog, np.ndarray] | None = None  # the last shares read, and their tail mask

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        cfg = self.config
        k = min(request.k, len(slate))
        if cfg.long_tail_floor > 0:
            minimum = int(np.ceil(cfg.long_tail_floor * k))
            slate = promote(slate, self.long_tail(slate.items, request, catalog, feedback), minimum, k)
        cap = max(1, int(np.floor(cfg.max_share * k)))
        if cap >= k:  # no share cap: the earlier caps are kept again around what the floor promoted
            return keep_caps(slate, request, catalog) if slate.caps else slate
        # a cap over the whole list is a window as long as the list
        whole = WindowCap(WindowCapConfig(by="provider", max_items=cap, window=max(k, 2)))
        return whole.apply(slate, request, catalog, feedback, seed)

    def long_tail(self, items: np.ndarray, request: Request, catalog: Catalog, feedback: Feedback) -> np.ndarray:
        """Per item: whether its provider is outside the recent exposures' head (no log: every provider is)."""
        shares = feedback.provider_shares(request.now_us, request.now_us - int(self.config.window_days * DAY_US))
        cached = self._head
        if cached is None or cached[0] is not shares or cached[1] is not catalog:  # shares change once a window
            ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
            head, total = [], 0.0
            for name, share in ranked:
                if total >= self.config.head_share:
                    break
                head.append(name)
                total += share
            tail = ~np.isin(np.arange(len(catalog.providers)), catalog.provider_codes(head))
            tail &= catalog.providers != ""
            cached = self._head = (shares, catalog, tail)
        return cached[2][catalog.provider[items]]
