"""Layer 3's contract: one request's ranked candidates, the stages that re-rank them, and what they read.

A :class:`Slate` is a request's candidates in their current order with a positive *utility* per item: the
chain starts it at ``exp(score - best score)``, which keeps the ranker's order and makes a business rule's
"× 1.2" mean the same to every list (+log 1.2 in the ranker's units), whatever the scores' scale or sign.
Each :class:`Reranker` stage takes a slate and returns a new one; it reads item metadata from a
:class:`Catalog`, the request's options from a :class:`Request`, and logged exposures and engagements
from :class:`Feedback`. Positions are list indices: 0 is the top.

A stage belongs to one phase, and a chain runs its stages in phase order (a config that lists them out of
order is refused before anything runs):

* ``filter`` — drop items (seen, unavailable, blocked, out of the request's scope);
* ``score`` — change utilities (boost, bury, freshness, fatigue); the slate is re-sorted after each;
* ``arrange`` — reorder greedily under constraints (MMR, caps, minimum counts), each seeing the previous
  one's order; window caps and provider fairness come last and accumulate on the slate (``Slate.caps``): a
  later cap keeps the earlier ones where it can;
* ``place`` — put items at fixed positions (pins, then exploration slots) and mark them ``fixed``; a later
  place stage leaves fixed positions alone, and a pin re-keeps the caps around what it moved.

Every item carries the *propensity* with which the policy put it at its position: 1 for a deterministic
chain; the exploration stage, the only random one, computes them for every position of the list. Randomness
comes from ``stream(seed, "rerank", request_id)``: the same seed and request id give the same list.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastemaker.data.snapshot import UNKNOWN_TIME, Snapshot

__all__ = ["Catalog", "Feedback", "NoFeedback", "Phase", "Request", "Reranker", "Seen", "Slate"]

Phase = Literal["filter", "score", "arrange", "place"]
PHASES: tuple[Phase, ...] = ("filter", "score", "arrange", "place")
DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class Slate:
    """A request's candidates in order. ``items`` are catalog indices; ``sources`` the name of the source
    that proposed each most strongly (``"pinned"``, ``"exploration"`` for items a stage put there)."""

    items: np.ndarray
    utility: np.ndarray
    sources: np.ndarray
    propensity: np.ndarray
    fixed: np.ndarray
    #: the window caps of earlier stages (``WindowCapConfig``s): a later cap keeps them where it can
    caps: tuple[Any, ...] = ()

    @classmethod
    def of(cls, items: np.ndarray, scores: np.ndarray, sources: Sequence[str] | np.ndarray) -> Slate:
        """A ranked list (``scores`` from the ranker, any scale; -inf and padding ``-1`` items dropped),
        sorted by score, with utilities ``exp(score - best)`` (at least ``exp(-700)``, so that a boost can
        still lift an item however far below the best it scored)."""
        items = np.asarray(items, np.int64)
        scores = np.asarray(scores, np.float64)
        sources = np.asarray(sources, dtype=object)
        keep = (items >= 0) & np.isfinite(scores)
        items, scores, sources = items[keep], scores[keep], sources[keep]
        order = np.argsort(-scores, kind="stable")
        utility = np.exp(np.maximum(scores[order] - scores[order[0]], -700.0)) if len(order) else np.zeros(0)
        n = len(items)
        return cls(items[order], utility, sources[order], np.ones(n), np.zeros(n, bool))

    def __len__(self) -> int:
        return len(self.items)

    def take(self, index: np.ndarray) -> Slate:
        """The entries at ``index`` (positions or a boolean mask), in that order."""
        return Slate(self.items[index], self.utility[index], self.sources[index], self.propensity[index],
                     self.fixed[index], self.caps)  # fmt: skip

    def sorted(self) -> Slate:
        """Ordered by utility (stable: ties keep their order); fixed entries keep their positions."""
        free = np.flatnonzero(~self.fixed)
        order = np.arange(len(self))
        order[free] = free[np.argsort(-self.utility[free], kind="stable")]
        return self.take(order)

    def reorder(self, order: np.ndarray) -> Slate:
        """The free entries in ``order`` (a permutation of all positions; fixed ones are skipped), fixed
        entries left where they are."""
        order = np.asarray(order, np.int64)
        result = np.arange(len(self))
        result[~self.fixed] = order[~self.fixed[order]]
        return self.take(result)

    def place(self, placements: Sequence[tuple[int, int]], limit: int | None = None) -> Slate:
        """Each ``(entry, target)`` in turn: the entry moved to position ``target`` and fixed there; the other
        free entries then fill the remaining positions in their order. A target already taken (fixed, or by
        an earlier placement) gives the nearest free position below it within the first ``limit``
        positions (the list's length), else the nearest free one above it: a target at or past the end of
        the list ends up among its last positions."""
        n = len(self)
        limit = n if limit is None else min(limit, n)
        taken = self.fixed.copy()
        result = np.where(self.fixed, np.arange(n), -1)
        for entry, target in placements:
            target = min(target, limit - 1, n - 1)
            free = np.flatnonzero(~taken)
            below = free[(free >= target) & (free < limit)]
            above = free[free < target]
            at = below[0] if len(below) else above[-1] if len(above) else free[free >= target][0]
            result[at], taken[at] = entry, True
        placed = np.zeros(n, bool)
        placed[[entry for entry, _ in placements]] = True
        result[result < 0] = np.flatnonzero(~self.fixed & ~placed)
        moved = self.take(result)
        return dataclasses.replace(moved, fixed=moved.fixed | placed[result])

    def with_utility(self, utility: np.ndarray) -> Slate:
        return dataclasses.replace(self, utility=np.asarray(utility, np.float64)).sorted()


@dataclass(frozen=True)
class Seen:
    """What the user consumed: item indices, when they last did, and the event type (``""`` when the
    history does not say, e.g. a snapshot's aggregated pairs)."""

    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    types: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))


@dataclass(frozen=True)
class Request:
    """One list to re-rank: whose, when (injected, never the wall clock), how long, and the request's own
    options. ``exploration_share`` overrides the configured share for this request (0–0.2)."""

    user: int
    now_us: int
    k: int
    request_id: str = ""
    seen: Seen = field(default_factory=Seen)
    include: np.ndarray | None = None
    exclude: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category: str | None = None
    exploration_share: float | None = None


class Feedback(Protocol):
    """Logged exposures and the engagements attributed to them (the serving layer's exposure log; an
    offline evaluation has none). Counts are of events before ``now_us``."""

    def item_counts(self, items: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Per item: times shown and times engaged with after being shown (float arrays)."""
        ...

    def user_ignored(self, user: int, items: np.ndarray, now_us: int, since_us: int) -> np.ndarray:
        """Per item: times shown to ``user`` in ``[since_us, now_us)`` that no engagement followed."""
        ...

    def provider_shares(self, now_us: int, since_us: int) -> dict[str, float]:
        """Each provider's share of the exposures in ``[since_us, now_us)``."""
        ...


class NoFeedback:
    """Nothing logged yet: every count is zero."""

    def item_counts(self, items: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(items)), np.zeros(len(items))

    def user_ignored(self, user: int, items: np.ndarray, now_us: int, since_us: int) -> np.ndarray:
        return np.zeros(len(items))

    def provider_shares(self, now_us: int, since_us: int) -> dict[str, float]:
        return {}


class Catalog:
    """Item metadata as arrays the stages read: categories, provider, creation time, availability,
    attributes, and (optionally) unit item vectors for diversity."""

    def __init__(
        self,
        item_ids: pd.Index,
        categories: pd.Index,
        item_categories: sp.csr_matrix,
        provider: np.ndarray,
        created_us: np.ndarray,
        available: np.ndarray,
        attributes: Sequence[dict[str, Any]] = (),
        vectors: np.ndarray | None = None,
    ) -> None:
        self.item_ids = item_ids
        self.categories = categories
        self.item_categories = sp.csr_matrix(item_categories, dtype=bool)
        names = np.array(["" if p is None or (isinstance(p, float) and np.isnan(p)) else str(p) for p in provider],
                         dtype=object)  # fmt: skip
        self.providers, codes = np.unique(names, return_inverse=True)
        self.provider = codes.astype(np.int64)
        self.created_us = np.asarray(created_us, np.int64)
        self.available = np.asarray(available, bool)
        self.attributes = tuple(attributes)
        self.vectors = None if vectors is None else _unit(np.asarray(vectors, np.float32))
        self._columns: dict[str, np.ndarray] = {}
        self._cache: dict[tuple[object, ...], np.ndarray] = {}
        self._objects: dict[tuple[object, ...], object] = {}

    def cached(self, key: tuple[object, ...], make: Callable[[], np.ndarray]) -> np.ndarray:
        """``make()``, computed once per catalog for ``key``: per-item masks a stage's config implies
        (blocked providers, a rule's condition) cost one pass over the catalog, then a lookup per request."""
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = make()
        return found

    def cached_object(self, key: tuple[object, ...], make: Callable[[], object]) -> object:
        """:meth:`cached` for anything else built once per catalog (e.g. per-item lists)."""
        found = self._objects.get(key)
        if found is None:
            found = self._objects[key] = make()
        return found

    def in_categories(self, names: Sequence[str]) -> np.ndarray:
        """A mask over every item: whether it has any of the named categories (cached)."""

        def make() -> np.ndarray:
            codes = self.category_codes(names)
            if not len(codes):
                return np.zeros(len(self), bool)
            return np.asarray(self.item_categories[:, codes].sum(axis=1)).ravel() > 0

        return self.cached(("categories", *sorted(names)), make)

    @classmethod
    def of(cls, snapshot: Snapshot, vectors: np.ndarray | None = None) -> Catalog:
        return cls(snapshot.item_ids, snapshot.categories, snapshot.item_categories, snapshot.item_provider,
                   snapshot.item_created_at_us, snapshot.item_available, snapshot.item_attributes, vectors)  # fmt: skip

    def __len__(self) -> int:
        return len(self.item_ids)

    def with_items(self, items: pd.DataFrame) -> Catalog:
        """This catalog and ``items`` (new ids, in order; columns as a dataset's items table, all optional
        but ``item_id``): categories the catalog does not know are left out; no item vector (zeros)."""
        n = len(items)
        cats = items["categories"] if "categories" in items else pd.Series([[]] * n)
        rows, cols = [], []
        for row, names in enumerate(cats):
            found = self.categories.get_indexer(list(names) if isinstance(names, list | tuple | np.ndarray) else [])
            cols += found[found >= 0].tolist()
            rows += [row] * int((found >= 0).sum())
        added = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n, len(self.categories)))
        created = items["created_at_us"] if "created_at_us" in items else pd.Series([None] * n)
        created = np.array([UNKNOWN_TIME if pd.isna(c) else int(c) for c in created], np.int64)
        vectors = None if self.vectors is None else np.vstack([self.vectors, np.zeros((n, self.vectors.shape[1]))])
        available = items["available"].fillna(True).to_numpy(bool) if "available" in items else np.ones(n, bool)
        return Catalog(
            self.item_ids.append(pd.Index(items["item_id"].astype(str), dtype=object)), self.categories,
            sp.vstack([self.item_categories, added]).tocsr(),
            np.r_[self.providers[self.provider], items["provider"] if "provider" in items else [None] * n],
            np.r_[self.created_us, created],
            np.r_[self.available, available],
            [*(self.attributes or [{}] * len(self)), *(_as_dict(a) for a in items.get("attributes", [{}] * n))],
            vectors,
        )  # fmt: skip

    def age_days(self, items: np.ndarray, now_us: int) -> np.ndarray:
        """Days since each item's creation (NaN where unknown)."""
        created = self.created_us[items]
        return np.where(created == UNKNOWN_TIME, np.nan, (now_us - created) / DAY_US)

    def category_codes(self, names: Sequence[str]) -> np.ndarray:
        """Indices of the named categories (names the catalog does not have are left out)."""
        found = self.categories.get_indexer(list(names))
        return found[found >= 0]

    def provider_codes(self, names: Sequence[str]) -> np.ndarray:
        at = np.searchsorted(self.providers, np.asarray(list(names), dtype=object))
        at = np.minimum(at, len(self.providers) - 1)
        return at[self.providers[at] == np.asarray(list(names), dtype=object)] if len(names) else at[:0]

    def attribute(self, key: str) -> np.ndarray:
        """The attribute ``key`` of every item as an object array (None where an item lacks it), cached."""
        if key not in self._columns:
            column = np.full(len(self), None, dtype=object)
            for i, attrs in enumerate(self.attributes):
                if attrs and key in attrs:
                    column[i] = attrs[key]
            self._columns[key] = column
        return self._columns[key]


class Reranker(ABC):
    """One stage of the chain. Subclasses set ``phase`` and ``config_type`` and implement :meth:`apply`; a
    stage never adds an item that is not in the slate it was given."""

    phase: ClassVar[Phase]
    #: the stage's typed config; the constructor only stores one (the defaults when given none)
    config_type: ClassVar[type[Any]]

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_type()

    @abstractmethod
    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate: ...

    def wanted(self, catalog: Catalog) -> np.ndarray:
        """Items the chain must add to every slate before filtering (default: none)."""
        return np.zeros(0, np.int64)


def _as_dict(value: object) -> dict[str, Any]:
    """An item's attributes as a dict: a missing or malformed entry (NaN, text) is none."""
    return dict(value) if isinstance(value, dict) else {}


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)
