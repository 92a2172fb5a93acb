"""The catalog view ranks popularity from the store, skips unavailable items and applies item writes at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tastemaker.clock import FixedClock, from_us, to_us
from tastemaker.serving.catalog import DAY_US, CatalogView, WindowCounts
from tastemaker.store import open_store

NOW = "2026-11-26T12:00:00Z"
HOUR_US = 3_600 * 1_000_000


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


def test_popularity_kept_up_to_date_counts_what_one_query_over_the_window_counts(tmp_path: Path) -> None:
    """Two days of counts, steps of a second to hours (full counts only at the first, when the clock goes back
    and a day on); events stamped now, a little and long ago, on and near the window's start (they leave it
    between counts), ahead of the clock, ingested just before a count and long before: the same counts as one
    query over the window, each time."""
    clock = FixedClock(NOW)
    rng = np.random.default_rng(7)
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        counts = WindowCounts(store, days=0.5, margin_us=5_000_000, resync_us=DAY_US)
        steps = [0, 1, 4, 60, 3_599, 1, 3_600, 7_200, 20, 30, 43_200, -5_000, 10, 6, 90_000, 1, 40, 9, 70, 2, 600]
        full, n = [], 0
        for step in steps:
            clock.advance(step)
            now = clock.now_us()
            since = now - DAY_US // 2
            stamps = [now, now - 1, now + 1, now + 299_000_000, since - 1, now - 3 * DAY_US,
                      *(since + 7_000_000 * k for k in range(12)), *(now - rng.integers(0, DAY_US // 2, 6))]
            events = [{"event_id": f"e{n + j}", "user_id": "u", "item_id": f"i{rng.integers(12)}", "type": "click",
                       "timestamp": from_us(int(t)).isoformat()} for j, t in enumerate(stamps)]  # fmt: skip
            n += len(events)
            assert store.ingest_events(events).accepted == len(events)
            clock.advance(int(rng.integers(0, 12)))  # some of them settle before the count, some not
            now = clock.now_us()
            whole = store.item_counts(since_us=now - DAY_US // 2, until_us=now + 1)
            expected = whole.sort_values(["events", "item_id"], ascending=[False, True])
            before = counts.full_us
            got = counts.count(now)
            full.append(counts.full_us != before)
            assert got.values.tolist() == expected.values.tolist(), f"after a step of {step} s"
        assert [i for i, was in enumerate(full) if was] == [0, steps.index(-5_000), steps.index(90_000)]


def test_an_ingestion_that_commits_late_still_counts_within_the_margin(tmp_path: Path) -> None:
    """Another writer's batch stamped with its ingestion instant (2 s before a count) but committed after it: the
    next count has it; one committed more than the margin late is the documented miss."""
    url, clock = f"sqlite:///{tmp_path / 's.db'}", FixedClock(NOW)
    with open_store(url, clock=clock) as store:
        counts = WindowCounts(store, days=1, margin_us=5_000_000)
        counts.count(clock.now_us())
        clock.advance(60)
        counts.count(clock.now_us())  # settles everything ingested before 55 s
        for lag, item in [(2, "within"), (9, "beyond")]:
            with open_store(url, clock=FixedClock(from_us(clock.now_us() - lag * 1_000_000))) as writer:
                writer.ingest_events([{"user_id": "u", "item_id": item, "type": "click",  # (an inner hour)
                                       "timestamp": "2026-11-26T06:00:00Z"}])  # fmt: skip
        clock.advance(60)
        got = counts.count(clock.now_us())
        assert got["item_id"].tolist() == ["within"]
