"""Merge: every source proposes up to its quota, duplicates collapse, and each candidate keeps its provenance.

By default (``rule = "fusion"``) the merged order is reciprocal-rank fusion weighted by quota: an item's key
is the sum, over the sources that proposed it, of ``quota / (fusion_k + rank)`` (shares of the quotas'
sum), and each source's first ``reserve × quota`` items go before all others, so every source is heard.
Under ``rule = "quota"`` sources interleave in proportion to their quotas: an item's key is its best
``rank / quota`` over the sources that proposed it, so source A's 10th of 200 and source B's 5th of 100
tie, and every source's first ``quota`` items (key < 1) come before any item past a quota. Either way
sources propose ``depth × quota`` items, so where they agree (duplicates collapse) the list still fills to
``total``.
Provenance is kept per (candidate, source) — score and rank, ``NaN`` / -1 where the source did not
propose it — and becomes the ranker's features in the next layer, with ``seed_items`` on request (the
item-to-item source's "because you liked X": ``sequence`` by default, else ``item_knn``).

Cold start: a user with no history is not sent to sources that need one (``needs_history``); their quota
goes to the sources that serve everyone (popular, trending, fresh), in proportion to those sources' own
quotas, so a new user still gets ``total`` candidates, steered by onboarding attributes.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, field_validator, model_validator

from tastemaker.candidates.base import CandidateSource, History, take_rows
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from tastemaker.candidates.item_knn import ItemKNN

__all__ = ["SOURCES", "CandidateGenerator", "Candidates", "MergeConfig", "make_source"]


def _sources() -> dict[str, Callable[[int], CandidateSource]]:
    from tastemaker.candidates.als import ALS
    from tastemaker.candidates.content import ContentSource
    from tastemaker.candidates.ease import EASE
    from tastemaker.candidates.fresh import FreshSource
    from tastemaker.candidates.item_knn import ItemKNN, ItemKNNConfig
    from tastemaker.candidates.popular import PopularConfig, PopularSource

    # items taken close after (and, a third as much, before) the user's newest ones in other users' histories
    # (validation, docs/EVALUATION.md: 0.1621 nDCG@10 alone under ``temporal``, above EASE's 0.1362; 0.0943
    # under ``recommenders``, whose random split has no "next")
    sequence = ItemKNNConfig(
        similarity="sequence", neighbours=1_000, sequence_window=20, sequence_decay=0.9, sequence_forward=3.0,
        sequence_power=0.35, recent_items=50, half_life_items=5.0,
    )  # fmt: skip
    return {
        "als": lambda seed: ALS(seed=seed),
        "item_knn": lambda seed: ItemKNN(),
        "sequence": lambda seed: ItemKNN(sequence),
        "ease": lambda seed: EASE(),
        "content": lambda seed: ContentSource(seed=seed),
        "popular": lambda seed: PopularSource(PopularConfig(half_life_days=None)),
        "trending": lambda seed: PopularSource(PopularConfig(half_life_days=7.0)),
        "fresh": lambda seed: FreshSource(),
    }


#: the item-to-item sources whose neighbour of a history item is a reason ("because you liked X"), by preference
ITEM_TO_ITEM = ("sequence", "item_knn")

#: source name -> factory taking a seed (the names a MergeConfig's quotas may use)
SOURCES: dict[str, Callable[[int], CandidateSource]] = _sources()


class MergeConfig(ConfigModel):
    quotas: dict[str, int] = Field(
        default_factory=lambda: {
            "als": 200,
            "ease": 150,
            "sequence": 100,
            "content": 20,
            "popular": 20,
            "trending": 5,
            "fresh": 5,
        }  # fmt: skip
    )
    #: at most this many merged candidates per user
    total: int = Field(default=500, ge=1)
    #: each source proposes up to ``depth × quota`` items; past its quota an item ranks behind every
    #: source's quota, so when sources overlap the list still fills to ``total`` in the same proportions
    depth: float = Field(default=5.0, ge=1.0)
    #: ``quota``: interleave by rank / quota; ``fusion``: order by reciprocal-rank fusion weighted by quota
    rule: Literal["quota", "fusion"] = "fusion"
    #: the fusion's rank offset: larger flattens it (a source's 200th counts more against its 1st), so more
    #: items several sources propose outrank one source's head; 200 was chosen on validation (docs/EVALUATION.md)
    fusion_k: float = Field(default=200.0, gt=0)
    #: under ``fusion``, each source's first ``reserve × quota`` items are placed before all others
    reserve: float = Field(default=0.1, ge=0, le=1)
    #: per source, fields of its config set over its defaults, e.g. ``{"sequence": {"half_life_items": 20}}``
    #: (``[merge.settings.sequence]`` in TOML); the source is built with them when this config is made, so its
    #: config and its constructor check them then
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("quotas")
    @classmethod
    def _known(cls, quotas: dict[str, int]) -> dict[str, int]:
        for name, quota in quotas.items():
            if name not in SOURCES:
                raise UnknownNameError("candidate source", name, list(SOURCES))
            if quota < 1:
                raise ValueError(f"quota of {name!r} must be at least 1, got {quota}")
        if not quotas:
            raise ValueError("at least one source needs a quota")
        return quotas

    @field_validator("settings")
    @classmethod
    def _settable(cls, settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each source's settings as its config reads them (``"20"`` becomes 20.0, so equal settings hash
        alike); an unknown source, a field its config refuses or a value its constructor refuses fails here."""
        parsed = {}
        for name, fields in settings.items():
            config = make_source(name, 0, fields).config  # type: ignore[attr-defined]
            parsed[name] = {field: getattr(config, field) for field in fields}
        return parsed

    @model_validator(mode="after")
    def _set_sources_have_quotas(self) -> MergeConfig:
        unused = sorted(set(self.settings) - set(self.quotas))
        if unused:
            raise ValueError(f"settings for {unused}, which have no quota: give them one, or drop their settings")
        return self


def make_source(name: str, seed: int, settings: dict[str, Any] | None = None) -> CandidateSource:
    """An unfitted source of :data:`SOURCES` by name, built with ``settings`` set over its config's defaults."""
    if name not in SOURCES:
        raise UnknownNameError("candidate source", name, list(SOURCES))
    source = SOURCES[name](seed)
    if not settings:
        return source
    config: Any = getattr(source, "config", None)
    if config is None:
        raise ConfigError(f"candidate source {name!r} has no settings to set; got {sorted(settings)}")
    try:
        config = type(config).from_dict({**config.model_dump(), **settings})
        kind: Any = type(source)
        # built anew (not the config swapped in), so whatever the source's constructor checks is checked
        return kind(config, seed=seed) if "seed" in inspect.signature(kind).parameters else kind(config)
    except ConfigError as exc:
        raise ConfigError(f"merge.settings.{name}: {exc}") from None


@dataclass(frozen=True)
class Candidates:
    """Merged candidates of a batch of users, with per-source provenance (see the module docstring)."""

    items: np.ndarray  # (users, total) item indices in merged order, -1 padded
    sources: tuple[str, ...]
    scores: np.ndarray  # (users, total, sources) the source's score, NaN where it did not propose the item
    ranks: np.ndarray  # (users, total, sources) the source's rank from 0, -1 where it did not propose it
    #: (users, total) the history item behind an item-to-item proposal (``ITEM_TO_ITEM``), -1 if none; None
    #: unless asked for
    seed_items: np.ndarray | None
    quotas: tuple[int, ...]

    def take(self, rows: np.ndarray) -> Candidates:
        """The candidates of the users at ``rows`` (positions in this batch)."""
        seeds = None if self.seed_items is None else self.seed_items[rows]
        return dataclasses.replace(self, items=self.items[rows], scores=self.scores[rows], ranks=self.ranks[rows],
                                   seed_items=seeds)  # fmt: skip

    @property
    def primary(self) -> np.ndarray:
        """Index into ``sources`` of the source that ranked each candidate best (by rank / quota); -1 pads."""
        norm = np.where(self.ranks >= 0, self.ranks / np.asarray(self.quotas, np.float64), np.inf)
        return np.where(self.items >= 0, np.argmin(norm, axis=2), -1)


class CandidateGenerator(CandidateSource):
    """All configured sources behind the one interface; ``candidates`` returns the merged order."""

    name = "candidates"
    needs_history = False

    def __init__(self, config: MergeConfig | None = None, *, seed: int = 42, sources: dict | None = None) -> None:
        self.config = config or MergeConfig()
        self.seed = seed
        self._given = sources

    def plan(self, snapshot: Snapshot) -> tuple[dict[str, CandidateSource], dict[str, str]]:
        """The unfitted sources ``fit`` would fit on ``snapshot``, and the skipped ones with the reason."""
        given = self._given or {}
        sources, skipped = {}, {}
        active = int((np.diff(snapshot.matrix.tocsc().indptr) > 0).sum())  # what sizes EASE's matrix
        for name in self.config.quotas:
            source = given.get(name) or make_source(name, self.seed, self.config.settings.get(name))
            limit = getattr(getattr(source, "config", None), "max_items", None)
            if limit is not None and active > limit:
                skipped[name] = f"{active:,} items with interactions is above its limit of {limit:,}"
                continue
            sources[name] = source
        return sources, skipped

    def warm_from(self, previous: CandidateGenerator | Callable[[str], CandidateSource | None]) -> CandidateGenerator:
        """Let each source that can (``warm_from``) start its next fit from ``previous``'s source of the same
        name: ``previous`` fitted on part of the same snapshot (same indices), e.g. the ranker's inner split.
        A callable is asked for each such source by name (it may wait for that source's fit; None: start
        cold) only after the sources that cannot warm-start are fitted, so those overlap with it."""
        self._warm = previous
        return self

    def on_source_fitted(self, callback: Callable[[str, CandidateSource], object]) -> CandidateGenerator:
        """Call ``callback(name, source)`` as each source of the next fit is fitted (sources are fitted one
        after another, in config order): another fit can warm-start from it before this one ends."""
        self._notify = callback
        return self

    def _fit(self, snapshot: Snapshot) -> None:
        planned, self.skipped = self.plan(snapshot)
        warm, self._warm = getattr(self, "_warm", None), None
        notify, self._notify = getattr(self, "_notify", None), None
        later = [name for name, source in planned.items() if warm is not None and hasattr(source, "warm_from")]
        fitted = {}
        for name, source in planned.items():
            if name not in later:
                fitted[name] = source.fit(snapshot)
                if notify is not None:
                    notify(name, fitted[name])
        for name in later:
            assert warm is not None
            previous = warm(name) if callable(warm) else warm.sources.get(name)
            if previous is not None:
                planned[name].warm_from(previous)  # type: ignore[attr-defined]
            fitted[name] = planned[name].fit(snapshot)
            if notify is not None:
                notify(name, fitted[name])
        self.sources: dict[str, CandidateSource] = {name: fitted[name] for name in planned}  # config order
        if not self.sources:
            raise ConfigError(f"no candidate source could be fitted: {self.skipped}")

    def fold_in(self, history: History) -> CandidateGenerator:
        super().fold_in(history)
        for source in self.sources.values():
            source.fold_in(history)
        return self

    def add_items(self, items: pd.DataFrame) -> np.ndarray:
        got = super().add_items(items)
        for source in self.sources.values():
            source.add_items(items)
        return got

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        merged = self.generate(users, exclude=exclude, total=n)
        key = np.where(merged.items >= 0, -np.arange(merged.items.shape[1], dtype=np.float32)[None, :], -np.inf)
        return merged.items, key.astype(np.float32)

    @property
    def item_to_item_name(self) -> str | None:
        """The first of :data:`ITEM_TO_ITEM` this generator has, or None."""
        return next((name for name in ITEM_TO_ITEM if name in self.sources), None)

    @property
    def item_to_item(self) -> ItemKNN | None:
        """The source :attr:`item_to_item_name` names, or None."""
        name = self.item_to_item_name
        return None if name is None else self.sources[name]  # type: ignore[return-value]

    def because(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """For ``items`` (one row per user, -1 padded), the history item the item-to-item source
        (:data:`ITEM_TO_ITEM`) would name as the reason ("because you liked X"), -1 where it has none. Ask
        for the few items shown, not all candidates: the cost grows with history × items."""
        source = self.item_to_item
        if source is None:
            return np.full(np.shape(items), -1, np.int64)
        return _seeds(source, np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))

    def generate(
        self,
        users: np.ndarray,
        *,
        exclude: sp.csr_matrix | None = None,
        total: int | None = None,
        seeds: bool = False,
    ) -> Candidates:
        """Merged candidates with provenance for ``users`` (indices in this generator's user space)."""
        _ = self.snapshot
        users = np.asarray(users, dtype=np.int64)
        total = total or self.config.total
        exclude = self._widen(exclude, len(users))
        warm = self.has_history(users)
        names = tuple(self.sources)
        quotas = np.array([self.config.quotas[name] for name in names], dtype=np.float64)
        universal = np.array([not self.sources[name].needs_history for name in names])
        spare = quotas[~universal].sum()
        boost = quotas * universal / max(quotas[universal].sum(), 1.0) * spare  # cold users' extra per source

        def ask(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            width = int(min(np.ceil((quotas[s] + boost[s]) * self.config.depth), total))
            rows = np.arange(len(users)) if universal[s] else np.flatnonzero(warm)
            if len(rows) == len(users):  # everyone asks this source (the one-user request's case)
                ids, scores = self.sources[names[s]].candidates(users, width, exclude=exclude)
            else:
                ids = np.full((len(users), width), -1, np.int64)
                scores = np.full((len(users), width), -np.inf, np.float32)
                if len(rows):
                    banned = take_rows(exclude, rows).csr()
                    ids[rows], scores[rows] = self.sources[names[s]].candidates(users[rows], width, exclude=banned)
            limit = np.where(warm, quotas[s], quotas[s] + boost[s]).astype(np.int64)
            cut = np.ceil(limit * self.config.depth)
            if (cut < width).any():  # a warm user's list stops at depth × quota even where the width is wider
                ids = np.where(np.arange(width)[None, :] >= cut[:, None], -1, ids)
            return ids, scores, limit

        parts = [ask(s) for s in range(len(names))]
        fusion = self.config.fusion_k if self.config.rule == "fusion" else None
        chunks = [
            _merge([tuple(a[i : i + _MERGE_ROWS] for a in part) for part in parts], names, total,
                   tuple(int(q) for q in quotas), fusion, self.config.reserve)
            for i in range(0, max(len(users), 1), _MERGE_ROWS)
        ]  # fmt: skip
        merged = chunks[0] if len(chunks) == 1 else _concat(chunks)
        reasoner = self.item_to_item_name
        if not seeds or reasoner is None:
            return merged
        proposed = merged.ranks[:, :, names.index(reasoner)] >= 0
        found = self.because(users, np.where(proposed, merged.items, -1))
        return dataclasses.replace(merged, seed_items=found)


#: users merged per sort: one sort over a big batch's every proposal is several times slower than many small ones
_MERGE_ROWS = 256


def _concat(chunks: list[Candidates]) -> Candidates:
    """Chunks of users merged apart, as one (every chunk is ``total`` wide)."""
    return dataclasses.replace(
        chunks[0],
        items=np.concatenate([c.items for c in chunks]),
        scores=np.concatenate([c.scores for c in chunks]),
        ranks=np.concatenate([c.ranks for c in chunks]),
    )


def _seeds(source: CandidateSource, users: np.ndarray, ids: np.ndarray) -> np.ndarray:
    because = getattr(source, "because", None)
    if because is None or not (ids >= 0).any():
        return np.full(ids.shape, -1, np.int64)
    return np.asarray(because(users, ids), dtype=np.int64)


def _merge(
    parts: list[tuple[np.ndarray, ...]],
    names: tuple[str, ...],
    total: int,
    quotas: tuple[int, ...],
    fusion_k: float | None = None,
    reserve: float = 0.0,
) -> Candidates:
    n_users = parts[0][0].shape[0]
    # every source's proposals side by side, then one pass over the proposed (user, column) pairs
    widths = [ids.shape[1] for ids, _, _ in parts]
    column_source = np.repeat(np.arange(len(parts)), widths)
    column_rank = np.concatenate([np.arange(width) for width in widths])
    proposed = np.concatenate([ids for ids, _, _ in parts], axis=1)
    row, column = np.nonzero(proposed >= 0)
    item, src, rank = proposed[row, column], column_source[column], column_rank[column]
    score = np.concatenate([scores for _, scores, _ in parts], axis=1)[row, column]
    limit = np.stack([limit for _, _, limit in parts], axis=1)[row, src]
    key = rank / np.maximum(limit, 1)
    reserved = rank < np.ceil(limit * reserve)
    # one group per (user, item), found with one sort of a combined key; under ``quota`` its position is the
    # best key over the sources that proposed it
    pair = row * (int(item.max(initial=0)) + 1) + item
    order = np.lexsort((src, key, pair))  # within a group by key: fused sums add up in one fixed order
    first = np.ones(len(order), bool)
    first[1:] = pair[order][1:] != pair[order][:-1]
    group = np.cumsum(first) - 1
    heads = order[first]  # any entry of a group: they share user and item
    head_key = np.minimum.reduceat(key[order], np.flatnonzero(first)) if len(order) else key[heads]
    if fusion_k is not None:  # reciprocal-rank fusion: Σ over proposing sources of share / (fusion_k + rank)
        share = np.asarray(quotas, np.float64)[src] / sum(quotas)
        head_key = -np.bincount(group, weights=(share / (fusion_k + rank))[order])
        # each source's reserved head goes first (fused order among them), so every source is heard
        head_key = head_key - 10.0 * (np.bincount(group, weights=reserved[order].astype(float)) > 0)
    by_position = np.lexsort((item[heads], head_key, row[heads]))  # merged order within each user
    head_row = row[heads][by_position]
    starts = np.searchsorted(head_row, np.arange(n_users))
    slot_sorted = np.arange(len(by_position)) - starts[head_row]
    slot = np.empty(len(heads), np.int64)
    slot[by_position] = slot_sorted
    entry_slot = slot[group]
    entry_row = row[order]
    keep = entry_slot < total

    items = np.full((n_users, total), -1, np.int64)
    head_keep = slot < total
    items[row[heads][head_keep], slot[head_keep]] = item[heads][head_keep]
    scores = np.full((n_users, total, len(names)), np.nan, np.float32)
    ranks = np.full((n_users, total, len(names)), -1, np.int32)
    where = (entry_row[keep], entry_slot[keep], src[order][keep])
    scores[where] = score[order][keep]
    ranks[where] = rank[order][keep]
    return Candidates(items, names, scores, ranks, None, quotas)
