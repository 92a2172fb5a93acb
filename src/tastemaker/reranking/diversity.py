"""Diversity: maximal marginal relevance over item vectors, and sliding-window caps on categories and
providers ("at most N of one category in any W consecutive slots").

Both are greedy passes over the list's first ``depth × k`` items that fill the first ``k`` positions;
the rest of the slate follows in its order. Window caps accumulate: each one records itself on the slate
and a later cap (another window cap, or the provider-share cap of fairness) keeps every earlier one too,
giving up the latest first when no remaining item keeps them all. The chain runs caps after the other
arrange stages, and before the place stages: pins and exploration slots come after and may break a cap
(a chain without them keeps it whenever enough other items exist).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from tastemaker.config import ConfigModel
from tastemaker.reranking.base import Catalog, Feedback, Phase, Request, Reranker, Slate

__all__ = ["MMR", "MMRConfig", "WindowCap", "WindowCapConfig"]


class MMRConfig(ConfigModel):
    stage: Literal["mmr"] = "mmr"
    #: weight of relevance against novelty: 1 keeps the ranker's order, 0 only spreads
    lambda_: float = Field(default=0.7, ge=0, le=1, alias="lambda")
    #: items considered: the first ``depth × k``
    depth: float = Field(default=3.0, ge=1)

    model_config = {**ConfigModel.model_config, "populate_by_name": True}


class MMR(Reranker):
    """Each next position takes the item maximising ``λ · relevance - (1 - λ) · max(0, cosines)`` to the items
    already placed, relevance being the utility scaled to [0, 1] over the items considered. Needs the
    catalog's item vectors; without them the slate is left as it is."""

    phase: ClassVar[Phase] = "arrange"
    config_type = MMRConfig
    config: MMRConfig

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        if catalog.vectors is None or len(slate) < 2:
            return slate
        lam = self.config.lambda_
        pool = np.flatnonzero(~slate.fixed)[: int(np.ceil(self.config.depth * request.k))]
        k = min(request.k, len(slate))
        vectors = catalog.vectors[slate.items[pool]]
        utility = slate.utility[pool]
        span = utility.max() - utility.min()
        relevance = (utility - utility.min()) / span if span > 0 else np.ones(len(pool))
        # the penalty is the largest cosine to an item already placed, counted from 0: an item unlike all of
        # them (cosine <= 0) is not rewarded for it, only not penalised
        closest = np.zeros(len(pool))
        for position in np.flatnonzero(slate.fixed[:k]):  # fixed items on top count as placed
            np.maximum(closest, vectors @ catalog.vectors[slate.items[position]], out=closest)
        similar = (1 - lam) * (vectors @ vectors.T)  # every pair once: each step then reads one row
        closest *= 1 - lam
        gain = lam * relevance
        picks = []
        for _ in range(min(k - int(slate.fixed[:k].sum()), len(pool))):
            value = gain - closest
            best = int(np.argmax(value))
            gain[best] = -np.inf  # chosen
            picks.append(pool[best])
            np.maximum(closest, similar[best], out=closest)
        return slate.reorder(_order(len(slate), picks))


class WindowCapConfig(ConfigModel):
    stage: Literal["window_cap"] = "window_cap"
    #: ``category``: an item counts once for each of its categories; ``provider``: for its provider
    by: Literal["category", "provider"] = "category"
    #: at most ``max_items`` items sharing a value in any ``window`` consecutive positions
    max_items: int = Field(default=2, ge=1)
    window: int = Field(default=5, ge=2)
    depth: float = Field(default=5.0, ge=1)


class WindowCap(Reranker):
    """Fills the first ``k`` positions in order, each with the best remaining item that keeps every value
    at most ``max_items`` times in the last ``window`` positions; when no remaining item can, the best
    remaining one (the cap holds whenever enough other items exist)."""

    phase: ClassVar[Phase] = "arrange"
    config_type = WindowCapConfig
    config: WindowCapConfig

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        return keep_caps(dataclasses.replace(slate, caps=(*slate.caps, self.config)), request, catalog)

    def values(self, items: np.ndarray, catalog: Catalog) -> np.ndarray:
        """``(items, values)`` bool over the values these items have: their categories, or their provider
        (items without a provider share none)."""
        lists = _catalog_values(self.config.by, catalog)[0]
        rows = [lists[i] for i in np.asarray(items).tolist()]
        used = {v: column for column, v in enumerate(sorted({v for row in rows for v in row}))}
        out = np.zeros((len(rows), len(used)), bool)
        for row, found in enumerate(rows):
            out[row, [used[v] for v in found]] = True
        return out


def keep_caps(slate: Slate, request: Request, catalog: Catalog) -> Slate:
    """The free entries of the first ``k`` positions re-arranged so that every cap on the slate holds where
    it can (fixed entries stay and count); see the module docstring."""
    rules = slate.caps
    k = min(request.k, len(slate))
    top = slate.items[:k].tolist()
    if all(_holds(rule, top, _catalog_values(rule.by, catalog)[0]) for rule in reversed(rules)):
        return slate  # the list already keeps every cap (the newest, likeliest broken, checked first)
    pool = np.flatnonzero(~slate.fixed)[: int(np.ceil(max(r.depth for r in rules) * request.k))]
    # a sequential greedy pass over a few hundred entries: plain Python over small lists beats numpy calls
    # per position (each position usually takes one of the first entries it looks at). Per rule, the values
    # at their limit in the window ending here are a set: an entry fits when it has none of them, one
    # C-level ``isdisjoint`` per rule
    items = slate.items.tolist()
    lists = [_catalog_values(rule.by, catalog)[0] for rule in rules]
    counts = [[0] * _catalog_values(rule.by, catalog)[1] for rule in rules]
    limits = [rule.max_items for rule in rules]
    full: list[set[int]] = [set() for _ in rules]  # per rule: the values at their limit
    pool_items = [items[e] for e in pool.tolist()]
    pool_list = pool.tolist()
    chosen = [False] * len(pool_list)
    first = 0  # every pool entry before this one is chosen
    # per number of rules kept (the first ``kept``): every remaining entry before ``blocked[kept]`` breaks one of
    # them. Values only join the full sets while the list grows, so it still does until a value leaves a full
    # set of one of those rules; and an entry breaking the first ``kept`` rules breaks the first ``kept + 1``
    blocked = [0] * (len(rules) + 1)
    placed: list[int] = []  # catalog items, by position
    picks: list[int] = []

    def first_fitting(kept: int, start: int) -> int:  # the best remaining entry from ``start`` keeping the
        checks = list(zip(full[:kept], lists[:kept], strict=True))  # first ``kept`` rules, or -1
        for j in range(start, len(chosen)):
            if chosen[j]:
                continue
            item = pool_items[j]
            for values_full, values in checks:
                if not values_full.isdisjoint(values[item]):
                    break
            else:
                return j
        return -1

    for position in range(k):
        for r, rule in enumerate(rules):
            if len(placed) >= rule.window:  # the position leaving the window that ends here
                count, limit = counts[r], limits[r]
                for v in lists[r][placed[-rule.window]]:
                    count[v] -= 1
                    if count[v] < limit and v in full[r]:
                        full[r].discard(v)
                        blocked[r + 1 :] = [0] * (len(rules) - r)
        if slate.fixed[position]:
            item = items[position]
        else:
            while first < len(chosen) and chosen[first]:
                first += 1
            if first == len(chosen):
                break
            pick = first  # when no remaining entry keeps even the first rule: the best remaining
            if any(full):
                for kept in range(len(rules), 0, -1):  # every rule, then give up the latest first
                    found = first_fitting(kept, max(first, *blocked[1 : kept + 1]))
                    blocked[kept] = len(chosen) if found < 0 else found
                    if found >= 0:
                        pick = found
                        break
            chosen[pick] = True
            item = pool_items[pick]
            picks.append(pool_list[pick])
        placed.append(item)
        for r in range(len(rules)):
            count, limit = counts[r], limits[r]
            for v in lists[r][item]:
                count[v] += 1
                if count[v] >= limit:
                    full[r].add(v)
    return slate.reorder(_order(len(slate), picks))


def _holds(rule: WindowCapConfig, items: list[int], values: Sequence[Sequence[int]]) -> bool:
    """Whether ``items`` (a list, in order) keep ``rule``: no value more than ``max_items`` times in any
    ``window`` consecutive positions (``values``: each catalog item's values)."""
    counts: dict[int, int] = {}
    for position, item in enumerate(items):
        if position >= rule.window:
            for v in values[items[position - rule.window]]:
                counts[v] -= 1
        for v in values[item]:
            count = counts.get(v, 0) + 1
            if count > rule.max_items:
                return False
            counts[v] = count
    return True


def _catalog_values(by: str, catalog: Catalog) -> tuple[tuple[tuple[int, ...], ...], int]:
    """Every catalog item's values (category codes, or its provider's code; none without a provider) as
    plain tuples, built once per catalog: the greedy pass reads a few hundred of them per request. Tuples of
    ints, not lists: the garbage collector stops tracking them at its next pass, where 100k lists per catalog
    made every full collection walk them (55–90 ms with a 100k-item catalog, in the middle of requests)."""
    found = catalog.cached_object(("window-values", by), lambda: _values_of(by, catalog))
    return found  # type: ignore[no-any-return]


def _values_of(by: str, catalog: Catalog) -> tuple[tuple[tuple[int, ...], ...], int]:
    if by == "category":
        rows = catalog.item_categories
        flat, bounds = rows.indices.tolist(), rows.indptr.tolist()
        return tuple(tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)), rows.shape[1]
    none = set(np.flatnonzero(catalog.providers == "").tolist())
    return tuple(() if v in none else (v,) for v in catalog.provider.tolist()), len(catalog.providers)


def _order(n: int, picks: list[int]) -> np.ndarray:
    """A permutation of ``range(n)``: ``picks`` first, in that order, then the rest in theirs."""
    rest = np.ones(n, bool)
    rest[picks] = False
    return np.r_[np.asarray(picks, np.int64), np.flatnonzero(rest)]
