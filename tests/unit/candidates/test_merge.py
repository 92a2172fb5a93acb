"""Merging sources: quotas, dedupe, provenance, cold start and fold-in through the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates import CandidateSource, History
from tastemaker.candidates.merge import CandidateGenerator, MergeConfig
from tastemaker.data import Dataset, Snapshot, SyntheticConfig, generate
from tastemaker.errors import ConfigError


class Fixed(CandidateSource):
    """Proposes a fixed list to every user (scores 1/rank), for checking the merge by hand."""

    name = "fixed"

    def __init__(self, items: list[int], *, needs_history: bool = True) -> None:
        self.items, self.needs_history = items, needs_history

    def _fit(self, snapshot: Snapshot) -> None:
        pass

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(users), n), -1, np.int64)
        scores = np.full((len(users), n), -np.inf, np.float32)
        for row in range(len(users)):
            allowed = [i for i in self.items if exclude[row, i] == 0][:n]
            ids[row, : len(allowed)] = allowed
            scores[row, : len(allowed)] = 1.0 / (1 + np.arange(len(allowed)))
        return ids, scores


def tiny() -> Snapshot:
    pairs = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["i0", "i1"]}).assign(
        weight=1.0, rating=np.nan, timestamp_us=0, last_timestamp_us=0
    )
    return Snapshot.from_interactions(pairs, pd.DataFrame({"item_id": [f"i{i}" for i in range(10)]}))


def test_quotas_interleave_dedupe_and_keep_every_sources_provenance() -> None:
    snap = tiny()
    sources = {"als": Fixed([2, 3, 4, 5, 6]), "popular": Fixed([4, 7, 8], needs_history=False)}
    strict = CandidateGenerator(
        MergeConfig(quotas={"als": 4, "popular": 2}, total=10, depth=1, rule="quota"), sources=sources
    )
    # keys: als 2→0, 3→.25, 4→.5, 5→.75 (quota 4 cuts 6); popular 4→0, 7→.5 (quota 2 cuts 8)
    assert strict.fit(snap).generate(np.array([0])).items[0].tolist() == [2, 4, 3, 7, 5, -1, -1, -1, -1, -1]
    gen = CandidateGenerator(
        MergeConfig(quotas={"als": 4, "popular": 2}, total=10, depth=2, rule="quota"), sources=sources
    ).fit(snap)
    got = gen.generate(np.array([0]))
    # depth 2: past their quotas, 6 (als, 4/4) and 8 (popular, 2/2) fill the room the duplicate 4 left
    assert got.items[0].tolist() == [2, 4, 3, 7, 5, 6, 8, -1, -1, -1]
    assert got.sources == ("als", "popular")
    slot = got.items[0].tolist().index(4)
    assert got.ranks[0, slot].tolist() == [2, 0] and np.allclose(got.scores[0, slot], [1 / 3, 1.0])
    assert got.ranks[0, 0].tolist() == [0, -1] and np.isnan(got.scores[0, 0, 1])
    assert got.primary[0, :5].tolist() == [0, 1, 0, 1, 0]
    ids, _ = gen.candidates(np.array([0]), 3)
    assert ids.tolist() == [[2, 4, 3]]


def test_fusion_puts_reserved_heads_first_then_orders_by_weighted_reciprocal_rank() -> None:
    snap = tiny()
    sources = {"als": Fixed([2, 3, 4, 5, 6]), "popular": Fixed([6, 5, 9], needs_history=False)}
    config = MergeConfig(quotas={"als": 3, "popular": 1}, total=10, depth=2, rule="fusion", fusion_k=1, reserve=0.34)
    got = CandidateGenerator(config, sources=sources).fit(snap).generate(np.array([0]))
    # reserved: als ranks 0-1 (ceil(3 × .34) = 2) → 2, 3; popular rank 0 → 6. Fused (share / (1 + rank)):
    # 2: .75, 3: .375, 6: .75/5 + .25 = .4 → reserved order 2, 6, 3; then 5: .75/4 + .25/2 = .3125,
    # 4: .25; popular proposes depth × quota = 2 items, so 9 never enters
    assert got.items[0, :6].tolist() == [2, 6, 3, 5, 4, -1]


def test_excluded_items_never_come_back() -> None:
    snap = tiny()
    gen = CandidateGenerator(
        MergeConfig(quotas={"als": 4, "popular": 4}, total=10),
        sources={"als": Fixed([0, 1, 2, 3]), "popular": Fixed([1, 2, 9], needs_history=False)},
    ).fit(snap)
    got = gen.generate(np.array([0]), exclude=snap.matrix[[0]])
    assert set(got.items[0][got.items[0] >= 0]) == {2, 3, 9}


def test_a_user_without_history_gets_the_whole_total_from_sources_that_serve_everyone() -> None:
    snap = tiny()
    gen = CandidateGenerator(
        MergeConfig(quotas={"als": 6, "popular": 2, "fresh": 2}, total=10),
        sources={"als": Fixed(list(range(10))), "popular": Fixed(list(range(10)), needs_history=False),
                 "fresh": Fixed(list(range(9, -1, -1)), needs_history=False)},
    ).fit(snap)  # fmt: skip
    gen.fold_in(History.from_events(pd.DataFrame(columns=["event_id", "user_id", "item_id", "type", "value",
                                                          "timestamp_us"]), gen.item_ids,
                                    users=pd.DataFrame({"user_id": ["cold"]})))  # fmt: skip
    got = gen.generate(gen.user_index(["cold", "u"]))
    cold, warm = got.items
    assert (cold >= 0).sum() == 10 and (got.ranks[0, :, 0] == -1).all()  # nothing from als, 5 + 5 from the others
    assert ((got.ranks[1, :, 0] >= 0) & (got.ranks[1, :, 0] < 6)).sum() == 6  # a warm user gets als's quota
    assert (got.ranks[1, :6, 0] >= 0).all()  # and als's quota leads the list (keys below 1)


def test_unknown_sources_and_empty_quotas_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown candidate source 'alss'; known: als"):
        MergeConfig.from_dict({"quotas": {"alss": 10}})
    with pytest.raises(ConfigError, match="at least one source"):
        MergeConfig.from_dict({"quotas": {}})


def test_settings_set_a_sources_config_over_its_defaults_and_bad_ones_are_refused() -> None:
    config = MergeConfig(quotas={"sequence": 10, "popular": 5}, settings={"sequence": {"half_life_items": None}})
    gen = CandidateGenerator(config).fit(tiny())
    assert gen.sources["sequence"].config.half_life_items is None  # type: ignore[attr-defined]
    assert gen.sources["sequence"].config.similarity == "sequence"  # the rest of its config stays
    assert CandidateGenerator().fit(tiny()).sources["sequence"].config.half_life_items == 5.0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown candidate source 'sequense'"):
        MergeConfig.from_dict({"settings": {"sequense": {"half_life_items": 2}}})
    with pytest.raises(ConfigError, match="merge.settings.sequence: invalid ItemKNNConfig: half_life_item"):
        MergeConfig.from_dict({"settings": {"sequence": {"half_life_item": 2}}})
    with pytest.raises(ConfigError, match="merge.settings.ease: invalid EASEConfig: l2: Input should be greater"):
        MergeConfig.from_dict({"settings": {"ease": {"l2": -1}}})
    with pytest.raises(ConfigError, match=r"settings for \['sequence'\], which have no quota"):
        MergeConfig.from_dict({"quotas": {"als": 10}, "settings": {"sequence": {"half_life_items": 2}}})
    # kept as the source's config reads them: the same settings written two ways are one config
    assert MergeConfig(settings={"ease": {"l2": "300"}}) == MergeConfig(settings={"ease": {"l2": 300.0}})
    assert MergeConfig(settings={"ease": {"l2": "300"}}).hash() == MergeConfig(settings={"ease": {"l2": 300}}).hash()


@pytest.fixture(scope="module")
def world() -> Dataset:
    return generate(SyntheticConfig(n_users=300, n_items=400, seed=3))


def test_the_default_generator_serves_warm_cold_and_folded_in_users(world: Dataset) -> None:
    snap = Snapshot.from_dataset(world)
    gen = CandidateGenerator(MergeConfig(total=120)).fit(snap)
    users = np.arange(5)
    got = gen.generate(users, exclude=snap.matrix[users], seeds=True)
    assert ((got.items >= 0).sum(axis=1) == 120).all()
    assert not any(set(got.items[r]) & set(snap.matrix[r].indices) for r in range(5))
    assert set(got.sources) == {"als", "ease", "sequence", "content", "popular", "trending", "fresh"}
    # the item-to-item source's proposals carry the history item they came from
    knn = got.sources.index("sequence")
    proposed = got.ranks[:, :, knn] >= 0
    assert proposed.any() and (got.seed_items[proposed] >= 0).all()
    # a user whose only history arrived after training: personal sources take part without a retrain
    liked = world.events[world.events["user_id"] == world.events["user_id"].iloc[0]].head(10)
    gen.fold_in(
        History.from_events(liked.assign(user_id="late", event_id=lambda f: "late" + f["event_id"]), gen.item_ids)
    )
    late = gen.generate(gen.user_index(["late"]))
    assert (late.ranks[0, :, got.sources.index("als")] >= 0).any()
    assert (late.ranks[0, :, got.sources.index("content")] >= 0).any()


def test_a_batch_larger_than_one_merge_chunk_equals_its_users_merged_apart(world: Dataset) -> None:
    from tastemaker.candidates.merge import _MERGE_ROWS

    snap = Snapshot.from_dataset(world)
    gen = CandidateGenerator(MergeConfig(total=60), seed=3).fit(snap)
    users = np.arange(min(snap.n_users, _MERGE_ROWS + 90))
    assert len(users) > _MERGE_ROWS
    whole = gen.generate(users, exclude=snap.matrix[users])
    for part in (users[:100], users[_MERGE_ROWS - 5 : _MERGE_ROWS + 5], users[-40:]):
        apart = gen.generate(part, exclude=snap.matrix[part])
        np.testing.assert_array_equal(whole.items[part], apart.items)
        np.testing.assert_array_equal(whole.ranks[part], apart.ranks)
        # a source's float32 scores may round differently in a batch of another size (BLAS blocking)
        np.testing.assert_allclose(whole.scores[part], apart.scores, rtol=1e-5)


@pytest.mark.parametrize(
    ("quotas", "reasoner"),
    [({"item_knn": 30, "sequence": 30, "popular": 10}, "sequence"), ({"item_knn": 30, "popular": 10}, "item_knn"),
     ({"popular": 10}, None)],
)  # fmt: skip
def test_reasons_come_from_sequence_else_item_knn(world: Dataset, quotas: dict[str, int], reasoner: str) -> None:
    snap = Snapshot.from_dataset(world)
    gen = CandidateGenerator(MergeConfig(quotas=quotas, total=60)).fit(snap)
    users = np.arange(4)
    got = gen.generate(users, exclude=snap.matrix[users], seeds=True)
    assert gen.item_to_item_name == reasoner
    if reasoner is None:
        assert gen.item_to_item is None and got.seed_items is None
        assert (gen.because(users, got.items) == -1).all()
        return
    source = gen.sources[reasoner]
    assert gen.item_to_item is source
    # seed items are that source's reasons for its own proposals, and only for them
    proposed = got.ranks[:, :, got.sources.index(reasoner)] >= 0
    expected = source.because(users, np.where(proposed, got.items, -1))
    assert proposed.any() and np.array_equal(got.seed_items, expected)
    assert (got.seed_items[~proposed] == -1).all()
