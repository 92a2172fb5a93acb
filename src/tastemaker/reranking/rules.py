"""Business rules a team states in config, without code: conditions on item attributes, and what to do
with the items that meet them — boost or bury (multiply the utility), cap (at most N in a list), or pin an
item at a position.

A :class:`Condition` is ``field op value``: ``field`` is ``category``, ``provider``, ``item_id``,
``source``, ``age_days`` or ``attributes.KEY``; ``op`` one of ``== != in not_in < <= > >=``. For
``category`` (an item has several) ``==`` / ``in`` hold when any of the item's categories matches.
In TOML: ``boost = [{when = {field = "category", op = "==", value = "Documentary"}, factor = 1.2}]``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from tastemaker.config import ConfigModel
from tastemaker.reranking.base import Catalog, Feedback, Phase, Request, Reranker, Slate
from tastemaker.reranking.diversity import keep_caps

__all__ = ["Boost", "BoostConfig", "Cap", "CapConfig", "Condition", "Pin", "PinConfig"]


class Condition(ConfigModel):
    field: str
    op: Literal["==", "!=", "in", "not_in", "<", "<=", ">", ">="] = "=="
    value: Any

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        known = ("category", "provider", "item_id", "source", "age_days")
        if self.field not in known and not (self.field.startswith("attributes.") and len(self.field) > 11):
            raise ValueError(f"unknown field {self.field!r}; use one of {', '.join(known)} or attributes.KEY")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"{self.op!r} needs a list value, got {self.value!r}")
        if self.op in ("<", "<=", ">", ">=") and not isinstance(self.value, int | float):
            raise ValueError(f"{self.op!r} needs a number, got {self.value!r}")
        if self.field == "category" and self.op in ("<", "<=", ">", ">="):
            raise ValueError("category compares with ==, !=, in or not_in")
        return self

    def holds(self, slate: Slate, request: Request, catalog: Catalog) -> np.ndarray:
        """Per item of ``slate``: whether the condition holds (an item lacking the attribute: it does not)."""
        values = self.value if isinstance(self.value, list) else [self.value]
        if self.field == "age_days":
            return _compare(catalog.age_days(slate.items, request.now_us), self.op, values)
        if self.field == "source":
            return _compare(slate.sources, self.op, values)
        key = ("condition", self.field, self.op, repr(self.value))
        return catalog.cached(key, lambda: self._over_catalog(catalog, values))[slate.items]

    def _over_catalog(self, catalog: Catalog, values: list[Any]) -> np.ndarray:
        """The condition for every item of the catalog (fields that do not change between requests)."""
        if self.field == "category":
            hit = catalog.in_categories([str(v) for v in values])
            return hit if self.op in ("==", "in") else ~hit
        if self.field == "provider":
            column: np.ndarray = catalog.providers[catalog.provider]
        elif self.field == "item_id":
            column = np.asarray(catalog.item_ids, dtype=object)
        else:
            column = catalog.attribute(self.field.removeprefix("attributes."))
        return _compare(column, self.op, values)


def _compare(column: np.ndarray, op: str, values: list[Any]) -> np.ndarray:
    if op in ("==", "in", "!=", "not_in"):
        hit = np.isin(column.astype(str), [str(v) for v in values]) & np.array([c is not None for c in column], bool)
        return hit if op in ("==", "in") else ~hit
    numbers = np.array([_number(c) for c in column], np.float64)
    known = ~np.isnan(numbers)
    bound = float(values[0])
    filled = np.where(known, numbers, 0.0)
    compared = {"<": filled < bound, "<=": filled <= bound, ">": filled > bound, ">=": filled >= bound}[op]
    return known & compared


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


class BoostRule(ConfigModel):
    when: Condition
    #: the utility of matching items is multiplied by this (above 1 boosts, below 1 buries)
    factor: float = Field(gt=0)


class BoostConfig(ConfigModel):
    stage: Literal["boost"] = "boost"
    rules: list[BoostRule] = Field(default_factory=list)


class Boost(Reranker):
    """Boost or bury: every rule whose condition holds multiplies the item's utility by its factor."""

    phase: ClassVar[Phase] = "score"
    config_type = BoostConfig
    config: BoostConfig

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        utility = slate.utility.copy()
        for rule in self.config.rules:
            utility[rule.when.holds(slate, request, catalog)] *= rule.factor
        return slate.with_utility(utility)


class CapRule(ConfigModel):
    when: Condition
    #: at most this many matching items in the list's first ``k``
    max: int = Field(ge=0)


class CapConfig(ConfigModel):
    stage: Literal["cap"] = "cap"
    rules: list[CapRule] = Field(default_factory=list)


class Cap(Reranker):
    """Caps per attribute: past a rule's ``max`` matching items, the next matching ones move below the
    list's first ``k`` (kept as reserves, in order), and the best non-matching items move up."""

    phase: ClassVar[Phase] = "arrange"
    config_type = CapConfig
    config: CapConfig

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        rules = self.config.rules
        holds = np.array([rule.when.holds(slate, request, catalog) for rule in rules]).reshape(len(rules), -1)
        limits = np.array([rule.max for rule in rules])
        counts = np.zeros(len(rules), np.int64)
        over = np.zeros(len(slate), bool)
        kept = 0
        # walk the list: an item every rule it meets still has room for takes a place and uses that room
        for entry in range(len(slate)):
            if kept >= request.k:
                break
            meets = holds[:, entry]
            if not slate.fixed[entry] and (counts[meets] >= limits[meets]).any():
                over[entry] = True
                continue
            counts += meets
            kept += 1
        if not over.any():
            return slate
        # the capped items leave the top k: everything else keeps its order, the capped follow it
        return slate.reorder(np.r_[np.flatnonzero(~over), np.flatnonzero(over)])


class PinRule(ConfigModel):
    item_id: str
    position: int = Field(ge=0)


class PinConfig(ConfigModel):
    stage: Literal["pin"] = "pin"
    pins: list[PinRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> PinConfig:
        positions = [p.position for p in self.pins]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two pins share a position: {sorted(positions)}")
        items = [p.item_id for p in self.pins]
        if len(set(items)) != len(items):
            raise ValueError(f"an item is pinned twice: {sorted(items)}")
        return self


class Pin(Reranker):
    """Pins an item at a position. The chain adds pinned items to every slate before the filters run, so
    a pinned item that is filtered for this request (seen, unavailable, blocked) is not shown; pins at or
    beyond the list's end take its last free positions (in the order of their positions)."""

    phase: ClassVar[Phase] = "place"
    config_type = PinConfig
    config: PinConfig

    def wanted(self, catalog: Catalog) -> np.ndarray:
        found = self._indices(sorted(self.config.pins, key=lambda p: p.position), catalog)
        return found[found >= 0].astype(np.int64)

    def _indices(self, pins: list[PinRule], catalog: Catalog) -> np.ndarray:
        """The pinned items' catalog indices (-1: unknown), looked up once per catalog."""
        ids = [p.item_id for p in pins]
        return catalog.cached(("pins", *ids), lambda: catalog.item_ids.get_indexer(ids))

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        pins = sorted(self.config.pins, key=lambda p: p.position)  # a lower position has the first claim
        found = self._indices(pins, catalog)
        placements = []
        for pin, item in zip(pins, found, strict=True):
            at = np.flatnonzero((slate.items == item) & ~slate.fixed) if item >= 0 else []
            if len(at):
                placements.append((int(at[0]), min(pin.position, request.k - 1)))
        placed = slate.place(placements, limit=request.k)
        # moving an item out of its place brings its neighbours together: the caps are kept again around
        # the pins (exploration, after pins, only inserts: the ranked items keep their neighbours)
        return keep_caps(placed, request, catalog) if placed.caps and placements else placed
