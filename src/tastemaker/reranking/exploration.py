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
item's is that times the chance its posterior draw ranks where it did among the pool's, estimated over
``draws`` further draws of the others from the same stream (not counting the served one), each giving the
exact chance, from the item's Beta CDF, that its own draw falls at that rank among them: unbiased and
above 0. Positions nothing random can change (fixed, or above
``protect_top``) get exactly 1.
"""

from __future__ import annotations

import dataclasses
from math import comb
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from scipy.special import betainc

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
    draws: int = Field(default=31, ge=1)


class Exploration(Reranker):
    phase: ClassVar[Phase] = "place"
    config_type = ExplorationConfig
    config: ExplorationConfig

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
        served = _beta(rng, alpha, beta, 1)[0]
        order = np.argsort(-served, kind="stable")[:m]  # pool indices of the explored items, best draw first
        thompson = _rank_chances(_beta(rng, alpha, beta, cfg.draws), order, alpha, beta)
        chance = _slot_chances(len(free), eligible, slots, m)
        chance[slots] *= thompson
        result = slate.place([(int(e), int(p)) for e, p in zip(pool[order], free[slots], strict=True)])
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
    is_slot = np.zeros(n_free, bool)
    is_slot[slots] = True
    is_eligible = np.zeros(n_free, bool)
    is_eligible[eligible] = True
    above = (np.cumsum(is_slot) - is_slot).tolist()  # slots above each position in the served list
    before = (np.cumsum(is_eligible) - is_eligible).tolist()  # eligible positions above it
    after = (len(eligible) - np.cumsum(is_eligible)).tolist()  # eligible positions below it
    total = comb(len(eligible), m)
    # the position itself is a slot (its rank among the slots set by those above) or it is not; a few dozen
    # exact integer counts are quicker in plain Python than vectorised floats
    return np.array([comb(b, a) * comb(c, m - a - int(s)) / total if m - a - int(s) >= 0 else 0.0
                     for a, b, c, s in zip(above, before, after, is_slot.tolist(), strict=True)])  # fmt: skip


def _rank_chances(draws: np.ndarray, explored: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """For the pool item ``explored[r]``: the chance that its posterior draw ranks r-th among the pool's,
    averaged over ``draws`` of the others (Rao-Blackwellised: in each, the chance its own Beta draw falls
    between the others' r-th and (r+1)-th largest, read from its CDF). Unbiased, and never 0 where a
    posterior has mass there: a far steadier estimate than counting how often it ranked r-th."""
    m, runs = len(explored), len(draws)
    width = min(m + 1, draws.shape[1])
    top = np.argsort(-draws, axis=1)[:, :width]
    values = np.take_along_axis(draws, top, axis=1)  # each run's largest draws, descending
    # per explored item (axis 0), each run's largest draws of the others: the run's, with the item's own draw
    # taken out where it is among them (positions from its own on read the next one)
    mine = np.cumsum(top[None, :, :] == np.asarray(explored)[:, None, None], axis=2) > 0
    others = np.where(mine, np.roll(values, -1, axis=1)[None], values[None])[:, :, :m]  # (m, runs, m)
    if width <= m:  # a pool of m items: the last "other" does not exist
        others[:, :, width - 1 :] = 0.0
    ranks = np.arange(m)
    bounds = np.empty((m, 2, runs))
    bounds[0, 0] = 1.0  # the r-th item lies between the others' (r-1)-th and r-th largest draws
    bounds[1:, 0] = others[ranks[1:], :, ranks[1:] - 1]
    bounds[:, 1] = others[ranks, :, ranks]
    cdf = betainc(alpha[explored][:, None, None], beta[explored][:, None, None], bounds)
    return np.maximum((cdf[:, 0] - cdf[:, 1]).mean(axis=1), np.finfo(np.float64).tiny)


def _beta(rng: np.random.Generator, alpha: np.ndarray, beta: np.ndarray, runs: int) -> np.ndarray:
    """``(runs, items)`` Beta draws as ``X / (X + Y)`` of two gamma draws: several times faster than
    numpy's ``beta`` at the shape 1 of an unexposed item (where gamma is an exponential)."""
    x = rng.standard_gamma(np.broadcast_to(alpha, (runs, len(alpha))))
    y = rng.standard_gamma(np.broadcast_to(beta, (runs, len(beta))))
    return x / np.maximum(x + y, np.finfo(np.float64).tiny)
