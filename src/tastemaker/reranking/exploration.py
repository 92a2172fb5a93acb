"""Exploration slots: a share of the list goes to items the policy is unsure about, with propensities.

For a list of ``k``: ``m = ⌊share · k⌋`` slots, at positions drawn uniformly among the non-top ones
(``protect_top`` and up, not fixed). The slots are filled by Thompson sampling from the ``pool`` best free
candidates below the list: each draws ``θ ~ Beta(prior_alpha + engaged, prior_beta + shown - engaged)``
from its logged exposures (:class:`~tastemaker.reranking.base.Feedback`), and the ``m`` largest draws take
the slots, the largest the highest slot. An item shown rarely has a wide posterior and is drawn high
often; one never shown draws from the prior: under-exposed and new items are favoured. The ranked items
fill the other positions in their order.

Propensities: the policy is run ``draws`` more times from the same stream (slot positions and posterior
draws, the exploit order fixed), and each shown item's propensity is the share of runs, the served one
included, that put it at its position — a Monte Carlo estimate in ``[1/(draws+1), 1]``, never 0, which is
what IPS / SNIPS need. Positions no run can change (fixed, or above every possible slot) get exactly 1.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from tastemaker._random import stream
from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError
from tastemaker.reranking.base import Catalog, Feedback, Phase, Request, Reranker, Slate

__all__ = ["MAX_SHARE", "Exploration", "ExplorationConfig"]

#: the largest exploration share a config or a request may ask for
MAX_SHARE = 0.2


class ExplorationConfig(ConfigModel):
    stage: Literal["exploration"] = "exploration"
    share: float = Field(default=0.15, ge=0, le=MAX_SHARE)
    #: the first positions are never exploration slots
    protect_top: int = Field(default=3, ge=0)
    #: candidates the slots are drawn from: the best this many free items below the list
    pool: int = Field(default=50, ge=1)
    prior_alpha: float = Field(default=1.0, gt=0)
    prior_beta: float = Field(default=1.0, gt=0)
    #: extra runs of the policy that estimate the propensities
    draws: int = Field(default=127, ge=1)


class Exploration(Reranker):
    phase: ClassVar[Phase] = "place"

    def __init__(self, config: ExplorationConfig | None = None) -> None:
        self.config = config or ExplorationConfig()

    def share(self, request: Request) -> float:
        share = self.config.share if request.exploration_share is None else request.exploration_share
        if not 0 <= share <= MAX_SHARE:
            raise ConfigError(f"exploration share must be within 0–{MAX_SHARE}, got {share!r}")
        return float(share)

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        cfg = self.config
        k = min(request.k, len(slate))
        free = np.flatnonzero(~slate.fixed[:k])  # positions the policy fills
        eligible = np.flatnonzero(free >= cfg.protect_top)  # indices into free
        pool = np.flatnonzero(~slate.fixed)
        pool = pool[pool >= k][: cfg.pool]
        # never more than the share: a list of 10 at 15% explores 1 slot, one of 30 explores 4
        m = min(int(np.floor(self.share(request) * request.k + 1e-9)), len(eligible), len(pool))
        if m == 0:
            return slate
        rng = stream(seed, "rerank", request.request_id)
        runs = cfg.draws + 1
        # slot positions: the first m of a random order of the eligible ones, per run
        slots = np.zeros((runs, len(free)), bool)
        picked = np.argsort(rng.random((runs, len(eligible))), axis=1)[:, :m]
        slots[np.arange(runs)[:, None], eligible[picked]] = True
        shown, engaged = feedback.item_counts(slate.items[pool], request.now_us)
        engaged = np.minimum(engaged, shown)
        theta = _beta(rng, cfg.prior_alpha + engaged, cfg.prior_beta + shown - engaged, runs)
        best = np.argpartition(-theta, m - 1, axis=1)[:, :m]
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(theta, best, axis=1), axis=1), axis=1)
        chosen = pool[best]  # entries, best draw first
        # what every run shows at each free position: its explored entries in the slots (in order), the
        # ranked free entries in the others
        ranked = np.flatnonzero(~slate.fixed)[: len(free)]
        slot_rank = np.cumsum(slots, axis=1) - 1
        other_rank = np.cumsum(~slots, axis=1) - 1
        shows = np.where(slots, np.take_along_axis(chosen, np.clip(slot_rank, 0, m - 1), axis=1), ranked[other_rank])
        served = shows[0]
        chance = (shows == served).mean(axis=0)
        result = slate.place([(int(e), int(p)) for e, p in zip(chosen[0], free[slots[0]], strict=True)])
        propensity = result.propensity.copy()
        propensity[free] = chance
        sources = result.sources.copy()
        sources[free[slots[0]]] = "exploration"
        fixed = result.fixed.copy()
        fixed[free[slots[0]]] = True
        return Slate(result.items, result.utility, sources, propensity, fixed)


def _beta(rng: np.random.Generator, alpha: np.ndarray, beta: np.ndarray, runs: int) -> np.ndarray:
    """``(runs, items)`` Beta draws as ``X / (X + Y)`` of two gamma draws: several times faster than
    numpy's ``beta`` at the shape 1 of an unexposed item (where gamma is an exponential)."""
    x = rng.standard_gamma(np.broadcast_to(alpha, (runs, len(alpha))))
    y = rng.standard_gamma(np.broadcast_to(beta, (runs, len(beta))))
    return x / np.maximum(x + y, np.finfo(np.float64).tiny)
