"""The HTTP API over real HTTP (uvicorn on 127.0.0.1): every route, auth, holdout, exposures and their
attribution, real-time feedback, hot-swap, the corrupt-model fallback and the limits."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute

from tastemaker.api import check_bind, create_app
from tastemaker.clock import FixedClock, to_us
from tastemaker.errors import ConfigError
from tastemaker.serving import HoldoutConfig, Recommender, ServerSettings, assign, parse_api_keys
from tastemaker.store import open_store

from .conftest import ADMIN, INGEST, KEYS, RECOMMEND, SERVED_AT, World, client, serving

EVENT_AT = "2026-02-03T12:00:00Z"  # after the models' training end, before the server's now


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def personalized_user(world: World, start: int = 0) -> str:
    """A user of the world whom the holdout serves personalized lists."""
    for n in range(start, 300):
        if assign([f"u{n}"], HoldoutConfig())[0] == "personalized":
            return f"u{n}"
    raise AssertionError("no personalized user")


# -- auth ----------------------------------------------------------------------------------------------

EXPECTED_SCOPES = {
    ("POST", "/v1/events"): "ingest", ("POST", "/v1/items"): "ingest", ("PATCH", "/v1/items/{item_id:path}"): "ingest",
    ("DELETE", "/v1/items/{item_id:path}"): "ingest", ("POST", "/v1/users"): "ingest",
    ("GET", "/v1/items/{item_id:path}"): "recommend", ("GET", "/v1/items/{item_id:path}/similar"): "recommend",
    ("GET", "/v1/users/{user_id:path}"): "recommend", ("GET", "/v1/users/{user_id:path}/recommendations"): "recommend",
    ("GET", "/v1/popular"): "recommend", ("GET", "/v1/models"): "admin",
    ("POST", "/v1/models/{version}/promote"): "admin", ("POST", "/v1/models/rollback"): "admin",
    ("GET", "/metrics"): "admin",
}  # fmt: skip
OPEN = {("GET", "/healthz"), ("GET", "/readyz")}


DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def app_routes() -> list[tuple[str, str, str | None]]:
    """Every (method, path, scope) of the app, read from the app itself (routers included in it too)."""
    found = []

    def walk(routes: list) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                scopes = [getattr(d.call, "scope", None) for d in route.dependant.dependencies]
                found.extend((m, route.path, next((s for s in scopes if s), None)) for m in route.methods)
            elif hasattr(route, "original_router"):  # an included router
                walk(route.original_router.routes)
            else:
                assert route.path in DOCS, route.path  # nothing else may hide from the enumeration

    walk(create_app(ServerSettings()).routes)
    return found


def test_every_route_is_protected_by_the_scope_it_should_need() -> None:
    routes = app_routes()
    assert {(m, p): s for m, p, s in routes if s} == EXPECTED_SCOPES
    assert {(m, p) for m, p, s in routes if not s} == OPEN


def test_every_protected_route_answers_401_without_a_key_and_403_without_its_scope(server: str) -> None:
    wrong = {"ingest": RECOMMEND, "recommend": INGEST, "admin": RECOMMEND}
    for method, path, scope in app_routes():
        if scope is None:
            continue
        url = path.replace("{item_id:path}", "i1").replace("{user_id:path}", "u1").replace("{version}", "v1")
        body = {"json": {}} if method in ("POST", "PATCH") else {}
        with httpx.Client(base_url=server) as anonymous:
            assert anonymous.request(method, url, **body).status_code == 401, (method, path)
            bad = anonymous.request(method, url, headers={"Authorization": "Bearer not-a-key-at-all-000"}, **body)
            assert bad.status_code == 401, (method, path)
        with client(server, wrong[scope]) as c:
            denied = c.request(method, url, **body)
            assert denied.status_code == 403, (method, path)
            assert scope in denied.json()["message"]
    with httpx.Client(base_url=server) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json()["ready"] is True


def test_keys_parse_with_scopes_and_bad_entries_are_refused_without_echoing_the_key() -> None:
    keys = parse_api_keys(KEYS)
    assert [sorted(k.scopes) for k in keys] == [["admin", "ingest", "recommend"], ["ingest"], ["recommend"]]
    assert ADMIN not in repr(keys)
    with pytest.raises(ConfigError, match="unknown scope 'write'") as caught:
        parse_api_keys("secret-secret-secret:write")
    assert "secret-secret-secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        parse_api_keys("short:ingest")


def test_without_keys_the_server_binds_to_127_0_0_1_only() -> None:
    check_bind(ServerSettings(), "127.0.0.1")
    with pytest.raises(ConfigError, match="refusing to bind to '0.0.0.0' without API keys"):
        check_bind(ServerSettings(), "0.0.0.0")
    check_bind(ServerSettings(api_keys=parse_api_keys(KEYS)), "0.0.0.0")


# -- holdout -------------------------------------------------------------------------------------------


def test_the_holdout_share_is_within_one_point_over_20000_users_and_stable() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    for share in (0.05, 0.07, 0.10):
        variants = assign(users, HoldoutConfig(control_share=share))
        assert abs((variants == "control").mean() - share) <= 0.01
        assert np.array_equal(variants, assign(users, HoldoutConfig(control_share=share)))
    other = assign(users, HoldoutConfig(salt="another"))
    assert (other != assign(users, HoldoutConfig())).mean() > 0.05  # a new salt reshuffles
    for share in (0.2, 0.01):
        with pytest.raises(ConfigError, match="control_share must be within 0.05–0.10"):
            ServerSettings.from_dict({"holdout": {"control_share": share}})


def test_the_assignment_is_pinned_across_processes_and_releases() -> None:
    """SHA-256 of (salt, id): these users are in control under the default salt, on every machine, forever
    (a change here reshuffles every running experiment)."""
    variants = assign([f"user-{n}" for n in range(200)], HoldoutConfig())
    assert [n for n, v in enumerate(variants) if v == "control"] == [16, 32, 35, 45, 58, 61, 62, 66, 67, 114, 152,
                                                                     170, 172, 173]  # fmt: skip


def test_control_users_get_popularity_through_the_same_endpoint(server: str) -> None:
    users = [f"u{n}" for n in range(120)]
    expected = assign(users, HoldoutConfig())
    assert 0 < (expected == "control").sum() < len(users)
    with client(server) as c:
        for user, variant in zip(users, expected, strict=True):
            body = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            assert body["variant"] == variant
            assert (body["model_version"] == "popularity") == (variant == "control")
            if variant == "control":
                assert {i["source"] for i in body["items"]} == {"popular"} and len(body["items"]) == 10
                again = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
                assert again["variant"] == "control"


# -- events, items, users --------------------------------------------------------------------------------


def test_events_are_counted_stored_once_and_durable(server: str, world: World) -> None:
    batch = [
        {"event_id": "x1", "user_id": "u1", "item_id": "i3", "type": "click", "timestamp": EVENT_AT},
        {"event_id": "x1", "user_id": "u1", "item_id": "i3", "type": "click", "timestamp": EVENT_AT},
        {"event_id": "x2", "user_id": "u1", "item_id": "i4", "type": "frobnicate", "timestamp": EVENT_AT},
        {"event_id": "x3", "user_id": "u" * 300, "item_id": "i4", "type": "click", "timestamp": EVENT_AT},
    ]
    with client(server, INGEST) as c:
        first = c.post("/v1/events", json={"events": batch}).json()
        assert (first["accepted"], first["duplicate"], first["rejected"]) == (1, 1, 2)
        assert {(e["index"], e["field"]) for e in first["errors"]} == {(2, "type"), (3, "user_id")}
        assert first["event_ids"][:2] == ["x1", "x1"] and first["event_ids"][2:] == [None, None]
        again = c.post("/v1/events", json={"events": batch[:1]}).json()
        assert (again["accepted"], again["duplicate"]) == (0, 1)
    with open_store(world.url) as store:  # another connection: the acknowledged event is committed
        stored = store.events_frame(user_ids=["u1"], since_us=to_us(EVENT_AT))
        assert stored["event_id"].tolist() == ["x1"]


def test_items_and_users_are_upserted_read_changed_and_deleted(server: str) -> None:
    with client(server) as c:
        made = c.post("/v1/items", json={"items": [{"item_id": "new-1", "title": "Heat", "categories": ["Crime"]},
                                                   {"item_id": "new-2", "categories": "Crime"}]}).json()  # fmt: skip
        assert made["accepted"] == 1 and made["errors"][0]["index"] == 1 and made["errors"][0]["field"] == "categories"
        assert c.get("/v1/items/new-1").json()["title"] == "Heat"
        changed = c.patch("/v1/items/new-1", json={"title": "Heat (1995)", "attributes": {"length": 170}}).json()
        assert changed["title"] == "Heat (1995)" and changed["categories"] == ["Crime"] and changed["available"]
        assert c.delete("/v1/items/new-1").json()["available"] is False
        assert c.get("/v1/items/new-1").json()["available"] is False
        assert c.get("/v1/items/nope").status_code == 404
        assert c.patch("/v1/items/nope", json={"title": "x"}).status_code == 404
        assert c.patch("/v1/items/new-1", json={"colour": "red"}).status_code == 422
        users = c.post(
            "/v1/users", json={"users": [{"user_id": "n1", "attributes": {"preferred_categories": ["Jazz"]}}]}
        )
        assert users.json()["accepted"] == 1
        assert c.get("/v1/users/n1").json()["attributes"] == {"preferred_categories": ["Jazz"]}
        assert c.get("/v1/users/nobody").status_code == 404


def test_a_deleted_item_is_not_recommended_any_more(server: str) -> None:
    user = personalized_user(None)  # type: ignore[arg-type]
    with client(server) as c:
        top = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["items"][0]["item_id"]
        assert c.delete(f"/v1/items/{top}").status_code == 200
        for _ in range(3):
            listed = [
                i["item_id"] for i in c.get(f"/v1/users/{user}/recommendations", params={"k": 30}).json()["items"]
            ]
            assert top not in listed
        popular = [i["item_id"] for i in c.get("/v1/popular", params={"k": 200}).json()["items"]]
        assert top not in popular
        similar = c.get("/v1/items/i5/similar", params={"k": 50}).json()
        assert top not in [i["item_id"] for i in similar["items"]] and len(similar["items"]) == 50


def test_similar_and_popular_lists(server: str) -> None:
    with client(server) as c:
        similar = c.get("/v1/items/i3/similar", params={"k": 5}).json()
        assert len(similar["items"]) == 5 and "i3" not in [i["item_id"] for i in similar["items"]]
        assert similar["model_version"] != "popularity"
        assert c.get("/v1/items/nope/similar").status_code == 404
        popular = c.get("/v1/popular", params={"k": 5, "category": "Action"}).json()["items"]
        assert len(popular) == 5
        for item in popular:
            assert "Action" in c.get(f"/v1/items/{item['item_id']}").json()["categories"]
        scores = [i["score"] for i in c.get("/v1/popular", params={"k": 20}).json()["items"]]
        assert scores == sorted(scores, reverse=True)


# -- recommendations, exposures, attribution --------------------------------------------------------------


def test_a_list_is_written_to_the_exposure_log_and_events_are_attributed_to_it(server: str, world: World) -> None:
    user = personalized_user(world)
    with client(server) as c:
        body = c.get(f"/v1/users/{user}/recommendations",
                     params={"k": 12, "context.device": "mobile", "exclude": "i1,i2"}).json()  # fmt: skip
        items = body["items"]
        assert len(items) == 12 and [i["position"] for i in items] == list(range(1, 13))
        assert all(0 < i["propensity"] <= 1 for i in items) and {"i1", "i2"}.isdisjoint(i["item_id"] for i in items)
        assert body["variant"] == "personalized" and body["model_version"] == world.version
        clicked = items[3]["item_id"]
        click = {"user_id": user, "item_id": clicked, "type": "click", "timestamp": EVENT_AT}
        sent = c.post("/v1/events", json={"events": [{**click, "request_id": body["request_id"]}]})
        assert sent.json()["accepted"] == 1
    with open_store(world.url) as store:
        wait_for(lambda: store.counts()["exposures"] >= 1)
        rows = store.exposures_frame(engagement_types=["click"])
        rows = rows[rows["request_id"] == body["request_id"]].set_index("item_id")
        assert len(rows) == 12 and set(rows["variant"]) == {"personalized"}
        assert set(rows["model_version"]) == {world.version} and rows["config_hash"].iloc[0]
        assert rows["context"].iloc[0] == {"device": "mobile"}
        assert rows.loc[clicked, "engaged_us"] == to_us(EVENT_AT)
        assert rows["engaged_us"].notna().sum() == 1
        assert [rows.loc[i["item_id"], "position"] for i in items] == list(range(1, 13))
        np.testing.assert_allclose([rows.loc[i["item_id"], "propensity"] for i in items],
                                   [i["propensity"] for i in items])  # fmt: skip


def test_exposures_queued_at_shutdown_are_written(settings_for: Callable[..., ServerSettings], world: World) -> None:
    settings = settings_for(exposure_flush_seconds=30.0)  # nothing is flushed by the timer during the test
    with serving(settings) as url, httpx.Client(base_url=url) as c:
        ids = [c.get(f"/v1/users/u{n}/recommendations", params={"k": 5}).json()["request_id"] for n in range(40)]
    with open_store(world.url) as store:
        assert set(ids) <= set(store.exposures_frame()["request_id"])


# -- real-time feedback ----------------------------------------------------------------------------------


def test_events_since_training_change_the_next_list_without_a_retrain(server: str) -> None:
    with client(server) as c:
        newcomer = next(u for u in (f"new-{n}" for n in range(100)) if assign([u], HoldoutConfig())[0] != "control")
        cold = c.get(f"/v1/users/{newcomer}/recommendations", params={"k": 10}).json()["items"]
        assert not any(i["reason"].startswith("because you liked") for i in cold)
        liked = ["i10", "i11", "i12"]
        events = [{"user_id": newcomer, "item_id": i, "type": "complete", "timestamp": EVENT_AT} for i in liked]
        assert c.post("/v1/events", json={"events": events}).json()["accepted"] == 3
        warm = c.get(f"/v1/users/{newcomer}/recommendations", params={"k": 10}).json()["items"]
        titles = {c.get(f"/v1/items/{i}").json()["title"] for i in liked}
        assert any(i["reason"].removeprefix("because you liked ").removeprefix("similar to ") in titles for i in warm)
        assert not set(liked) & {i["item_id"] for i in warm}  # the seen filter, from the events just sent
        # a known user: what they just consumed never comes back
        user = personalized_user(None)  # type: ignore[arg-type]
        first = c.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()["items"][0]["item_id"]
        done = {"user_id": user, "item_id": first, "type": "complete", "timestamp": EVENT_AT}
        c.post("/v1/events", json={"events": [done]})
        for _ in range(3):
            again = c.get(f"/v1/users/{user}/recommendations", params={"k": 30}).json()["items"]
            assert first not in [i["item_id"] for i in again]


def test_items_shown_without_engagement_tire_within_the_refresh_interval(
    settings_for: Callable[..., ServerSettings], world: World
) -> None:
    (world.models / "registry.json").unlink()  # serve the fatigue model
    from tastemaker.models import Registry

    Registry(world.models).promote(world.fatigue)
    user = personalized_user(world)
    clock = FixedClock(SERVED_AT)
    with serving(settings_for(), clock) as url, httpx.Client(base_url=url) as c:

        def listed() -> list[str]:
            clock.advance(1)  # an exposure counts from the instant after it was shown
            return [i["item_id"] for i in c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["items"]]

        first = listed()
        assert listed() == first and len(first) == 10  # no exploration in this chain: the same list twice
        wait_for(lambda: not set(first) & set(listed()))  # each shown twice, never engaged with: filtered
        other = personalized_user(world, int(user[1:]) + 1)
        assert set(first) & set(listed_for(c, other, clock))  # fatigue is per user


def listed_for(c: httpx.Client, user: str, clock: FixedClock) -> list[str]:
    clock.advance(1)
    return [i["item_id"] for i in c.get(f"/v1/users/{user}/recommendations", params={"k": 30}).json()["items"]]


# -- models: hot-swap and fallback -------------------------------------------------------------------------


def test_promotion_hot_swaps_while_requests_keep_succeeding(server: str, world: World) -> None:
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()
    user = personalized_user(world)

    def hammer() -> None:
        with client(server) as c:
            while not stop.is_set():
                r = c.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                statuses.append(r.status_code)
                versions.add(r.json().get("model_version", ""))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        with client(server) as c:
            promoted = c.post(f"/v1/models/{world.second}/promote").json()
            assert promoted["current"] == promoted["serving"] == world.second
            time.sleep(0.3)
            assert c.get(f"/v1/users/{user}/recommendations").json()["model_version"] == world.second
            back = c.post("/v1/models/rollback").json()
            assert back["serving"] == world.version
            assert c.post("/v1/models/nope/promote").status_code == 404
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}
    assert versions == {world.version, world.second}


def test_a_corrupt_or_missing_model_serves_popularity_with_a_warning_and_a_metric(server: str, world: World) -> None:
    user = personalized_user(world)
    engine = world.models / world.second / "engine.pkl"
    engine.write_bytes(b"not a pickle")
    with client(server) as c:
        state = c.post(f"/v1/models/{world.second}/promote").json()
        assert state["current"] == world.second and state["serving"] is None and "checksum" in state["error"]
        body = c.get(f"/v1/users/{user}/recommendations", params={"k": 10})
        assert body.status_code == 200 and body.json()["model_version"] == "popularity"
        assert len(body.json()["items"]) == 10
        assert c.get("/readyz").json()["model_version"] is None
        metrics = c.get("/metrics").text
        assert _metric(metrics, "tastemaker_fallbacks_total") >= 1
        assert _metric(metrics, "tastemaker_model_load_failures_total") >= 1
        assert 'tastemaker_model_info{version="popularity"} 1.0' in metrics
        assert c.post("/v1/models/rollback").json()["serving"] == world.version
    missing = world.models / world.version
    for f in missing.iterdir():
        if f.is_file():
            f.unlink()
    settings = ServerSettings(db=world.url, models_dir=world.models)
    with serving(settings) as url, httpx.Client(base_url=url) as c:
        body = c.get(f"/v1/users/{user}/recommendations", params={"k": 10})
        assert body.status_code == 200 and body.json()["model_version"] == "popularity"


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def test_metrics_count_requests_by_route_and_events_by_outcome(server: str) -> None:
    with client(server) as c:
        for n in range(3):
            c.get(f"/v1/users/u{n}/recommendations", params={"k": 5})
        good = {"user_id": "u1", "item_id": "i1", "type": "click", "timestamp": EVENT_AT}
        c.post("/v1/events", json={"events": [good, {"user_id": "u1", "type": "click"}]})
        text = c.get("/metrics").text
    route = 'route="/v1/users/{user_id:path}/recommendations",status="200"'
    assert _metric(text, f'tastemaker_request_seconds_count{{method="GET",{route}}}') == 3
    assert _metric(text, 'tastemaker_events_total{outcome="accepted"}') == 1
    assert _metric(text, 'tastemaker_events_total{outcome="rejected"}') == 1


def test_a_server_behind_its_load_answers_503_with_retry_after_and_counts_it(
    settings_for: Callable[..., ServerSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lists that waited over ``list_wait_seconds`` for their turn are refused over HTTP, not served late."""
    compute = Recommender.recommend

    def slow(self: Recommender, requests: list) -> list:
        time.sleep(0.5)
        return compute(self, requests)

    monkeypatch.setattr(Recommender, "recommend", slow)
    settings = settings_for(list_batch=1, list_wait_seconds=0.2)
    with serving(settings) as url, ThreadPoolExecutor(4) as pool:
        def ask(n: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as c:
                return c.get(f"/v1/users/u{n}/recommendations", params={"k": 5})

        answers = list(pool.map(ask, range(4)))  # one computes for 0.5 s while the others wait past 0.2 s
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 200 and 503 in codes and set(codes) <= {200, 503}
        refused = [a for a in answers if a.status_code == 503]
        assert all(a.headers["retry-after"] == "1" and "behind its load" in a.json()["message"] for a in refused)
        text = httpx.get(f"{url}/metrics", timeout=30).text
        assert _metric(text, 'tastemaker_lists_refused_total{reason="overloaded"}') == len(refused)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux feature")
def test_the_background_threads_run_after_the_request_threads(settings_for: Callable[..., ServerSettings]) -> None:
    with serving(settings_for(background_niceness=4)) as url:
        with client(url) as http:
            assert http.get("/v1/users/u1/recommendations").status_code == 200  # (the writer has run)
        threads = {t.name: t.native_id for t in threading.enumerate() if t.name in ("refresher", "exposure-writer")}
        assert len(threads) == 2
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert {name: os.getpriority(os.PRIO_PROCESS, tid) for name, tid in threads.items()} == {
            "refresher": min(base + 4, 19), "exposure-writer": min(base + 4, 19)
        }


def test_a_busy_worker_of_several_asks_its_client_to_reconnect(
    settings_for: Callable[..., ServerSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several workers, a list answered while another waits in the same worker closes its kept-alive
    connection (the client's next request then goes to the worker that accepts first); the last one waiting
    keeps it, and so does a single worker."""
    compute = Recommender.recommend
    started, allowed = threading.Semaphore(0), threading.Semaphore(0)

    def held(self: Recommender, requests: list) -> list:
        started.release()
        assert allowed.acquire(timeout=30)
        return compute(self, requests)

    monkeypatch.setattr(Recommender, "recommend", held)
    for workers, closes in ((2, True), (1, False)):
        settings = settings_for(workers=workers)
        app = create_app(settings, clock=FixedClock(SERVED_AT))
        with serving(settings, app=app) as url, httpx.Client(base_url=url, timeout=30) as c, \
                ThreadPoolExecutor(2) as pool:  # fmt: skip
            batcher = app.state.server.batcher
            first = pool.submit(c.get, "/v1/users/u1/recommendations", params={"k": 5})
            assert started.acquire(timeout=30)  # the first list is being computed (held)
            second = pool.submit(c.get, "/v1/users/u2/recommendations", params={"k": 5})
            wait_for(lambda b=batcher: b.pending == 2)  # ...and the second waits behind it
            allowed.release()
            answer = first.result(30)
            assert answer.status_code == 200
            assert (answer.headers.get("connection") == "close") is closes
            assert started.acquire(timeout=30)
            allowed.release()
            last = second.result(30)
            assert last.status_code == 200 and last.headers.get("connection") != "close"
            assert batcher.pending == 0
            text = c.get("/metrics").text
            assert _metric(text, "tastemaker_lists_rebalanced_total") == (1 if closes else 0)


# -- limits -----------------------------------------------------------------------------------------------


def test_limits_are_answered_with_413_or_422_and_a_clear_message(settings_for: Callable[..., ServerSettings]) -> None:
    settings = settings_for(limits={"max_batch": 5, "max_body_bytes": 4_096, "max_exclude": 3})
    event = {"user_id": "u1", "item_id": "i1", "type": "click", "timestamp": EVENT_AT}
    with serving(settings) as url, httpx.Client(base_url=url) as c:
        over = c.post("/v1/events", json={"events": [event] * 6})
        assert over.status_code == 413 and "over the limit of 5" in over.json()["message"]
        big = c.post("/v1/items", json={"items": [{"item_id": "x", "text": "a" * 5_000}]})
        assert big.status_code == 413 and "4096 bytes" in big.json()["message"]

        def chunks():
            yield b'{"items": [{"item_id": "x", "text": "'
            for _ in range(10):
                yield b"a" * 1_000
            yield b'"}]}'

        streamed = c.post("/v1/items", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        cases = [({"k": 501}, "k"), ({"k": 0}, "k"), ({"exclude": "a,b,c,d"}, "exclude"),
                 ({"category": "c" * 200}, "category"), ({"context.device": "d" * 300}, "context.device")]  # fmt: skip
        for params, field in cases:
            bad = c.get("/v1/users/u1/recommendations", params=params)
            assert bad.status_code == 422, params
            assert bad.json()["errors"][0]["field"] == field
        assert c.get(f"/v1/users/{'u' * 300}/recommendations").status_code == 422
        assert c.post("/v1/events", json={"events": []}).status_code == 422
        assert (
            c.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
        )
        unknown = c.post("/v1/events", json={"evnts": [event]})
        assert unknown.status_code == 422 and {e["field"] for e in unknown.json()["errors"]} >= {"evnts", "events"}
        assert c.get("/v1/popular", params={"k": 600}).status_code == 422
        assert c.get("/v1/items/i1/similar", params={"k": 600}).status_code == 422


def test_ids_and_context_the_store_cannot_hold_are_refused_with_422(server: str, world: World) -> None:
    with client(server) as c:
        for path in ["/v1/users/a%00b/recommendations", "/v1/users/%20/recommendations", "/v1/items/a%00b",
                     "/v1/items/a%01b/similar", "/v1/users/a%7Fb"]:  # fmt: skip
            bad = c.get(path)
            assert bad.status_code == 422 and bad.json()["errors"], path
        for params in [{"context.device": "a\x00b"}, {"context.a\x00": "1"}, {"exclude": "a\x00"},
                       {"category": "x\x1f"}]:  # fmt: skip
            bad = c.get("/v1/users/u1/recommendations", params=params)
            assert bad.status_code == 422, params
        odd = c.get("/v1/users/u1/recommendations", params={"context.hour": "nan", "context.x": "1e400"}).json()
    with open_store(world.url) as store:  # a number JSON cannot hold is kept as text: the exposure is written
        wait_for(lambda: odd["request_id"] in set(store.exposures_frame()["request_id"]))


def test_the_openapi_document_describes_the_routes(server: str) -> None:
    with httpx.Client(base_url=server) as c:
        doc = c.get("/openapi.json").json()
    assert "/v1/users/{user_id}/recommendations" in doc["paths"]  # OpenAPI drops the :path converter
    assert doc["paths"]["/v1/events"]["post"]["description"]
    assert "RecommendationsResponse" in doc["components"]["schemas"]


def test_settings_load_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "tastemaker.toml"
    config.write_text('[server]\ndb = "sqlite:///x.db"\n[server.holdout]\ncontrol_share = 0.05\n')
    monkeypatch.setenv("TASTEMAKER_API_KEYS", KEYS)
    settings = ServerSettings.load(config, models_dir=Path("m"))
    assert settings.db == "sqlite:///x.db" and settings.holdout.control_share == 0.05
    assert settings.models_dir == Path("m") and len(settings.api_keys) == 3
    assert FixedClock(SERVED_AT).now_us() == to_us(SERVED_AT)
