"""tastemaker.Client against a real uvicorn server on 127.0.0.1: every method, every error class."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tastemaker import Client
from tastemaker.client import (
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RecommendedItem,
    RequestTooLargeError,
    ServerError,
)
from tastemaker.errors import TastemakerError
from tastemaker.models import Registry
from tastemaker.serving.settings import ServerSettings, parse_api_keys
from tests.integration.api.conftest import ADMIN, INGEST, KEYS, RECOMMEND, free_port, serving

SERVED = datetime(2026, 2, 4, tzinfo=UTC)  # conftest's SERVED_AT: events may not lie in the server's future


def event(n: int, **over: object) -> dict[str, object]:
    return {"event_id": f"client-{n}", "user_id": "u1", "item_id": f"i{n % 200}", "type": "click",
            "timestamp": (SERVED - timedelta(hours=1)).isoformat(), **over}  # fmt: skip


Settings = Callable[..., ServerSettings]


def models_dir(settings_for: Settings) -> Path:
    return settings_for().models_dir


def promoted_version(settings_for: Settings) -> str:
    version = Registry(models_dir(settings_for)).current
    assert version is not None
    return version


def check_list(items: tuple[RecommendedItem, ...], k: int) -> None:
    assert len(items) == k and [i.position for i in items] == list(range(1, k + 1))
    assert len({i.item_id for i in items}) == k
    assert all(0 < i.propensity <= 1 and i.reason and i.source for i in items)


def test_events_are_counted_accepted_duplicate_and_rejected(server: str) -> None:
    with Client(server, INGEST) as client:
        sent = [event(1), event(2, type="teleport"), event(3, event_id=None, timestamp=SERVED - timedelta(days=1))]
        result = client.send_events(sent)
        assert (result.accepted, result.duplicate, result.rejected) == (2, 0, 1)
        assert [(e.index, e.field) for e in result.errors] == [(1, "type")] and "teleport" in result.errors[0].reason
        assert result.event_ids[:2] == ("client-1", None) and isinstance(result.event_ids[2], str)
        again = client.send_events([event(1), event(4)])
        assert (again.accepted, again.duplicate, again.rejected, again.errors) == (1, 1, 0, ())
        assert again.event_ids == ("client-1", "client-4")


def test_items_are_upserted_read_changed_and_deleted(server: str) -> None:
    odd = "new item?#1"  # escaped whole into the path (a '/' cannot be: see the xfail at the end)
    with Client(server, INGEST) as ingest, Client(server, RECOMMEND) as reader:
        result = ingest.upsert_items([
            {"item_id": odd, "title": "Fresh", "categories": {"Jazz"}, "created_at": SERVED - timedelta(days=2)},
            {"item_id": "bad", "categories": "Jazz"},
            {"item_id": "..", "title": "Dots"},
        ])  # fmt: skip
        assert (result.accepted, result.rejected) == (2, 1)
        assert [(e.index, e.field) for e in result.errors] == [(1, "categories")]
        assert reader.get_item("..")["title"] == "Dots"  # not resolved as a path segment
        with pytest.raises(ValueError, match="non-empty string"):
            reader.get_item("")
        item = reader.get_item(odd)
        assert (item["item_id"], item["title"], item["categories"], item["available"]) == (odd, "Fresh", ["Jazz"], True)
        assert item["created_at"].startswith("2026-02-02")
        changed = ingest.update_item(odd, title="Fresher", attributes={"year": 2026})
        assert (changed["title"], changed["attributes"], changed["categories"]) == ("Fresher", {"year": 2026}, ["Jazz"])
        assert ingest.delete_item(odd)["available"] is False
        assert reader.get_item(odd)["available"] is False and reader.get_item(odd)["title"] == "Fresher"
        with pytest.raises(InvalidRequestError) as info:
            ingest.update_item(odd, colour="red")  # not a field of an item
        assert info.value.status == 422 and [e.field for e in info.value.errors] == ["colour"]


def test_users_are_upserted_and_read(server: str) -> None:
    with Client(server, ADMIN) as client:
        result = client.upsert_users([{"user_id": "newcomer", "attributes": {"preferred_categories": ["Jazz"]}},
                                      {"attributes": {}}])  # fmt: skip
        assert (result.accepted, result.rejected) == (1, 1) and result.errors[0].index == 1
        assert result.errors[0].field == "user_id"
        user = client.get_user("newcomer")
        assert user["user_id"] == "newcomer" and user["attributes"] == {"preferred_categories": ["Jazz"]}
        assert client.get_user("u3")["user_id"] == "u3"


def test_recommendations_have_k_items_in_order_with_propensities(server: str, settings_for: Settings) -> None:
    version = promoted_version(settings_for)
    seen: dict[str, str] = {}
    with Client(server, RECOMMEND) as client:
        for n in range(300):
            recs = client.recommendations(f"u{n}", 7, exclude=["i0", "i1"], context={"device": "mobile"})
            check_list(recs.items, 7)
            assert not {"i0", "i1"} & {i.item_id for i in recs.items} and recs.request_id
            assert recs.model_version == ("popularity" if recs.variant == "control" else version)
            seen.setdefault(recs.variant, f"u{n}")
            if len(seen) == 2:
                break
        assert set(seen) == {"personalized", "control"}  # the holdout answers through the same method
        category = client.get_item("i5")["categories"][0]
        recs = client.recommendations(seen["personalized"], 5, category=category, exclude="i5")
        assert len(recs.items) == 5 and "i5" not in {i.item_id for i in recs.items}
        assert all(category in client.get_item(i.item_id)["categories"] for i in recs.items)
        with pytest.raises(InvalidRequestError) as info:  # the context reaches the server as context.KEY
            client.recommendations("u1", context={"x" * 65: 1})
        assert info.value.errors[0].field == "context." + "x" * 65


def test_similar_and_popular_lists(server: str, settings_for: Settings) -> None:
    with Client(server, RECOMMEND) as client:
        similar = client.similar("i7", k=6)
        check_list(similar.items, 6)
        assert similar.model_version == promoted_version(settings_for)
        assert "i7" not in {i.item_id for i in similar.items}
        popular = client.popular(k=8)
        check_list(popular.items, 8)
        scores = [i.score for i in popular.items]
        assert popular.model_version == "popularity" and scores == sorted(scores, reverse=True)
        category = client.get_item(popular.items[0].item_id)["categories"][0]
        in_category = client.popular(k=3, category=category)
        assert all(category in client.get_item(i.item_id)["categories"] for i in in_category.items)
        assert client.popular(k=3, category="no such category").items == ()


def test_models_are_listed_promoted_and_rolled_back(server: str, settings_for: Settings) -> None:
    models, first = models_dir(settings_for), promoted_version(settings_for)
    second = f"{first}-copy"  # a second artifact: the same files under another version name
    shutil.copytree(models / first, models / second)
    with Client(server, ADMIN) as client:
        listed = client.models()
        assert (listed.current, listed.serving, listed.error) == (first, first, None)
        versions = {v.version: v for v in listed.versions}
        assert {first, second} <= set(versions) and versions[first].config_hash == versions[second].config_hash
        promoted = client.promote(second)
        assert (promoted.current, promoted.serving) == (second, second)
        assert client.recommendations("u2", 3).model_version in {second, "popularity"}
        assert client.ready()["model_version"] == second
        back = client.rollback()
        assert (back.current, back.serving) == (first, first)
        with pytest.raises(ConflictError, match="nothing to roll back to") as info:
            client.rollback()
        assert info.value.status == 409
        with pytest.raises(NotFoundError, match="unknown model version 'v0'"):
            client.promote("v0")


def test_health_ready_and_metrics(server: str, settings_for: Settings) -> None:
    version = promoted_version(settings_for)
    with Client(server, ADMIN) as client:
        assert client.health() is True
        assert client.ready() == {"ready": True, "model_version": version, "reason": None}
        client.send_events([event(10), event(10), event(11, user_id="")])
        text = client.metrics()
        assert 'tastemaker_events_total{outcome="accepted"} 1.0' in text
        assert 'tastemaker_events_total{outcome="duplicate"} 1.0' in text
        assert 'tastemaker_events_total{outcome="rejected"} 1.0' in text
        assert f'tastemaker_model_info{{version="{version}"}} 1.0' in text


def test_status_codes_raise_their_error_classes(server: str) -> None:
    secret = "not-a-key-but-secret-1234"
    with Client(server) as anonymous, pytest.raises(AuthenticationError, match="missing API key") as info:
        anonymous.get_item("i1")
    assert info.value.status == 401 and isinstance(info.value, TastemakerError)
    with Client(server, secret) as wrong, pytest.raises(AuthenticationError, match="unknown API key") as info:
        wrong.popular()
    assert secret not in f"{info.value} {info.value!r} {wrong!r} {pickle.loads(pickle.dumps(info.value))!r}"
    with Client(server, RECOMMEND) as reader:
        with pytest.raises(PermissionDeniedError, match="'admin' scope") as denied:
            reader.models()
        with pytest.raises(PermissionDeniedError, match="'ingest' scope"):
            reader.delete_item("i1")
        with pytest.raises(NotFoundError, match="unknown item 'nope'") as missing:
            reader.get_item("nope")
        with pytest.raises(NotFoundError, match="unknown user 'nobody'"):
            reader.get_user("nobody")
        with pytest.raises(NotFoundError, match="unknown item 'nope'"):
            reader.similar("nope")
        with pytest.raises(InvalidRequestError) as bad_k:
            reader.recommendations("u1", k=0)
        with pytest.raises(InvalidRequestError, match="501 is over the limit of 500"):
            reader.popular(k=501)
    assert (denied.value.status, missing.value.status, bad_k.value.status) == (403, 404, 422)
    assert [(e.index, e.field) for e in bad_k.value.errors] == [(None, "k")]
    copy = pickle.loads(pickle.dumps(bad_k.value))
    assert (type(copy), copy.status, copy.errors) == (InvalidRequestError, 422, bad_k.value.errors)


def test_batches_and_bodies_over_the_limits_are_413(settings_for: Settings) -> None:
    settings = settings_for(api_keys=parse_api_keys(KEYS), limits={"max_batch": 5, "max_body_bytes": 2048})
    with serving(settings) as url, Client(url, INGEST) as client:
        with pytest.raises(RequestTooLargeError, match="a batch of 6 events is over the limit of 5") as info:
            client.send_events([event(n) for n in range(6)])
        assert info.value.status == 413
        with pytest.raises(RequestTooLargeError, match="body over the limit of 2048 bytes"):
            client.upsert_items([{"item_id": "long", "text": "x" * 3000}])
        assert client.send_events([event(n) for n in range(5)]).accepted == 5  # at the limit is fine


def test_a_server_that_cannot_be_reached_raises_a_connection_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", "some-secret-key-0123") as client:
        assert client.health() is False
        with pytest.raises(ApiConnectionError, match="cannot reach http://127.0.0.1") as info:
            client.popular()
    assert "some-secret-key" not in str(info.value) and not isinstance(info.value, ApiError)


def test_answers_that_are_not_the_apis_own_are_mapped_by_status() -> None:
    # A healthy server never answers 5xx on purpose; a transport stands in for a failing one or its proxy.
    answers = {
        "/v1/popular": httpx.Response(503, json={"status": 503, "message": "the store is unavailable", "errors": []}),
        "/v1/models": httpx.Response(502, text="<html>Bad Gateway</html>"),
        "/readyz": httpx.Response(503, json={"ready": False, "reason": "the store does not answer"}),
        "/v1/users/u1": httpx.Response(200, text="not json"),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models/rollback":
            raise httpx.ReadTimeout("timed out", request=request)
        return answers[request.url.path]

    client = Client("http://api.test", transport=httpx.MockTransport(answer))
    with pytest.raises(ServerError, match=r"the store is unavailable \(HTTP 503\)"):
        client.popular()
    with pytest.raises(ServerError, match="Bad Gateway") as info:
        client.models()
    assert info.value.status == 502 and info.value.errors == ()
    assert client.ready() == {"ready": False, "reason": "the store does not answer"}
    with pytest.raises(ApiError, match="not JSON"):
        client.get_user("u1")
    with pytest.raises(ApiConnectionError, match="did not answer POST /v1/models/rollback in time"):
        client.rollback()


def test_an_item_id_with_a_slash_can_be_read(server: str) -> None:
    with Client(server, ADMIN) as client:
        assert client.upsert_items([{"item_id": "a/b", "title": "Slash"}]).accepted == 1
        assert client.get_item("a/b")["title"] == "Slash"
        assert client.update_item("a/b", title="Slashed")["title"] == "Slashed"
        assert client.delete_item("a/b")["available"] is False
        assert client.upsert_users([{"user_id": "c/d"}]).accepted == 1
        assert client.get_user("c/d")["user_id"] == "c/d"
        assert len(client.recommendations("c/d", k=5).items) == 5
        # an id ending in a route's own segment, its slash encoded: the item or user, not the route
        assert client.upsert_items([{"item_id": "e/similar", "title": "Tail"}]).accepted == 1
        assert client.get_item("e/similar")["title"] == "Tail"
        assert len(client.similar("i3", k=4).items) == 4  # the route itself still answers
        assert client.upsert_users([{"user_id": "f/recommendations"}]).accepted == 1
        assert client.get_user("f/recommendations")["user_id"] == "f/recommendations"
        assert len(client.recommendations("f", k=3).items) == 3
        with pytest.raises(ValueError, match="comma"):
            client.recommendations("f", k=3, exclude=["a,b"])
