"""Invariants of the re-ranking chain over random candidate lists and configs (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tastemaker.reranking import Catalog, Chain, Request, RerankConfig, Seen, Slate
from tastemaker.reranking.diversity import WindowCap, WindowCapConfig
from tastemaker.reranking.exploration import ExplorationConfig
from tastemaker.reranking.filters import Filter, FilterConfig
from tastemaker.reranking.rules import BoostConfig, BoostRule, Condition, PinConfig, PinRule

DAY_US = 86_400 * 1_000_000
NOW = 1_000 * DAY_US
CATEGORIES = list("abcdef")
PROVIDERS = ["p0", "p1", "p2", "p3", None]


def catalog(n: int, seed: int) -> Catalog:
    rng = np.random.default_rng(seed)
    cats = rng.random((n, len(CATEGORIES))) < 0.35
    created = NOW - (rng.random(n) * 60 * DAY_US).astype(np.int64)
    return Catalog(
        pd.Index([f"i{i}" for i in range(n)]), pd.Index(CATEGORIES), sp.csr_matrix(cats),
        np.array([PROVIDERS[i % len(PROVIDERS)] for i in range(n)], dtype=object), created,
        rng.random(n) < 0.9, [{"length": int(i % 9)} for i in range(n)], rng.normal(size=(n, 6)),
    )  # fmt: skip


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Catalog, Slate, Request, RerankConfig]:
    n = draw(st.integers(5, 120))
    seed = draw(st.integers(0, 2**16))
    cat = catalog(n, seed)
    rng = np.random.default_rng(seed + 1)
    size = draw(st.integers(0, n))
    items = rng.permutation(n)[:size]
    slate = Slate.of(items, rng.normal(size=size), np.array(["als", "ease"], dtype=object)[rng.integers(0, 2, size)])
    k = draw(st.integers(1, 40))
    seen = rng.permutation(n)[: draw(st.integers(0, 10))]
    request = Request(
        user=0, now_us=NOW, k=k, request_id=draw(st.text(max_size=8)),
        seen=Seen(seen, np.full(len(seen), NOW - DAY_US), np.full(len(seen), "", dtype=object)),
        exclude=rng.permutation(n)[: draw(st.integers(0, 5))],
        category=draw(st.sampled_from([None, "a", "zz"])),
        exploration_share=draw(st.sampled_from([None, 0.0, 0.1, 0.2])),
    )  # fmt: skip
    filters = FilterConfig(
        blocked_items=[f"i{i}" for i in rng.permutation(n)[: draw(st.integers(0, 5))]],
        blocked_providers=draw(st.lists(st.sampled_from(["p0", "p3"]), max_size=1)),
        blocked_categories=draw(st.lists(st.sampled_from(["b", "f"]), max_size=1)),
        max_age_days=draw(st.sampled_from([None, 30.0])),
    )  # fmt: skip
    pins = [
        PinRule(item_id=f"i{i}", position=int(p))
        for i, p in zip(rng.permutation(n)[:3], rng.permutation(12)[:3], strict=False)
    ]
    stages: list = [filters]
    if draw(st.booleans()):
        stages.append(BoostConfig(rules=[BoostRule(when=Condition(field="category", value="c"), factor=3.0)]))
    stages.append(draw(st.sampled_from([
        WindowCapConfig(max_items=1, window=3), WindowCapConfig(by="provider", max_items=2, window=4),
        {"stage": "mmr", "lambda": 0.5},
    ])))  # fmt: skip
    if draw(st.booleans()):
        stages.append(PinConfig(pins=pins[: draw(st.integers(1, 3))]))
    stages.append(ExplorationConfig(share=draw(st.sampled_from([0.0, 0.1, 0.15, 0.2])), pool=20, draws=63))
    return cat, slate, request, RerankConfig.from_dict({"stages": [_dump(s) for s in stages], "seed": seed})


def _dump(stage: object) -> dict:
    return stage if isinstance(stage, dict) else stage.model_dump(by_alias=True)  # type: ignore[attr-defined]


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds())
def test_a_filtered_item_never_appears(world: tuple[Catalog, Slate, Request, RerankConfig]) -> None:
    cat, slate, request, config = world
    chain = Chain(config)
    out = chain.apply(slate, request, cat)
    assert len(out) <= request.k
    assert len(np.unique(out.items)) == len(out)  # no item twice
    for stage in chain.stages:
        if isinstance(stage, Filter):
            assert stage.allowed(out.items, request, cat).all()


@SETTINGS
@given(worlds())
def test_propensities_are_probabilities_and_the_list_is_reproducible(
    world: tuple[Catalog, Slate, Request, RerankConfig],
) -> None:
    cat, slate, request, config = world
    first = Chain(config).apply(slate, request, cat)
    again = Chain(config).apply(slate, request, cat)
    assert ((first.propensity > 0) & (first.propensity <= 1)).all()
    assert np.array_equal(first.items, again.items)
    assert np.array_equal(first.propensity, again.propensity)


@SETTINGS
@given(worlds())
def test_pinned_items_sit_at_their_positions(world: tuple[Catalog, Slate, Request, RerankConfig]) -> None:
    cat, slate, request, config = world
    chain = Chain(config)
    out = chain.apply(slate, request, cat)
    pins = [p for s in config.stages if s.stage == "pin" for p in s.pins]
    shown = dict(zip(cat.item_ids[out.items], range(len(out)), strict=True))
    filters = [s for s in chain.stages if isinstance(s, Filter)]
    for pin in pins:
        item = np.array([cat.item_ids.get_loc(pin.item_id)])
        if not all(f.allowed(item, request, cat)[0] for f in filters):
            assert pin.item_id not in shown
            continue
        # an allowed pinned item is shown at its position whenever the list reaches it (a pin past the list's
        # end goes to its last free position, or falls off a list that has none left)
        if pin.position < len(out):
            assert shown.get(pin.item_id) == pin.position


@SETTINGS
@given(worlds(), st.sampled_from(["category", "provider"]), st.integers(1, 3), st.integers(2, 6))
def test_the_window_cap_holds_whenever_another_item_could_take_the_slot(
    world: tuple[Catalog, Slate, Request, RerankConfig], by: str, max_items: int, window: int
) -> None:
    # the world's chain with two window caps in its arrange phase: the first (checked here) and one on the
    # other attribute after it, which must keep the first. Without the world's pins and exploration: those place
    # items after the caps and the ranked ones re-flow around them, which may break a cap anywhere between an
    # item's old and new place (the module says so; found by this test in CI on 2026-11-28, with a pin and an
    # exploration slot, the same with the window caps of 5b05561)
    cat, slate, request, config = world
    cap = WindowCapConfig(by=by, max_items=max_items, window=window, depth=100)
    other = WindowCapConfig(by="provider" if by == "category" else "category", max_items=1, window=3, depth=100)
    early = [s for s in config.stages if s.stage in ("filter", "boost", "mmr")]
    chain = Chain(RerankConfig(stages=[*early, cap, other], seed=config.seed))
    out = chain.apply(slate, request, cat)
    values = WindowCap(cap).values(out.items, cat)
    for position in range(len(out)):
        start = max(0, position - window + 1)
        full = values[start:position].sum(axis=0) >= max_items
        if not (values[position] & full).any() or out.fixed[start : position + 1].any():
            continue  # the cap holds here, or a pin or an exploration slot is in the window
        # a violation among ranked items: no item below could have taken the position instead
        below = [i for i in range(position + 1, len(out)) if not out.fixed[i]]
        assert all((values[i] & full).any() for i in below)


@SETTINGS
@given(worlds())
def test_the_exploration_share_is_within_one_slot(world: tuple[Catalog, Slate, Request, RerankConfig]) -> None:
    cat, slate, request, config = world
    explore = next(s for s in config.stages if s.stage == "exploration")
    share = explore.share if request.exploration_share is None else request.exploration_share
    chain = Chain(RerankConfig(stages=[explore], seed=config.seed))
    out = chain.apply(slate, request, cat)
    explored = int((out.sources == "exploration").sum())
    room = min(len(slate) - request.k, max(0, min(request.k, len(slate)) - explore.protect_top), explore.pool)
    if room >= share * request.k + 1:  # enough candidates below the list and positions below the top
        assert abs(explored - share * request.k) <= 1
    assert explored <= share * request.k + 1
