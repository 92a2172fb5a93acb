"""The re-ranking chain: stages declared in config (``[[rerank.stages]]`` in TOML), built once, applied to
each request's ranked candidates. See :mod:`tastemaker.reranking.base` for the contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from pydantic import Field, model_validator

from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError
from tastemaker.reranking.base import PHASES, Catalog, Feedback, NoFeedback, Request, Reranker, Slate
from tastemaker.reranking.diversity import MMR, MMRConfig, WindowCap, WindowCapConfig
from tastemaker.reranking.exploration import Exploration, ExplorationConfig
from tastemaker.reranking.fairness import ProviderFairness, ProviderFairnessConfig
from tastemaker.reranking.fatigue import Fatigue, FatigueConfig
from tastemaker.reranking.filters import Filter, FilterConfig
from tastemaker.reranking.freshness import FreshBoost, FreshBoostConfig, MinFresh, MinFreshConfig
from tastemaker.reranking.rules import Boost, BoostConfig, Cap, CapConfig, Pin, PinConfig

__all__ = ["Chain", "RerankConfig", "StageConfig", "default_stages"]

StageConfig = Annotated[
    FilterConfig | BoostConfig | CapConfig | PinConfig | MMRConfig | WindowCapConfig | FreshBoostConfig
    | MinFreshConfig | ProviderFairnessConfig | FatigueConfig | ExplorationConfig,
    Field(discriminator="stage"),
]  # fmt: skip

_STAGES: dict[type, type[Reranker]] = {
    stage.config_type: stage
    for stage in (Filter, Boost, Cap, Pin, MMR, WindowCap, FreshBoost, MinFresh, ProviderFairness, Fatigue, Exploration)
}


def default_stages() -> list[StageConfig]:
    """The chain a team gets without configuring one (docs/EVALUATION.md says how it was chosen)."""
    return [
        FilterConfig(),
        FatigueConfig(),
        FreshBoostConfig(),
        WindowCapConfig(by="category", max_items=3, window=5),
        WindowCapConfig(by="provider", max_items=1, window=3),
        ProviderFairnessConfig(),
        ExplorationConfig(),
    ]


class RerankConfig(ConfigModel):
    stages: list[StageConfig] = Field(default_factory=default_stages)
    #: with the request id, seeds the chain's only randomness (exploration)
    seed: int = 0

    @model_validator(mode="after")
    def _phase_order(self) -> RerankConfig:
        ranks = [_rank(s) for s in self.stages]
        for i in range(1, len(ranks)):
            if ranks[i] < max(ranks[:i]):
                stage, phase = self.stages[i].stage, _STAGES[type(self.stages[i])].phase
                raise ValueError(
                    f"stage {stage!r} ({phase}) comes after a stage that must follow it; stages run in phase "
                    f"order ({', '.join(PHASES)}), window caps and provider fairness last among the arrange "
                    "stages (they keep each other's caps), pins before exploration"
                )
        if sum(isinstance(s, ExplorationConfig) for s in self.stages) > 1:
            raise ValueError("at most one exploration stage")
        return self


def _rank(stage: StageConfig) -> int:
    """The stage's place in a chain: phases in order; caps after the other arrange stages; pins first."""
    phase = PHASES.index(_STAGES[type(stage)].phase)
    late = isinstance(stage, WindowCapConfig | ProviderFairnessConfig | ExplorationConfig)
    return 2 * phase + int(late)


class Chain:
    """The configured stages, in order. :meth:`apply` re-ranks one request's slate to its first ``k``."""

    def __init__(self, config: RerankConfig | None = None) -> None:
        self.config = config or RerankConfig()
        self.stages = [_STAGES[type(s)](s) for s in self.config.stages]

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback | None = None) -> Slate:
        feedback = feedback or NoFeedback()
        slate = self._with_wanted(slate.take(slate.items < len(catalog)), catalog)  # items the catalog knows
        for stage in self.stages:
            if not len(slate):
                break
            slate = stage.apply(slate, request, catalog, feedback, self.config.seed)
        return slate.take(np.arange(min(request.k, len(slate))))

    def apply_rows(
        self,
        items: np.ndarray,
        scores: np.ndarray,
        sources: np.ndarray,
        requests: Sequence[Request],
        catalog: Catalog,
        feedback: Feedback | None = None,
    ) -> list[Slate]:
        """A batch: row ``r`` of ``items`` / ``scores`` / ``sources`` (ranked candidates, ``-1`` padded) is
        request ``r``'s; each is re-ranked on its own."""
        if not (len(items) == len(scores) == len(sources) == len(requests)):
            raise ConfigError(f"got {len(items)} rows of candidates for {len(requests)} requests; give one each")
        return [
            self.apply(Slate.of(row, score, source), request, catalog, feedback)
            for row, score, source, request in zip(items, scores, sources, requests, strict=True)
        ]

    def _with_wanted(self, slate: Slate, catalog: Catalog) -> Slate:
        """Items a stage needs (pins) appended when the ranker did not propose them, at the bottom."""
        wanted = [found for stage in self.stages if len(found := stage.wanted(catalog))]
        if not wanted:  # (the usual chain: no pins)
            return slate
        extra = np.setdiff1d(np.concatenate(wanted), slate.items)
        if not len(extra):
            return slate
        low = slate.utility.min() if len(slate) else 1.0
        return Slate(
            np.r_[slate.items, extra], np.r_[slate.utility, np.full(len(extra), low * 1e-3)],
            np.r_[slate.sources, np.full(len(extra), "pinned", dtype=object)],
            np.r_[slate.propensity, np.ones(len(extra))], np.r_[slate.fixed, np.zeros(len(extra), bool)], slate.caps,
        )  # fmt: skip
