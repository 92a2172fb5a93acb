"""What each re-ranking stage does, on small hand-made lists."""

from __future__ import annotations

import dataclasses
from math import comb

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.errors import ConfigError
from tastemaker.reranking import Catalog, Chain, FeedbackLog, Request, RerankConfig, Seen, Slate
from tastemaker.reranking.base import NoFeedback
from tastemaker.reranking.diversity import MMR, MMRConfig, WindowCapConfig, keep_caps
from tastemaker.reranking.exploration import Exploration, ExplorationConfig
from tastemaker.reranking.fairness import ProviderFairness, ProviderFairnessConfig
from tastemaker.reranking.fatigue import Fatigue, FatigueConfig
from tastemaker.reranking.filters import Filter, FilterConfig
from tastemaker.reranking.freshness import FreshBoost, FreshBoostConfig, MinFresh, MinFreshConfig
from tastemaker.reranking.rules import Boost, BoostConfig, Cap, CapConfig, Pin, PinConfig

DAY_US = 86_400 * 1_000_000
NOW = 100 * DAY_US
UNKNOWN = np.iinfo(np.int64).min


def catalog(n: int = 10, vectors: np.ndarray | None = None, providers: int = 2) -> Catalog:
    """Items i0..i{n-1}: even ones in Drama, odd in Comedy, i0 also in Documentary; providers alternate
    p0/p1 (i9 has none); i3 unavailable; i1 created yesterday, i2 60 days ago, the rest of unknown age."""
    cats = np.zeros((n, 3), bool)
    cats[::2, 0] = True
    cats[1::2, 1] = True
    cats[0, 2] = True
    provider = np.array([f"p{i % providers}" for i in range(n)], dtype=object)
    provider[min(9, n - 1)] = None
    created = np.full(n, UNKNOWN, np.int64)
    created[1], created[2] = NOW - DAY_US, NOW - 60 * DAY_US
    available = np.ones(n, bool)
    available[3] = False
    attributes = [{"length": i * 10} for i in range(n)]
    return Catalog(pd.Index([f"i{i}" for i in range(n)]), pd.Index(["Drama", "Comedy", "Documentary"]),
                   sp.csr_matrix(cats), provider, created, available, attributes, vectors)  # fmt: skip


def ranked(n: int = 10) -> Slate:
    """i0 best, then i1, ... (scores n, n-1, ...)."""
    return Slate.of(np.arange(n), np.arange(n, 0, -1.0), ["als"] * n)


def request(k: int = 5, **kwargs: object) -> Request:
    kwargs.setdefault("request_id", "r")
    return Request(user=0, now_us=NOW, k=k, **kwargs)  # type: ignore[arg-type]


def ids(slate: Slate, cat: Catalog) -> list[str]:
    return list(cat.item_ids[slate.items])


def test_a_slate_is_sorted_without_padding_and_utilities_keep_the_order() -> None:
    slate = Slate.of(np.array([4, -1, 2, 7]), np.array([0.5, 9.0, 3.0, -np.inf]), ["a", "b", "c", "d"])
    assert slate.items.tolist() == [2, 4]
    np.testing.assert_allclose(slate.utility, [1.0, np.exp(-2.5)])
    assert slate.sources.tolist() == ["c", "a"] and (slate.propensity == 1).all()


def test_filters_drop_seen_unavailable_blocked_aged_and_out_of_scope_items() -> None:
    cat = catalog()
    seen = Seen(np.array([5, 6]), np.array([NOW - 40 * DAY_US, NOW - DAY_US]), np.array(["view", "purchase"], object))
    out = Filter().apply(ranked(), request(seen=seen), cat, NoFeedback(), 0)
    assert ids(out, cat) == ["i0", "i1", "i2", "i4", "i7", "i8", "i9"]  # i3 unavailable, i5 i6 seen
    # only purchases count as consumed, and they come back after 30 days
    typed = Filter(FilterConfig(seen_types=["purchase"], cooldown_days=30, unavailable=False))
    assert "i5" in ids(typed.apply(ranked(), request(seen=seen), cat, NoFeedback(), 0), cat)
    assert "i6" not in ids(typed.apply(ranked(), request(seen=seen), cat, NoFeedback(), 0), cat)
    later = Request(user=0, now_us=NOW + 31 * DAY_US, k=5, seen=seen)
    assert "i6" in ids(typed.apply(ranked(), later, cat, NoFeedback(), 0), cat)
    blocked = Filter(FilterConfig(blocked_items=["i0"], blocked_providers=["p1"], blocked_categories=["Documentary"]))
    assert ids(blocked.apply(ranked(), request(), cat, NoFeedback(), 0), cat) == ["i2", "i4", "i6", "i8", "i9"]
    aged = Filter(FilterConfig(max_age_days=30))  # i2 is 60 days old; items of unknown age stay
    assert "i2" not in ids(aged.apply(ranked(), request(), cat, NoFeedback(), 0), cat)
    scoped = request(include=np.array([0, 1, 2, 4]), exclude=np.array([4]), category="Drama")
    assert ids(Filter().apply(ranked(), scoped, cat, NoFeedback(), 0), cat) == ["i0", "i2"]
    with pytest.raises(ConfigError, match="min_age_days 5.0 is above max_age_days 1.0"):
        FilterConfig.from_dict({"min_age_days": 5, "max_age_days": 1})


def test_boost_and_bury_by_conditions_on_attributes() -> None:
    cat = catalog()
    config = BoostConfig.from_dict({"rules": [
        {"when": {"field": "category", "value": "Comedy"}, "factor": 1e6},
        {"when": {"field": "attributes.length", "op": ">=", "value": 70}, "factor": 1e-9},
        {"when": {"field": "provider", "op": "in", "value": ["p0"]}, "factor": 0.5},
    ]})  # fmt: skip
    out = Boost(config).apply(ranked(), request(), cat, NoFeedback(), 0)
    # comedies (odd) first, lengths 70+ (i7, i8, i9) last; i1 > i3 > i5 among comedies
    assert ids(out, cat)[:3] == ["i1", "i3", "i5"]
    assert set(ids(out, cat)[-3:]) == {"i7", "i8", "i9"}
    with pytest.raises(ConfigError, match="unknown field 'colour'"):
        BoostConfig.from_dict({"rules": [{"when": {"field": "colour", "value": 1}, "factor": 2}]})
    with pytest.raises(ConfigError, match="'in' needs a list value"):
        BoostConfig.from_dict({"rules": [{"when": {"field": "provider", "op": "in", "value": "p0"}, "factor": 2}]})
    with pytest.raises(ConfigError, match="factor"):
        BoostConfig.from_dict({"rules": [{"when": {"field": "provider", "value": "p0"}, "factor": 0}]})


def test_a_cap_keeps_at_most_n_matching_items_and_moves_the_rest_below() -> None:
    cat = catalog()
    config = CapConfig.from_dict({"rules": [{"when": {"field": "category", "value": "Drama"}, "max": 1}]})
    out = Cap(config).apply(ranked(), request(), cat, NoFeedback(), 0)
    assert ids(out, cat)[:5] == ["i0", "i1", "i3", "i5", "i7"]  # the list of 5 has one Drama


def test_a_pin_shows_its_item_at_its_position_unless_it_is_filtered() -> None:
    cat = catalog()
    stages = [FilterConfig(), PinConfig.from_dict({"pins": [{"item_id": "i8", "position": 1}]})]
    chain = Chain(RerankConfig(stages=stages))
    only_three = ranked(3)  # i8 is not even a candidate: the chain adds it
    out = chain.apply(only_three, request(k=3), cat)
    assert ids(out, cat) == ["i0", "i8", "i1"] and out.sources.tolist() == ["als", "pinned", "als"]
    blocked = Chain(RerankConfig(stages=[FilterConfig(blocked_items=["i8"]), stages[1]]))
    assert ids(blocked.apply(only_three, request(k=3), cat), cat) == ["i0", "i1", "i2"]
    with pytest.raises(ConfigError, match="two pins share a position"):
        PinConfig.from_dict({"pins": [{"item_id": "i1", "position": 0}, {"item_id": "i2", "position": 0}]})
    assert Pin(PinConfig(pins=[])).apply(ranked(), request(), cat, NoFeedback(), 0).items.tolist() == list(range(10))


def test_mmr_trades_relevance_for_spread() -> None:
    vectors = np.array([[1, 0], [1, 0.01], [0, 1], [1, 0.02], [0.01, 1]], float)
    cat = catalog(5, vectors)
    slate = ranked(5)
    keep = MMR(MMRConfig.from_dict({"lambda": 1.0})).apply(slate, request(k=3), cat, NoFeedback(), 0)
    assert keep.items.tolist() == [0, 1, 2, 3, 4]
    spread = MMR(MMRConfig.from_dict({"lambda": 0.3})).apply(slate, request(k=3), cat, NoFeedback(), 0)
    assert spread.items[:2].tolist() == [0, 2]  # i1 is a near copy of i0; i2 points elsewhere
    assert sorted(spread.items.tolist()) == [0, 1, 2, 3, 4]


def test_freshness_boosts_new_items_and_guarantees_a_minimum() -> None:
    cat = catalog()
    slate = Slate.of(np.arange(10), np.array([5.0, 4.9, 4.8, 3, 2, 1, 0, -1, -2, -3]), ["als"] * 10)
    boosted = FreshBoost(FreshBoostConfig(boost=1.0, half_life_days=1.0)).apply(slate, request(), cat, NoFeedback(), 0)
    assert ids(boosted, cat)[:3] == ["i1", "i0", "i2"]  # i1 (1 day old) × 1.5; i2 (60 days) ≈ × 1
    late = Slate.of(np.arange(10), np.r_[10, 0.5, 9, 8, 7, 6, 5, 4, 3, 2], ["als"] * 10)
    out = MinFresh(MinFreshConfig(min_items=1, max_age_days=14)).apply(late, request(k=4), cat, NoFeedback(), 0)
    assert ids(out, cat)[:4] == ["i0", "i2", "i3", "i1"]  # i1 replaces i4, the lowest of the first four
    assert ids(out, cat)[4] == "i4"


def shown_log(rows: list[tuple[int, int, int, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "item", "shown_us", "engaged"])


def test_provider_fairness_caps_a_provider_and_lifts_the_long_tail() -> None:
    cat = catalog(30, providers=6)
    top_heavy = Slate.of(np.r_[0:30:6, 1:30:6, 2:30:3, 3:30:6, 5:30:6], np.arange(30, 0, -1.0), ["als"] * 30)
    out = ProviderFairness(ProviderFairnessConfig(max_share=0.2)).apply(top_heavy, request(k=10), cat, NoFeedback(), 0)
    counts = pd.Series(cat.providers[cat.provider[out.items[:10]]]).value_counts()
    assert counts.max() == 2 and out.items[0] == 0  # at most 2 of 10 from any provider; the best stays first
    # p0 took 90% of recent exposures: it is the head, p1 the long tail
    cat = catalog(20)
    log = FeedbackLog(shown_log([(1, 0, NOW - DAY_US, False)] * 9 + [(1, 1, NOW - DAY_US, False)]), cat)
    config = ProviderFairnessConfig(max_share=1.0, long_tail_floor=0.5, head_share=0.8)
    only_p0_on_top = Slate.of(np.r_[0:20:2, 1:20:2], np.arange(20, 0, -1.0), ["als"] * 20)
    lifted = ProviderFairness(config).apply(only_p0_on_top, request(k=4), cat, log, 0)
    assert (cat.providers[cat.provider[lifted.items[:4]]] == "p1").sum() == 2


def test_fatigue_demotes_or_drops_items_the_user_kept_ignoring() -> None:
    cat = catalog()
    ignored, engaged = [(0, 0, NOW - DAY_US, False)] * 3, [(0, 1, NOW - DAY_US, True)] * 5
    someone_else, long_ago = [(7, 2, NOW - DAY_US, False)] * 5, [(0, 4, NOW - 30 * DAY_US, False)] * 5
    log = FeedbackLog(shown_log(ignored + engaged + someone_else + long_ago), cat)
    demoted = Fatigue(FatigueConfig(factor=1e-6)).apply(ranked(), request(), cat, log, 0)
    assert ids(demoted, cat)[-1] == "i0" and ids(demoted, cat)[0] == "i1"  # i1 was engaged with; i4's are old
    dropped = Fatigue(FatigueConfig(action="filter")).apply(ranked(), request(), cat, log, 0)
    assert "i0" not in ids(dropped, cat) and len(dropped) == 9


def test_exploration_slots_are_below_the_top_and_reproducible() -> None:
    cat = catalog(100)
    slate = Slate.of(np.arange(100), np.arange(100, 0, -1.0), ["als"] * 100)
    stage = Exploration(ExplorationConfig(share=0.2, protect_top=3))
    out = stage.apply(slate, request(k=20, request_id="abc"), cat, NoFeedback(), 7)
    explored = np.flatnonzero(out.sources[:20] == "exploration")
    assert len(explored) == 4 and explored.min() >= 3
    assert (out.items[explored] >= 20).all()  # drawn from below the list
    assert out.items[:3].tolist() == [0, 1, 2] and (out.propensity[:3] == 1).all()
    again = stage.apply(slate, request(k=20, request_id="abc"), cat, NoFeedback(), 7)
    other = stage.apply(slate, request(k=20, request_id="xyz"), cat, NoFeedback(), 7)
    assert np.array_equal(out.items, again.items) and not np.array_equal(out.items[:20], other.items[:20])
    with pytest.raises(ConfigError, match=r"exploration share must be within 0–0.2, got 0.5"):
        stage.apply(slate, request(k=20, exploration_share=0.5), cat, NoFeedback(), 7)
    with pytest.raises(ConfigError, match="share"):
        ExplorationConfig.from_dict({"share": 0.3})
    none = stage.apply(slate, request(k=20, exploration_share=0.0), cat, NoFeedback(), 7)
    assert none.items[:20].tolist() == list(range(20)) and (none.propensity == 1).all()


def test_exploration_propensities_are_the_chances_of_the_policy() -> None:
    # the ranked item j lands at position p when exactly p - j of the m slots fall among the eligible
    # positions above p and p is not a slot: a hypergeometric count. Without feedback every pool item draws
    # from the same prior, so each takes a given slot rank with chance 1 / pool
    cat = catalog(60)
    k, m, top, pool = 12, 2, 3, 20
    eligible = k - top
    stage = Exploration(ExplorationConfig(share=m / k, protect_top=top, pool=pool, draws=20_000))
    slate = Slate.of(np.arange(60), np.arange(60, 0, -1.0), ["als"] * 60)
    out = stage.apply(slate, request(k=k), cat, NoFeedback(), 1)
    slots_above = 0
    for position in range(k):
        e = max(position - top, 0)  # eligible positions above it
        if out.sources[position] == "exploration":
            rank = slots_above
            slot = comb(e, rank) * comb(eligible - e - 1, m - rank - 1) / comb(eligible, m)
            assert out.propensity[position] == pytest.approx(slot / pool, rel=0.1)
            slots_above += 1
            continue
        above = position - int(out.items[position])  # slots above this position
        assert above == slots_above
        exact = comb(e, above) * comb(eligible - e - 1, m - above) / comb(eligible, m) if position >= top else 1.0
        assert out.propensity[position] == pytest.approx(exact, rel=1e-12)
    # and the served lists follow those chances: the share of 3,000 requests with a ranked item at a position
    counts = np.zeros(k)
    quick = Exploration(ExplorationConfig(share=m / k, protect_top=top, pool=pool))  # the same served lists
    assert np.array_equal(quick.apply(slate, request(k=k), cat, NoFeedback(), 1).items, out.items)
    for r in range(3_000):
        served = quick.apply(slate, request(k=k, request_id=f"q{r}"), cat, NoFeedback(), 1).items[:k]
        counts += served == np.r_[np.arange(k)]  # the ranked item i left at position i (no slot above it)
    expected = [comb(eligible - max(p - top, 0) - 1, m) / comb(eligible, m) if p >= top else 1.0 for p in range(k)]
    np.testing.assert_allclose(counts / 3_000, expected, atol=0.03)


def test_thompson_sampling_favours_items_with_little_evidence() -> None:
    cat = catalog(40)
    # the pool (items 5..39) was shown 200 times each and engaged with 4 times, but item 39 was never shown
    rows = [(1, i, NOW - DAY_US, n < 4) for i in range(5, 39) for n in range(200)]
    log = FeedbackLog(shown_log(rows), cat)
    slate = Slate.of(np.arange(40), np.arange(40, 0, -1.0), ["als"] * 40)
    stage = Exploration(ExplorationConfig(share=0.2, protect_top=1, pool=35))
    picked = [stage.apply(slate, request(k=5, request_id=str(r)), cat, log, 0) for r in range(50)]
    new = sum(39 in p.items[:5] for p in picked)
    assert new >= 45  # Beta(1, 1) beats Beta(5, 197) almost always


def test_stages_must_come_in_phase_order_and_be_known() -> None:
    with pytest.raises(ConfigError, match="stage 'filter' \\(filter\\) comes after a stage that must follow it"):
        RerankConfig.from_dict({"stages": [{"stage": "exploration"}, {"stage": "filter"}]})
    with pytest.raises(ConfigError, match="stage"):
        RerankConfig.from_dict({"stages": [{"stage": "shuffle"}]})
    with pytest.raises(ConfigError, match="at most one exploration stage"):
        RerankConfig.from_dict({"stages": [{"stage": "exploration"}, {"stage": "exploration"}]})


def test_a_chain_is_declared_in_toml(tmp_path: object) -> None:
    path = tmp_path / "rerank.toml"  # type: ignore[operator]
    path.write_text(
        'seed = 3\n[[stages]]\nstage = "filter"\nblocked_categories = ["Comedy"]\n'
        '[[stages]]\nstage = "boost"\nrules = [{when = {field = "item_id", value = "i4"}, factor = 100.0}]\n'
        '[[stages]]\nstage = "mmr"\nlambda = 1.0\n'
    )
    config = RerankConfig.from_toml(path)
    out = Chain(config).apply(ranked(), request(k=3), catalog())
    assert ids(out, catalog()) == ["i4", "i0", "i2"]
    assert RerankConfig.from_dict(config.model_dump(by_alias=True)) == config


def test_the_feedback_log_counts_only_what_came_before_now_and_inside_windows() -> None:
    cat = catalog()
    log = FeedbackLog(shown_log([
        (0, 1, 5 * DAY_US, True), (0, 1, 1 * DAY_US, False), (1, 1, 9 * DAY_US, False), (0, 2, 3 * DAY_US, False),
        (0, 2, 4 * DAY_US, False), (2, 9, 4 * DAY_US, False),
    ]), cat)  # fmt: skip
    shown, engaged = log.item_counts(np.array([1, 2, 3]), now_us=6 * DAY_US)
    assert shown.tolist() == [2, 2, 0] and engaged.tolist() == [1, 0, 0]
    assert log.item_counts(np.array([1]), now_us=10 * DAY_US)[0].tolist() == [3]  # the later exposure counts now
    assert log.user_ignored(0, np.array([1, 2, 5]), 6 * DAY_US, 2 * DAY_US).tolist() == [0, 2, 0]
    # i1's ignored exposure (day 1) came before the user engaged with it (day 5): it no longer counts
    assert log.user_ignored(0, np.array([1, 2]), 6 * DAY_US, 0).tolist() == [0, 2]
    assert log.item_counts(np.array([1, 25]), now_us=6 * DAY_US)[0].tolist() == [2, 0]  # 25: added later
    # an engagement known to come later than now does not count yet
    timed = shown_log([(0, 1, DAY_US, True), (0, 2, DAY_US, True)]).assign(engaged_us=[2 * DAY_US, 9 * DAY_US])
    later = FeedbackLog(timed, cat)
    assert later.item_counts(np.array([1, 2]), now_us=3 * DAY_US)[1].tolist() == [1, 0]
    # the same exposures shown before both nows: only the engagement between them changes the counts
    assert later.item_counts(np.array([1, 2]), now_us=10 * DAY_US)[1].tolist() == [1, 1]
    assert later.item_counts(np.array([1, 2]), now_us=3 * DAY_US)[1].tolist() == [1, 0]
    assert later.user_ignored(0, np.array([1, 2]), 3 * DAY_US, 0).tolist() == [0, 1]
    assert log.user_ignored(3, np.array([1]), 6 * DAY_US, 0).tolist() == [0]
    # p1 (item 1) twice, p0 (item 2) twice, i9 has no provider: shares of every exposure in the window
    assert log.provider_shares(6 * DAY_US, 0) == {"p1": 0.4, "p0": 0.4}


def test_the_engine_config_declares_its_chain_in_toml(tmp_path: object) -> None:
    from tastemaker.ranking import EngineConfig

    path = tmp_path / "tastemaker.toml"  # type: ignore[operator]
    path.write_text(
        'list_length = 20\n[rerank]\nseed = 9\n[[rerank.stages]]\nstage = "filter"\ncooldown_days = 30\n'
        '[[rerank.stages]]\nstage = "window_cap"\nby = "provider"\nmax_items = 1\n'
        '[[rerank.stages]]\nstage = "exploration"\nshare = 0.1\n'
    )
    config = EngineConfig.from_toml(path)
    assert [s.stage for s in config.rerank.stages] == ["filter", "window_cap", "exploration"]
    assert config.rerank.stages[2].share == 0.1 and config.list_length == 20
    assert EngineConfig().rerank.stages and EngineConfig().hash() != config.hash()
    path.write_text('[[rerank.stages]]\nstage = "exploration"\nshare = 0.5\n')
    with pytest.raises(ConfigError, match=r"rerank\.stages\.0\.exploration\.share"):
        EngineConfig.from_toml(path)


def test_pins_come_before_exploration_and_keep_their_positions() -> None:
    cat = catalog(100)
    pins = PinConfig.from_dict({"pins": [{"item_id": "i50", "position": 4}, {"item_id": "i60", "position": 40},
                                         {"item_id": "i61", "position": 41}]})  # fmt: skip
    chain = Chain(RerankConfig(stages=[pins, ExplorationConfig(share=0.2, protect_top=1)]))
    slate = Slate.of(np.arange(100), np.arange(100, 0, -1.0), ["als"] * 100)
    for r in range(30):
        out = chain.apply(slate, request(k=10, request_id=str(r)), cat)
        assert out.items[4] == 50 and out.propensity[4] == 1 and out.sources[4] == "als"
        assert set(out.items[8:10]) == {60, 61}  # pins past the list take its last positions
        assert (out.sources == "exploration").sum() == 2
    with pytest.raises(ConfigError, match="pins before exploration"):
        RerankConfig.from_dict({"stages": [{"stage": "exploration"}, pins.model_dump()]})


def test_caps_with_several_rules_fill_every_place_a_rule_allows() -> None:
    cat = catalog()
    config = CapConfig.from_dict({"rules": [{"when": {"field": "category", "value": "Drama"}, "max": 1},
                                            {"when": {"field": "item_id", "value": "i0"}, "max": 0}]})  # fmt: skip
    out = Cap(config).apply(ranked(), request(k=5), cat, NoFeedback(), 0)
    # i0 is out by the second rule, so the one Drama place goes to i2
    assert ids(out, cat)[:5] == ["i1", "i2", "i3", "i5", "i7"]


def test_the_thompson_rank_chance_estimate_is_unbiased() -> None:
    from tastemaker.reranking.exploration import _beta, _rank_chances

    rng = np.random.default_rng(1)
    shown = np.r_[0.0, 0.0, rng.integers(5, 300, 10)]
    engaged = np.floor(shown * rng.uniform(0.01, 0.1, len(shown)))
    alpha, beta = 1 + engaged, 1 + shown - engaged
    order = np.argsort(-rng.beta(alpha, beta, size=(200_000, len(shown))), axis=1)[:, :2]
    explored = np.array([0, 4])  # a new item at rank 0, an exposed one at rank 1
    truth = [(order[:, r] == explored[r]).mean() for r in range(2)]
    estimates = np.array([_rank_chances(_beta(np.random.default_rng(s), alpha, beta, 63), explored, alpha, beta)
                          for s in range(150)])  # fmt: skip
    assert (estimates > 0).all()
    np.testing.assert_allclose(estimates.mean(axis=0), truth, rtol=0.1, atol=2e-3)


def _caps_by_definition(slate: Slate, request: Request, catalog: Catalog) -> list[int]:
    """Window caps as the docstring defines them, recounting every window from scratch: each free position
    of the first k takes the best remaining candidate that keeps all caps; failing that all but the newest,
    and so on; failing all, the best remaining. Fixed entries stay and count."""
    rules, k = slate.caps, min(request.k, len(slate))
    pool = [int(e) for e in np.flatnonzero(~slate.fixed)[: int(np.ceil(max(r.depth for r in rules) * request.k))]]

    def values(rule: WindowCapConfig, item: int) -> list[object]:
        if rule.by == "category":
            row = catalog.item_categories[item]
            return [("c", int(c)) for c in row.indices]
        return [] if catalog.providers[catalog.provider[item]] == "" else [("p", int(catalog.provider[item]))]

    def keeps(placed: list[int], item: int, rule: WindowCapConfig) -> bool:
        window = placed[max(0, len(placed) - rule.window + 1) :]  # the positions before this one in its window
        return all(sum(v in values(rule, i) for i in window) < rule.max_items for v in values(rule, item))

    placed: list[int] = []
    for position in range(k):
        if slate.fixed[position]:
            placed.append(int(slate.items[position]))
            continue
        if not pool:
            break
        pick = pool[0]
        for kept in range(len(rules), 0, -1):
            fitting = [e for e in pool if all(keeps(placed, int(slate.items[e]), r) for r in rules[:kept])]
            if fitting:
                pick = fitting[0]
                break
        pool.remove(pick)
        placed.append(int(slate.items[pick]))
    return placed


def test_window_caps_fill_each_position_as_defined() -> None:
    rng = np.random.default_rng(7)
    for case in range(300):
        n = int(rng.integers(5, 80))
        cats = sp.csr_matrix(rng.random((n, 4)) < 0.4)
        cat = Catalog(pd.Index([f"i{i}" for i in range(n)]), pd.Index(list("abcd")), cats,
                      np.array([f"p{i % 3}" if i % 7 else None for i in range(n)], dtype=object),
                      np.full(n, UNKNOWN, np.int64), np.ones(n, bool), [{}] * n, None)  # fmt: skip
        size = int(rng.integers(1, n + 1))
        slate = Slate.of(rng.permutation(n)[:size], rng.normal(size=size), np.full(size, "als", dtype=object))
        rules = tuple(
            WindowCapConfig(by=str(rng.choice(["category", "provider"])), max_items=int(rng.integers(1, 3)),
                            window=int(rng.integers(2, 8)), depth=float(rng.choice([1.0, 2.0, 5.0])))
            for _ in range(int(rng.integers(1, 4)))
        )  # fmt: skip
        slate = dataclasses.replace(slate, fixed=rng.random(size) < 0.1, caps=rules)
        request = Request(user=0, now_us=NOW, k=int(rng.integers(1, 25)))
        got = keep_caps(slate, request, cat)
        k = min(request.k, len(slate))
        assert got.items[:k].tolist() == _caps_by_definition(slate, request, cat)[:k], case


def test_the_window_caps_catalog_values_leave_the_garbage_collectors_sight() -> None:
    """One entry per catalog item, read by every request: held in containers the collector stops tracking,
    so a full collection does not walk a large catalog's worth of them in the middle of requests."""
    import gc

    from tastemaker.reranking.diversity import _catalog_values

    cat = catalog(200, providers=5)
    for by in ("category", "provider"):
        values, n = _catalog_values(by, cat)
        assert len(values) == 200 and n >= 1
        gc.collect()
        gc.collect()  # (the outer tuple is untracked once a pass has seen its items untracked)
        assert not gc.is_tracked(values) and not any(gc.is_tracked(v) for v in values)
