"""The catalog view ranks popularity from the store, skips unavailable items and applies item writes at once."""

from __future__ import annotations

from pathlib import Path

from tastemaker.clock import FixedClock, from_us, to_us
from tastemaker.serving.catalog import DAY_US, CatalogView
from tastemaker.store import open_store

NOW = "2026-11-26T12:00:00Z"


def test_popularity_counts_the_window_first_then_older_events(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=FixedClock(NOW)) as store:
        store.upsert_items([{"item_id": i, "categories": [c]} for i, c in
                            [("a", "Jazz"), ("b", "Jazz"), ("c", "Rock"), ("d", "Rock"), ("e", "Rock")]])  # fmt: skip
        recent, old = "2026-11-25T12:00:00Z", "2026-01-01T12:00:00Z"
        events = [("b", recent)] * 3 + [("c", recent)] * 2 + [("a", old)] * 9 + [("d", old)]
        store.ingest_events([{"user_id": f"u{n}", "item_id": i, "type": "click", "timestamp": t}
                             for n, (i, t) in enumerate(events)])  # fmt: skip
        view = CatalogView(store, days=30)
        view.refresh(to_us(NOW))
        got = view.popular(10)
        assert got.item_ids == ["b", "c", "a", "d"]  # the window's, then older ones; "e" was never engaged with
        assert got.scores[0] > got.scores[1] > got.scores[2] > got.scores[3] > 0
        assert view.popular(10, category="Jazz").item_ids == ["b", "a"]
        assert view.popular(10, exclude={"b"}).item_ids == ["c", "a", "d"]
        asked: list[list[str]] = []

        def where(ids: list[str]) -> list[bool]:
            asked.append(ids)
            return [i not in ("b", "a") for i in ids]

        assert view.popular(2, where=where).item_ids == ["c", "d"] and asked == [["b", "c", "a", "d"]]
        assert view.popular(2, where=where).scores == view.popular(2, exclude={"b", "a"}).scores
        store.upsert_items([{"item_id": "c", "available": False}])
        view.note_items(store.get_items(["c"]))
        assert "c" not in view.popular(10).item_ids and view.unavailable == {"c"}
        view.refresh(to_us(NOW))
        assert view.popular(2).item_ids == ["b", "a"] and view.categories("a") == ("Jazz",)


def test_a_refresh_reads_only_items_changed_since_the_last(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        store.upsert_items([{"item_id": f"i{n}", "categories": ["Jazz"]} for n in range(50)])  # one instant
        view = CatalogView(store)
        assert len(view.refresh(clock.now_us())) == 50
        assert len(view.refresh(clock.now_us())) == 0  # the batch's instant is not read again
        store.upsert_items([{"item_id": "late", "categories": ["Rock"]}])  # another row at that same instant
        assert len(view.refresh(clock.now_us())) == 51 and view.categories("late") == ("Rock",)  # read again
        clock.advance(1)
        store.upsert_items([{"item_id": "i7", "categories": ["Rock"], "available": False}])  # one of them, later
        assert view.refresh(clock.now_us())["item_id"].tolist() == ["i7"]
        assert view.categories("i7") == ("Rock",) and view.unavailable == {"i7"}
        assert len(view.refresh(clock.now_us())) == 0


def test_a_recount_counts_the_window_a_day_at_a_time_pausing_between_days(tmp_path: Path) -> None:
    """The same counts as one query over the window (events on the days' edges included, once), paced after
    the first refresh: a pause after every day but the last, as long as that day's count took."""
    now = to_us(NOW)
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=FixedClock(NOW)) as store:
        store.upsert_items([{"item_id": f"i{n}"} for n in range(7)])
        day = DAY_US
        since = now - 3 * day
        stamps = [since, since + 1, since + day - 1, since + day, since + 2 * day, now, now - 1, since - 1, now + 1]
        events = [{"user_id": f"u{n}", "item_id": f"i{n % 7}", "type": "click", "timestamp": from_us(t).isoformat()}
                  for n, t in enumerate(stamps * 3)]  # fmt: skip
        assert store.ingest_events(events).accepted == len(events)
        pauses: list[float] = []
        view = CatalogView(store, days=3, pause=pauses.append)
        view.refresh(now)
        assert pauses == []  # the first refresh serves nothing yet: not paced
        whole = store.item_counts(since_us=since, until_us=now + 1).set_index("item_id")["events"]
        got = view.popular(10)
        assert sorted(got.item_ids) == sorted(whole.index)
        assert [round(s * sum(whole)) for s in got.scores] == [whole[i] for i in got.item_ids]
        view.refresh(now)
        assert len(pauses) == 3 and all(p >= 0 for p in pauses)  # four slices (three days and a microsecond)
        assert view.popular(10) == got
