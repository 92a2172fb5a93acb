"""Exploration slots: a share of the list goes to items the policy is unsure about, with propensities.

For a list of ``k``: ``m = ⌊share · k⌋`` slots, at positions drawn uniformly among the non-top ones
(``protect_top`` and up, not fixed). The slots are filled by Thompson sampling from the ``pool`` best free
candidates below the list: each draws ``θ ~ Beta(prior_alpha + engaged, prior_beta + shown - engaged)``
from its logged exposures (:class:`~tastemaker.reranking.base.Feedback`), and the ``m`` largest draws take
the slots, the largest the highest slot. An item shown rarely has a wide posterior and is drawn high
often; one never shown draws from the prior: under-exposed and new items are favoured. The ranked items
fill the other positions in their order.

Propensities, for every shown item: the chance that the policy puts that item at that position. The slot
positions are a uniform draw, so a ranked item's chance (that exactly as many slots fall above it, and
none on it) and a slot's chance of being a slot of its rank are exact hypergeometric counts; an explored
item's is that times the chance its posterior draw ranks where it did among the pool's, estimated from
``draws`` further Thompson draws of the same stream (not counting the served one), floored at
``1/(draws + 1)`` so that it is never 0. Positions nothing random can change (fixed, or above
``protect_top``) get exactly 1.
"""

from __future__ import annotations

import dataclasses
from math import comb
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
        slots = np.sort(eligible[rng.permutation(len(eligible))[:m]])  # indices into free, top to bottom
        shown, engaged = feedback.item_counts(slate.items[pool], request.now_us)
        engaged = np.minimum(engaged, shown)
        # the served draw, then ``draws`` more from the same stream for the Thompson part of the propensities
        # (drawn after it: the served list does not depend on how many)
        alpha, beta = cfg.prior_alpha + engaged, cfg.prior_beta + shown - engaged
        theta = np.vstack([_beta(rng, alpha, beta, 1), _beta(rng, alpha, beta, cfg.draws)])
        best = np.argpartition(-theta, m - 1, axis=1)[:, :m]
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(theta, best, axis=1), axis=1), axis=1)
        rank_counts = np.zeros((len(pool), m))
        np.add.at(rank_counts, (best[1:], np.broadcast_to(np.arange(m), best[1:].shape)), 1)
        thompson = np.maximum(rank_counts[best[0], np.arange(m)] / cfg.draws, 1 / (cfg.draws + 1))
        chance = _slot_chances(len(free), eligible, slots, m)
        chance[slots] *= thompson
        result = slate.place([(int(e), int(p)) for e, p in zip(pool[best[0]], free[slots], strict=True)])
        propensity = result.propensity.copy()
        propensity[free] = chance
        sources = result.sources.copy()
        sources[free[slots]] = "exploration"
        return dataclasses.replace(result, sources=sources, propensity=propensity)


def _slot_chances(n_free: int, eligible: np.ndarray, slots: np.ndarray, m: int) -> np.ndarray:
    """For each free position of the served list, the exact chance that the policy puts there what it
    served: for a ranked entry, that the same number of slots fell above it and none on it; for a slot,
    that it is a slot with as many slots above it (the Thompson part is multiplied in by the caller).
    Slots are a uniform ``m``-subset of the ``E`` eligible positions: hypergeometric counts."""
    total = comb(len(eligible), m)
    is_slot = np.zeros(n_free, bool)
    is_slot[slots] = True
    is_eligible = np.zeros(n_free, bool)
    is_eligible[eligible] = True
    above = np.cumsum(is_slot) - is_slot  # slots above each position in the served list
    before = np.cumsum(is_eligible) - is_eligible  # eligible positions above it
    after = len(eligible) - before - is_eligible  # eligible positions below it
    out = np.empty(n_free)
    for q in range(n_free):
        a, b, c = int(above[q]), int(before[q]), int(after[q])
        # q itself is a slot (its rank among slots fixed by a) or it is not (and a slots fell above)
        below = m - a - int(is_slot[q])
        out[q] = comb(b, a) * comb(c, below) / total if below >= 0 else 0.0
    return out


def _beta(rng: np.random.Generator, alpha: np.ndarray, beta: np.ndarray, runs: int) -> np.ndarray:
    """``(runs, items)`` Beta draws as ``X / (X + Y)`` of two gamma draws: several times faster than
    numpy's ``beta`` at the shape 1 of an unexposed item (where gamma is an exponential)."""
    x = rng.standard_gamma(np.broadcast_to(alpha, (runs, len(alpha))))
    y = rng.standard_gamma(np.broadcast_to(beta, (runs, len(beta))))
    return x / np.maximum(x + y, np.finfo(np.float64).tiny)
