"""The request path in-process (no HTTP): a batch mixes variants, new catalog items reach the model, a model
that fails on a request is replaced by popularity."""

from __future__ import annotations

import numpy as np

from tastemaker.errors import StoreError
from tastemaker.reranking import Chain, RerankConfig
from tastemaker.serving import HoldoutConfig, ListRequest, Recommender, assign

from ...integration.api.conftest import World


def test_one_call_serves_a_batch_of_both_variants_and_unknown_users(recommender: Recommender, world: World) -> None:
    users = [f"u{n}" for n in range(40)] + ["stranger-1", "stranger-2"]
    served = recommender.recommend([ListRequest(u, k=8) for u in users])
    variants = assign(users, HoldoutConfig())
    assert [s.variant for s in served] == list(variants) and "control" in variants
    for s in served:
        assert len(s.items) == 8 and len({i.item_id for i in s.items}) == 8
        assert s.model_version == ("popularity" if s.variant == "control" else world.version)
        assert s.fallback is None
    one = recommender.recommend([ListRequest("u3", k=8, request_id="fixed")])[0]
    assert one.request_id == "fixed"
    assert [i.item_id for i in recommender.recommend([ListRequest("u3", k=8, request_id="fixed")])[0].items] == [
        i.item_id for i in one.items
    ]  # the same request id: the same list (exploration included)


def test_items_added_after_training_reach_the_model_at_the_next_refresh(recommender: Recommender) -> None:
    engine = recommender.slot.current.engine
    recommender.store.upsert_items([{"item_id": "late-1", "title": "Late", "categories": ["Action"],
                                     "created_at": "2026-02-03T18:00:00Z"}])  # fmt: skip
    assert engine.item_index(["late-1"])[0] < 0
    recommender.refresh()
    index = engine.item_index(["late-1"])[0]
    assert index >= 0
    fresh, _ = engine.generator.sources["fresh"].candidates(np.array([0]), 50)
    assert index in fresh[0]


def test_a_model_failing_on_a_request_serves_popularity(recommender: Recommender, monkeypatch) -> None:
    loaded = recommender.slot.current

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(loaded.engine, "recommend", broken)
    user = next(u for u in (f"u{n}" for n in range(50)) if assign([u], HoldoutConfig())[0] == "personalized")
    served = recommender.recommend([ListRequest(user, k=5)])[0]
    assert served.model_version == "popularity" and "RuntimeError" in served.fallback and len(served.items) == 5


def test_a_known_users_new_events_are_folded_into_the_model_once(recommender: Recommender) -> None:
    engine = recommender.slot.current.engine
    user = next(u for u in (f"u{n}" for n in range(50)) if assign([u], HoldoutConfig())[0] == "personalized")
    row = engine.user_index([user])[0]
    item = next(i for i in engine.item_ids if engine.user_items(np.array([row]))[0, engine.item_index([i])[0]] == 0)
    recommender.store.ingest_events([{"user_id": user, "item_id": item, "type": "complete",
                                      "timestamp": "2026-02-03T12:00:00Z"}])  # fmt: skip
    served = recommender.recommend([ListRequest(user, k=10)])[0]
    assert engine.user_items(np.array([row]))[0, engine.item_index([item])[0]] > 0  # in the user's vector now
    assert item not in [i.item_id for i in served.items]  # and consumed: filtered
    before = engine.n_users
    recommender.recommend([ListRequest(user, k=10)])
    assert engine.n_users == before and recommender.slot.current.folded[user][0] == 1
    weight = engine.user_items(np.array([row]))[0, engine.item_index([item])[0]]
    recommender.store.ingest_events([{"user_id": user, "item_id": "i2", "type": "view",
                                      "timestamp": "2026-02-03T13:00:00Z"}])  # fmt: skip
    recommender.recommend([ListRequest(user, k=5), ListRequest(user, k=5)])  # the same user twice in a batch
    assert engine.user_items(np.array([row]))[0, engine.item_index([item])[0]] == weight  # counted once


def test_made_up_user_ids_do_not_grow_the_model(recommender: Recommender) -> None:
    engine = recommender.slot.current.engine
    recommender.recommend([ListRequest("ghost-0", k=5)])
    before = engine.n_users
    served = recommender.recommend([ListRequest(f"ghost-{n}", k=5) for n in range(1, 60)])
    assert engine.n_users == before  # one shared row for users with neither events nor attributes
    assert all(len(s.items) == 5 for s in served)


def test_a_failed_fold_in_is_retried_on_the_next_request(recommender: Recommender, monkeypatch) -> None:
    engine = recommender.slot.current.engine
    user = next(u for u in (f"fresh-{n}" for n in range(50)) if assign([u], HoldoutConfig())[0] == "personalized")
    recommender.store.ingest_events([{"user_id": user, "item_id": "i7", "type": "complete",
                                      "timestamp": "2026-02-03T12:00:00Z"}])  # fmt: skip
    real = recommender.store.get_users
    calls = []

    def failing_once(ids):
        calls.append(ids)
        if len(calls) == 1:
            raise StoreError("could not read users: connection refused")
        return real(ids)

    monkeypatch.setattr(recommender.store, "get_users", failing_once)
    first = recommender.recommend([ListRequest(user, k=5)])[0]
    assert first.model_version == "popularity" and first.fallback
    second = recommender.recommend([ListRequest(user, k=5)])[0]
    assert second.model_version != "popularity" and engine.user_index([user])[0] >= 0


def test_lists_the_engine_does_not_rank_pass_the_models_filters(recommender: Recommender) -> None:
    """The control arm, the fallback, popular and similar items show nothing the personalized arm's filters
    drop (issue 6: control gets popularity "through the same filters"), and follow its seen rule."""
    engine = recommender.slot.current.engine
    top = [i.item_id for i in recommender.popular(40)]
    blocked_item, blocked_category = top[0], recommender.catalog.categories(top[1])[0]
    policy = {"blocked_items": [blocked_item], "blocked_categories": [blocked_category]}
    engine.chain = Chain(RerankConfig.from_dict({"stages": [{"stage": "filter", **policy}]}))

    def allowed(item_id: str) -> bool:
        return item_id != blocked_item and blocked_category not in recommender.catalog.categories(item_id)

    control = [u for u in (f"u{n}" for n in range(300)) if assign([u], HoldoutConfig())[0] == "control"]
    personal = next(u for u in (f"u{n}" for n in range(50)) if assign([u], HoldoutConfig())[0] == "personalized")
    served = recommender.recommend([ListRequest(u, k=15) for u in control])
    assert len(control) >= 10 and all(s.variant == "control" and len(s.items) == 15 for s in served)
    assert all(allowed(i.item_id) for s in served for i in s.items)
    popular = [i.item_id for i in recommender.popular(15)]
    assert len(popular) == 15 and all(allowed(i) for i in popular) and popular == [i for i in top if allowed(i)][:15]
    assert all(allowed(i.item_id) for i in recommender.similar(top[2], 10)[1])
    # a filter that drops most of an item's neighbours: more of them are asked for until the list is full
    categories = sorted({c for i in top for c in recommender.catalog.categories(i)})
    kept = [c for c in categories if c not in recommender.catalog.categories(top[1])][0]
    narrow = [c for c in categories if c != kept]
    engine.chain = Chain(RerankConfig.from_dict({"stages": [{"stage": "filter", "blocked_categories": narrow}]}))
    like = recommender.similar(top[1], 10)
    every, _ = engine.similar(engine.item_index([top[1]]), engine.n_items)
    want = [str(engine.item_ids[i]) for i in every[0] if i >= 0]
    want = [i for i in want if set(recommender.catalog.categories(i)) <= {kept}][:10]
    assert like[0] == recommender.slot.current.version and len(want) >= 5
    assert [i.item_id for i in like[1]] == want
    engine.chain = Chain(RerankConfig.from_dict({"stages": [{"stage": "filter", **policy}]}))
    # items stored since the model loaded are judged by their categories and the user's events on them
    recommender.store.upsert_items([{"item_id": "late-blocked", "categories": [blocked_category]},
                                    {"item_id": "late-seen", "categories": []}, {"item_id": "late-ok"}])  # fmt: skip
    recommender.catalog.note_items(recommender.store.get_items(["late-blocked", "late-seen", "late-ok"]))
    recommender.store.ingest_events([{"user_id": control[0], "item_id": "late-seen", "type": "view",
                                      "timestamp": "2026-02-03T20:00:00Z"}])  # fmt: skip
    events = recommender.store.user_events([control[0]])[control[0]]
    where = recommender._filters(recommender.slot.current, events, recommender.clock.now_us())
    assert where(["late-blocked", "late-seen", "late-ok", blocked_item]).tolist() == [False, False, True, False]
    engine.recommend = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))  # the fallback
    fallback = recommender.recommend([ListRequest(personal, k=15)])[0]
    assert fallback.fallback is not None and all(allowed(i.item_id) for i in fallback.items)

    # the seen rule: consumed items stay out by default, and come back where the model's filter keeps them
    events = recommender.store.user_events(control)
    user = max(control, key=lambda u: len(set(events[u].item_id.tolist()) & set(top[:15])))
    consumed = set(events[user].item_id.tolist())
    assert consumed & set(top[:15])
    engine.chain = Chain(RerankConfig.from_dict({"stages": [{"stage": "filter"}]}))
    assert not consumed & {i.item_id for i in recommender.recommend([ListRequest(user, k=15)])[0].items}
    engine.chain = Chain(RerankConfig.from_dict({"stages": [{"stage": "filter", "seen": False}]}))
    assert [i.item_id for i in recommender.recommend([ListRequest(user, k=15)])[0].items] == top[:15]
