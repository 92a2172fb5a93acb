"""The store contract (``tastemaker.store.base``), run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tastemaker.clock import FixedClock, to_us
from tastemaker.errors import ConfigError, InvalidBatchError, StoreError
from tastemaker.store import ExposedItem, Exposure, ValidationConfig, open_store
from tastemaker.store.engine import make_engine
from tastemaker.store.schema import metadata

NOW = "2026-11-26T12:00:00+00:00"


def event(i: int, **over: object) -> dict[str, object]:
    base = {"event_id": f"e{i}", "user_id": f"u{i % 7}", "item_id": f"i{i % 11}", "type": "click",
            "timestamp": f"2026-11-2{i % 5}T10:00:00Z"}  # fmt: skip
    return {**base, **over}


@pytest.fixture
def store(store_url: str, clock: FixedClock):
    with open_store(store_url, clock=clock) as s:
        yield s


def test_new_store_is_empty_and_reopening_migrates_nothing(store_url: str, clock: FixedClock) -> None:
    with open_store(store_url, clock=clock) as first:
        assert first.counts() == {"items": 0, "users": 0, "events": 0, "exposures": 0}
        first.ingest_events([event(1)])
    with open_store(store_url, clock=clock) as again:
        assert again.counts()["events"] == 1


def test_migrated_schema_matches_the_table_definitions(store, store_url: str) -> None:
    engine = make_engine(store_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_events_round_trip_with_their_values(store) -> None:
    result = store.ingest_events([
        event(1, type="rating", value=4.5, context={"device": "mobile"}, request_id="r1"),
        event(2, timestamp=datetime(2026, 11, 20, 9, 30, tzinfo=UTC)),
    ])  # fmt: skip
    assert (result.accepted, result.duplicates, result.errors) == (2, 0, [])
    frame = store.events_frame(columns=["event_id", "type", "value", "timestamp_us", "context", "request_id"])
    rows = {r.event_id: r for r in frame.itertuples()}
    assert rows["e1"].value == 4.5 and rows["e1"].type == "rating"
    assert rows["e1"].context == {"device": "mobile"} and rows["e1"].request_id == "r1"
    assert rows["e1"].timestamp_us == to_us("2026-11-21T10:00:00Z")
    assert rows["e2"].timestamp_us == to_us("2026-11-20T09:30:00Z")


def test_a_repeated_event_id_is_stored_once_and_reported(store) -> None:
    first = store.ingest_events([event(1), event(2)])
    second = store.ingest_events([event(2), event(3), event(3, user_id="someone-else")])
    assert first.accepted == 2
    assert second.accepted == 1
    assert second.duplicate_ids == ["e2", "e3"]
    assert second.event_ids == ["e2", "e3", "e3"]
    assert store.counts()["events"] == 3
    assert store.events_frame().set_index("event_id").loc["e3", "user_id"] == "u3"  # the first one won


def test_events_without_id_get_a_content_id_so_a_resend_is_a_duplicate(store) -> None:
    payload = {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2026-11-25T08:00:00Z"}
    first = store.ingest_events([payload])
    again = store.ingest_events([dict(payload)])
    other = store.ingest_events([{**payload, "item_id": "i2"}])
    assert first.accepted == 1 and first.event_ids[0]
    assert again.accepted == 0 and again.duplicate_ids == first.event_ids
    assert other.accepted == 1 and other.event_ids != first.event_ids


def test_strict_mode_rejects_the_whole_batch_and_writes_nothing(store) -> None:
    store.ingest_events([event(0)])
    batch = [event(1), event(2), event(3, type="teleport"), event(4)]
    with pytest.raises(InvalidBatchError, match=r"record 2: type: unknown event type 'teleport'") as caught:
        store.ingest_events(batch, mode="strict")
    assert [(e.index, e.field) for e in caught.value.errors] == [(2, "type")]
    assert store.counts()["events"] == 1


def test_lenient_mode_stores_the_valid_records_and_reports_the_rest(store) -> None:
    batch = [event(1), event(2, value=float("nan")), event(3), {"item_id": "x", "type": "view"}]
    result = store.ingest_events(batch, mode="lenient")
    assert result.accepted == 2
    assert [(e.index, e.field) for e in result.errors] == [(1, "value"), (3, "user_id")]
    assert "finite" in result.errors[0].reason and "required" in result.errors[1].reason
    assert result.event_ids == ["e1", None, "e3", None]
    assert sorted(store.events_frame()["event_id"]) == ["e1", "e3"]


def test_future_skew_is_judged_by_the_injected_clock(store_url: str) -> None:
    clock = FixedClock(NOW)
    with open_store(store_url, clock=clock, validation=ValidationConfig(max_future_skew_seconds=60)) as store:
        soon = event(1, timestamp="2026-11-26T12:00:50Z")
        later = event(2, timestamp="2026-11-26T12:05:00Z")
        result = store.ingest_events([soon, later], mode="lenient")
        assert result.accepted == 1 and result.errors[0].field == "timestamp"
        assert "in the future" in result.errors[0].reason
        clock.advance(600)
        assert store.ingest_events([later]).accepted == 1
        missing = store.ingest_events([{"user_id": "u", "item_id": "i", "type": "view"}])
        stored = store.events_frame().set_index("event_id").loc[missing.event_ids[0], "timestamp_us"]
        assert stored == clock.now_us()  # no timestamp: the clock's now


def test_unknown_mode_is_refused(store) -> None:
    with pytest.raises(ConfigError, match="unknown mode 'loose'"):
        store.ingest_events([event(1)], mode="loose")


def test_items_upsert_keeps_fields_a_record_leaves_out(store) -> None:
    store.upsert_items([
        {"item_id": "m1", "title": "Heat", "categories": ["Crime", "Drama"], "provider": "p1",
         "created_at": "2026-01-01T00:00:00Z", "attributes": {"year": 1995}},
        {"item_id": "m2", "title": "Up"},
    ])  # fmt: skip
    result = store.upsert_items([{"item_id": "m1", "available": False}, {"item_id": "m2", "title": "Up!"},
                                 {"item_id": "m2", "text": "balloons"}])  # fmt: skip
    assert result.accepted == 2
    m1, m2 = store.get_items(["m1", "m2"])
    assert m1["title"] == "Heat" and m1["categories"] == ["Crime", "Drama"] and m1["available"] is False
    assert m1["attributes"] == {"year": 1995} and m1["created_at_us"] == to_us("2026-01-01T00:00:00Z")
    assert (m2["title"], m2["text"], m2["categories"], m2["available"]) == ("Up!", "balloons", [], True)
    assert [i["item_id"] for i in store.get_items(["m2", "nope", "m1"])] == ["m2", "m1"]
    assert store.counts()["items"] == 2


def test_item_and_user_errors_name_index_field_and_reason(store) -> None:
    bad = [{"item_id": "ok"}, {"item_id": "x", "categories": "Comedy"}, {"title": "no id"}]
    with pytest.raises(InvalidBatchError) as caught:
        store.upsert_items(bad)
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, "categories"), (2, "item_id")]
    assert store.counts()["items"] == 0
    result = store.upsert_users([{"user_id": "u1", "attributes": {"preferred_categories": ["Jazz"]}},
                                 {"user_id": "u2", "attributes": ["not", "an", "object"]}], mode="lenient")  # fmt: skip
    assert result.accepted == 1 and result.errors[0].index == 1 and result.errors[0].field == "attributes"
    assert store.get_users(["u1"])[0]["attributes"] == {"preferred_categories": ["Jazz"]}


def test_events_frame_reads_a_time_range_in_time_order(store) -> None:
    store.ingest_events([event(i) for i in range(10)])
    since, until = to_us("2026-11-21T00:00:00Z"), to_us("2026-11-23T00:00:00Z")
    frame = store.events_frame(since_us=since, until_us=until)
    assert len(frame) == 4
    assert frame["timestamp_us"].is_monotonic_increasing
    assert frame["timestamp_us"].between(since, until - 1).all()
    with pytest.raises(ConfigError, match="unknown event columns"):
        store.events_frame(columns=["event_id", "colour"])


def test_item_counts_are_counted_by_the_database_in_a_time_range(store) -> None:
    store.ingest_events([event(i) for i in range(30)])
    counts = store.item_counts().set_index("item_id")["events"]
    assert counts.sum() == 30 and counts["i0"] == 3
    since, until = to_us("2026-11-21T00:00:00Z"), to_us("2026-11-23T00:00:00Z")
    window = store.item_counts(since_us=since, until_us=until)
    assert window["events"].sum() == len(store.events_frame(since_us=since, until_us=until))


def test_item_counts_by_ingestion_range_too(store, clock: FixedClock) -> None:
    """Ingestion bounds are half-open like the time ones, and combine with them."""
    store.ingest_events([event(i) for i in range(10)])  # i0 … i9, stamped the 20th to the 24th
    first = clock.now_us()
    clock.advance(10)
    store.ingest_events([event(i) for i in range(10, 15)])  # i10, i0 … i3
    since, until = to_us("2026-11-21T00:00:00Z"), to_us("2026-11-23T00:00:00Z")

    def counted(**bounds: int) -> dict[str, int]:
        found = store.item_counts(**bounds)
        return dict(zip(found["item_id"], found["events"].tolist(), strict=True))

    assert counted(ingested_since_us=first + 1) == {"i10": 1, "i0": 1, "i1": 1, "i2": 1, "i3": 1}
    assert counted(ingested_until_us=first + 1) == {f"i{i}": 1 for i in range(10)}
    assert counted(ingested_until_us=first) == {}
    assert counted(since_us=since, until_us=until, ingested_since_us=first + 1) == {"i0": 1, "i1": 1}  # e11, e12
    assert counted(since_us=since, until_us=until, ingested_until_us=first + 1) == {"i1": 1, "i2": 1, "i6": 1, "i7": 1}
    assert counted(since_us=since, ingested_since_us=first, ingested_until_us=first + 1) == {
        f"i{i}": 1 for i in range(10) if i % 5
    }


def test_items_frame_reads_the_items_updated_since(store, clock: FixedClock) -> None:
    store.upsert_items([{"item_id": "a"}, {"item_id": "b"}])
    clock.advance(60)
    store.upsert_items([{"item_id": "b", "title": "B"}, {"item_id": "c"}])
    assert sorted(store.items_frame(updated_since_us=clock.now_us())["item_id"]) == ["b", "c"]
    assert len(store.items_frame()) == 3
    assert store.count_items(updated_since_us=clock.now_us()) == 2 and store.count_items() == 3
    assert store.count_items(updated_since_us=clock.now_us() + 1) == 0


def test_a_ping_answers(store) -> None:
    assert store.ping() is None


def test_events_frame_reads_the_asked_users_only(store) -> None:
    store.ingest_events([event(i) for i in range(10)])
    wanted = sorted({event(i)["user_id"] for i in (1, 4)})
    frame = store.events_frame(user_ids=wanted)
    assert set(frame["user_id"]) == set(wanted)
    assert len(frame) == sum(event(i)["user_id"] in wanted for i in range(10))
    assert frame["timestamp_us"].is_monotonic_increasing
    assert store.events_frame(user_ids=[]).empty
    assert store.events_frame(user_ids=["nobody"]).empty


def test_user_events_are_the_users_events_as_arrays_in_time_order(store) -> None:
    store.ingest_events([event(i, value=float(i) if i % 2 else None) for i in range(40)])
    until = to_us("2026-11-23T00:00:00Z")
    wanted = ["u1", "u3", "nobody", "u1"]
    found = store.user_events(wanted, until_us=until)
    frame = store.events_frame(user_ids=wanted, until_us=until)
    assert set(found) == {"u1", "u3"}  # a user without events is left out; a repeated one read once
    for user, got in found.items():
        expected = frame[frame["user_id"] == user]
        assert got.event_id.tolist() == expected["event_id"].tolist()  # time, then id, as events_frame
        assert got.item_id.tolist() == expected["item_id"].tolist()
        assert got.type.tolist() == expected["type"].tolist()
        assert np.array_equal(got.value, expected["value"].to_numpy(float), equal_nan=True)
        assert got.timestamp_us.dtype == np.int64 and (got.timestamp_us < until).all()
        assert got.frame(user)["event_id"].tolist() == got.event_id.tolist()
    assert len(store.user_events(["u1"])["u1"]) == sum(event(i)["user_id"] == "u1" for i in range(40))
    for user, got in found.items():  # one user alone (the API's request) reads the same
        alone = store.user_events([user], until_us=until)[user]
        assert alone.event_id.tolist() == got.event_id.tolist() and alone.type.tolist() == got.type.tolist()
        assert np.array_equal(alone.value, got.value, equal_nan=True) and alone.timestamp_us.dtype == np.int64
    assert store.user_events(["nobody"], until_us=until) == {}
    assert store.user_events([]) == {}


def test_exposures_frame_attributes_events_carrying_the_request_id(store) -> None:
    shown = Exposure("r1", "u1", "personalized", to_us(NOW), [ExposedItem(1, "m1", 0.9, "als", 1.0),
                                                              ExposedItem(2, "m2", 0.5, "als", 1.0)])  # fmt: skip
    store.record_exposures([shown])
    at = "2026-11-26T12:04:00Z"
    store.ingest_events([
        {"event_id": "a", "user_id": "u1", "item_id": "m2", "type": "click", "timestamp": at, "request_id": "r1"},
        {"event_id": "b", "user_id": "u1", "item_id": "m2", "type": "skip", "timestamp": "2026-11-26T12:01:00Z",
         "request_id": "r1"},
        {"event_id": "c", "user_id": "u1", "item_id": "m1", "type": "click", "timestamp": at},  # no request id
    ])  # fmt: skip
    frame = store.exposures_frame().set_index("item_id")
    assert np.isnan(frame.loc["m1", "engaged_us"])
    assert frame.loc["m2", "engaged_us"] == to_us("2026-11-26T12:01:00Z")
    clicks = store.exposures_frame(engagement_types=["click"]).set_index("item_id")
    assert clicks.loc["m2", "engaged_us"] == to_us(at) and np.isnan(clicks.loc["m1", "engaged_us"])


def test_exposures_are_stored_once_with_their_items(store) -> None:
    shown = Exposure(
        request_id="r1", user_id="u1", variant="personalized", timestamp_us=to_us(NOW),
        model_version="v1", config_hash="abc", context={"device": "tv"},
        items=[ExposedItem(1, "m1", 0.9, "als", 1.0), ExposedItem(2, "m2", 0.5, "explore", 0.25)],
    )  # fmt: skip
    assert store.record_exposures([shown]) == 1
    assert store.record_exposures([shown]) == 0
    frame = store.exposures_frame()
    assert list(frame["item_id"]) == ["m1", "m2"]
    assert list(frame["propensity"]) == [1.0, 0.25]
    assert set(frame["variant"]) == {"personalized"} and frame["context"].iloc[0] == {"device": "tv"}
    assert store.counts()["exposures"] == 1


def test_an_exposure_batch_over_one_insert_stores_only_the_new_ones_with_their_contexts(store) -> None:
    def shown(n: int, context: dict | None) -> Exposure:
        items = [ExposedItem(p, f"m{n}-{p}", 1.0 / p, "als", 0.5) for p in (1, 2, 3)]
        return Exposure(f"r{n:05d}", f"u{n % 7}", "personalized", to_us(NOW) + n, items, context=context)

    assert store.record_exposures([shown(n, {"device": "tv"}) for n in range(0, 2_500, 2)]) == 1_250
    batch = [shown(n, {"device": "mobile", "hour": 3.5} if n % 3 else None) for n in range(2_500)]
    assert store.record_exposures(batch) == 1_250  # the odd ones; the even ones were stored before
    frame = store.exposures_frame()
    assert len(frame) == 3 * 2_500 and store.counts()["exposures"] == 2_500
    one = frame.groupby("request_id").first()
    assert one.loc["r00002", "context"] == {"device": "tv"}  # stored first, not overwritten
    assert one.loc["r00001", "context"] == {"device": "mobile", "hour": 3.5} and one.loc["r00003", "context"] is None
    assert list(frame.loc[frame["request_id"] == "r00001", "item_id"]) == ["m1-1", "m1-2", "m1-3"]
    assert frame.loc[frame["request_id"] == "r00001", "score"].tolist() == [1.0, 0.5, 1.0 / 3]


def test_concurrent_writers_store_each_event_once(store_url: str, clock: FixedClock) -> None:
    events = [event(i) for i in range(600)]
    totals: list[int] = []
    failures: list[BaseException] = []

    def writer(seed: int) -> None:
        order = events[:]
        random.Random(seed).shuffle(order)
        try:
            with open_store(store_url, clock=clock) as s:
                totals.append(sum(s.ingest_events(order[i : i + 50]).accepted for i in range(0, 600, 50)))
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    open_store(store_url, clock=clock).close()  # migrate once before the race
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sum(totals) == 600
    with open_store(store_url, clock=clock) as s:
        assert s.counts()["events"] == 600


def test_driver_errors_become_store_errors(tmp_path) -> None:
    with pytest.raises(StoreError, match="could not migrate"):
        open_store("postgresql://postgres@127.0.0.1:1/none")  # nothing listens on port 1
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create the folder"):
        open_store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'x.db'}")


def test_unsupported_urls_are_refused() -> None:
    with pytest.raises(ConfigError, match="unsupported store URL scheme 'mysql'"):
        open_store("mysql://localhost/db")
    with pytest.raises(ConfigError, match="is not a database URL"):
        open_store("not a url")


def test_sqlite_is_durable_by_configuration(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


# -- what PostgreSQL and SQLite would otherwise disagree on: validated before any write ------------


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"user_id": "u\x00x"}, "user_id", "NUL character"),
        ({"item_id": "i\ud800"}, "item_id", "unpaired surrogate"),
        ({"context": {"note": "a\x00b"}}, "context", "NUL character"),
        ({"context": {"note": "\ud83d"}}, "context", "not JSON-serialisable"),
        ({"event_id": ""}, "event_id", "must not be empty"),
        ({"request_id": "  "}, "request_id", "must not be empty"),
        ({"user_id": 10**5000}, "user_id", "integer too long"),
    ],
)
def test_a_record_no_back_end_could_store_is_rejected_alone(store, bad: dict, field: str, reason: str) -> None:
    result = store.ingest_events([event(1), event(2, **bad), event(3)], mode="lenient")
    assert result.accepted == 2
    assert [(e.index, e.field) for e in result.errors] == [(1, field)]
    assert reason in result.errors[0].reason
    assert sorted(store.events_frame()["event_id"]) == ["e1", "e3"]


def test_items_with_unstorable_text_are_rejected_alone(store) -> None:
    result = store.upsert_items([{"item_id": "a", "title": "ok"}, {"item_id": "b", "title": "x\x00"},
                                 {"item_id": "c", "categories": ["Jazz", "\ud800"]}], mode="lenient")  # fmt: skip
    assert result.accepted == 1 and [(e.index, e.field) for e in result.errors] == [
        (1, "title"),
        (2, "categories"),
    ]


def test_json_objects_round_trip_including_empty_ones(store) -> None:
    store.ingest_events([event(1, context={}), event(2, context={"n": 1.5, "tags": ["a", "b"], "ok": True})])
    frame = store.events_frame(columns=["event_id", "context"]).set_index("event_id")
    assert frame.loc["e1", "context"] == {}
    assert frame.loc["e2", "context"] == {"n": 1.5, "tags": ["a", "b"], "ok": True}


def test_content_ids_tell_apart_what_differs(store) -> None:
    base = {"user_id": "u", "item_id": "i", "type": "view", "timestamp": "2026-11-25T08:00:00Z"}
    result = store.ingest_events([base, {**base, "request_id": "None"}, {**base, "user_id": "u\x1fi", "item_id": "x"},
                                  {**base, "user_id": "u", "item_id": "i\x1fx"}])  # fmt: skip
    assert result.accepted == 4 and len(set(result.event_ids)) == 4


def test_a_request_id_repeated_in_one_exposure_batch_is_stored_once_as_first_sent(store) -> None:
    def shown(user: str, item: str) -> Exposure:
        return Exposure("r1", user, "personalized", to_us(NOW), [ExposedItem(1, item, propensity=1.0)])

    assert store.record_exposures([shown("u1", "m1"), shown("u2", "m2")]) == 1
    frame = store.exposures_frame()
    assert frame[["user_id", "item_id"]].values.tolist() == [["u1", "m1"]]


def test_invalid_exposures_are_refused_before_writing(store) -> None:
    bad = Exposure("r9", "u1", "v" * 65, to_us(NOW), [ExposedItem(1, "m1", propensity=1.5)])
    with pytest.raises(InvalidBatchError) as caught:
        store.record_exposures([bad])
    assert [(e.index, e.field) for e in caught.value.errors] == [(0, "variant"), (0, "items[0].propensity")]
    assert store.counts()["exposures"] == 0


def test_a_schema_from_a_newer_version_is_a_store_error(store_url: str, clock: FixedClock) -> None:
    open_store(store_url, clock=clock).close()
    engine = make_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreError, match="has a schema this version cannot use"):
        open_store(store_url, clock=clock)


def test_in_memory_sqlite_is_refused_with_an_alternative() -> None:
    with pytest.raises(ConfigError, match="in-memory SQLite is not supported; use a file"):
        open_store("sqlite://")


def test_an_unchanged_upsert_leaves_the_row_untouched(store_url: str) -> None:
    clock = FixedClock(NOW)
    with open_store(store_url, clock=clock) as store:
        item = {"item_id": "m1", "title": "Heat", "categories": ["Crime"], "attributes": {"year": 1995}}
        store.upsert_items([item])
        clock.advance(60)
        store.upsert_items([dict(item), {"item_id": "m1"}])
        assert store.get_items(["m1"])[0]["updated_at_us"] == to_us(NOW)
        store.upsert_items([{**item, "attributes": {"year": 1996}}])
        stored = store.get_items(["m1"])[0]
        assert stored["updated_at_us"] == to_us(NOW) + 60_000_000 and stored["attributes"] == {"year": 1996}


def test_shown_items_and_engagements_are_the_exposure_logs_reads(store, clock: FixedClock) -> None:
    at = to_us(NOW)
    store.record_exposures([
        Exposure("r2", "u2", "personalized", at + 5, [ExposedItem(1, "m3", 0.9, "als", 1.0)]),
        Exposure("r1", "u1", "personalized", at, [ExposedItem(2, "m2", 0.5, "als", 1.0),
                                                  ExposedItem(1, "m1", 0.9, "als", 1.0)]),
        Exposure("c1", "u3", "control", at, [ExposedItem(1, "m1", 0.9, "popular", 1.0)]),
    ])  # fmt: skip
    shown = store.shown_items(since_us=at, until_us=at + 10, variant="personalized")
    assert shown.values.tolist() == [["r1", "u1", "m1", at], ["r1", "u1", "m2", at], ["r2", "u2", "m3", at + 5]]
    assert len(store.shown_items(since_us=at, until_us=at + 10)) == 4
    assert store.shown_items(since_us=at + 1, until_us=at + 5, variant="personalized").empty
    # a page of several slates, items recorded out of order: read by slate, then position (numerically)
    page = [ExposedItem(p, f"s{s}p{p}", 0.1, "als", 1.0, slate=s) for p in (10, 2, 0, 11, 1) for s in ("b", "a", "")]
    store.record_exposures([Exposure("r3", "u3", "personalized", at + 7, page)])
    read = store.shown_items(since_us=at + 6, until_us=at + 8)
    assert read["item_id"].tolist() == [f"s{s}p{p}" for s in ("", "a", "b") for p in (0, 1, 2, 10, 11)]
    assert set(read["request_id"]) == {"r3"} and set(read["timestamp_us"]) == {at + 7}
    clicks = [{"event_id": f"k{i}", "user_id": "u1", "item_id": "m2", "type": t, "timestamp": f"2026-11-26T12:0{i}:00Z",
               "request_id": "r1"} for i, t in enumerate(["view", "click", "click"])]  # fmt: skip
    store.ingest_events(clicks)
    found = store.engagements(since_us=at - 1, until_us=at + 10**9, types=["click"])
    assert found.values.tolist() == [["r1", "m2", to_us("2026-11-26T12:01:00Z")]]  # the first click
    assert store.engagements(since_us=at - 1, until_us=at + 10**9)["engaged_us"].tolist() == [at]  # the view
    later = clock.now_us() + 1
    assert store.engagements(since_us=at - 1, until_us=at + 10**9, ingested_since_us=later).empty


def test_a_read_of_a_store_whose_tables_are_gone_is_a_store_error(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "s.db"
    with open_store(f"sqlite:///{path}") as store:
        with sqlite3.connect(path) as raw:
            raw.execute("DROP TABLE events")
        for read in (lambda: store.user_events(["u1"]), lambda: store.user_events(["u1", "u2"])):
            with pytest.raises(StoreError, match="could not read events .*no such table"):
                read()
