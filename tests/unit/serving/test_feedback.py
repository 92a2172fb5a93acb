"""The exposure log reads the store incrementally: new exposures, and engagements with older ones."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastemaker.clock import FixedClock, from_us, to_us
from tastemaker.reranking import Catalog, FeedbackLog
from tastemaker.serving.feedback import ExposureLog
from tastemaker.serving.models import Loaded
from tastemaker.store import ExposedItem, Exposure, open_store

T0 = "2026-11-26T12:00:00Z"


def shown(request: str, at: str, variant: str = "personalized") -> Exposure:
    return Exposure(request, "u1", variant, to_us(at), [ExposedItem(1, "m1", 1.0, "als", 1.0),
                                                       ExposedItem(2, "m2", 0.5, "als", 1.0)])  # fmt: skip


def test_each_update_adds_new_exposures_and_later_engagements(tmp_path: Path) -> None:
    clock = FixedClock("2026-11-26T13:00:00Z")
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), margin_us=1_000_000)
        store.record_exposures([shown("r1", T0), shown("c1", T0, variant="control")])
        log.update(to_us("2026-11-26T12:10:00Z"))
        rows = log.rows
        assert rows["request_id"].tolist() == ["r1", "r1"] and rows["engaged_us"].isna().all()  # control left out
        store.record_exposures([shown("r2", "2026-11-26T12:20:00Z")])
        store.ingest_events([{"user_id": "u1", "item_id": "m2", "type": "click", "timestamp": "2026-11-26T12:30:00Z",
                              "request_id": "r1"}])  # fmt: skip
        log.update(to_us("2026-11-26T12:40:00Z"))
        rows = log.rows.set_index(["request_id", "item_id"])
        assert len(rows) == 4  # nothing read twice
        assert rows.loc[("r1", "m2"), "engaged_us"] == to_us("2026-11-26T12:30:00Z")  # an older exposure's click
        assert np.isnan(rows.loc[("r1", "m1"), "engaged_us"]) and rows.loc["r2", "engaged_us"].isna().all()
        log.update(to_us("2026-11-27T12:25:00Z"))
        assert len(log) == 0 and log.rows.empty  # a day later the window is empty


def test_the_log_keeps_the_newest_rows_when_over_its_bound(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=FixedClock("2026-11-26T13:00:00Z")) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), max_rows=3)
        store.record_exposures([shown("r1", T0), shown("r2", "2026-11-26T12:01:00Z")])
        log.update(to_us("2026-11-26T12:05:00Z"))
        rows = log.rows
        assert rows["request_id"].tolist() == ["r1", "r2", "r2"]


def test_rows_read_again_inside_the_margin_keep_their_engagements_and_late_events_count(tmp_path: Path) -> None:
    clock = FixedClock("2026-11-26T12:00:30Z")  # the ingestion clock
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), margin_us=60_000_000)
        store.record_exposures([shown("r1", "2026-11-26T12:00:00Z")])
        store.ingest_events([{"user_id": "u1", "item_id": "m1", "type": "click", "timestamp": "2026-11-26T12:00:10Z",
                              "request_id": "r1"}])  # fmt: skip
        log.update(to_us("2026-11-26T12:00:30Z"))
        rows = log.rows.set_index("item_id")
        assert rows.loc["m1", "engaged_us"] == to_us("2026-11-26T12:00:10Z")
        store.record_exposures([shown("r2", "2026-11-26T12:00:40Z")])
        log.update(to_us("2026-11-26T12:00:50Z"))  # r1 is inside the margin: read again, not twice
        rows = log.rows
        assert rows["request_id"].tolist() == ["r1", "r1", "r2", "r2"]
        clicked = rows.set_index(["request_id", "item_id"]).loc[("r1", "m1"), "engaged_us"]
        assert clicked == to_us("2026-11-26T12:00:10Z")
        clock.advance(3600)  # an hour later the client sends a click it kept offline, dated just after r1
        store.ingest_events([{"user_id": "u1", "item_id": "m2", "type": "click", "timestamp": "2026-11-26T12:00:20Z",
                              "request_id": "r1"}])  # fmt: skip
        log.update(to_us("2026-11-26T13:00:50Z"))
        rows = log.rows.set_index(["request_id", "item_id"])
        assert rows.loc[("r1", "m2"), "engaged_us"] == to_us("2026-11-26T12:00:20Z")
        assert rows["engaged_us"].notna().sum() == 2


def test_requests_cut_by_the_bound_keep_their_remaining_rows_attributable(tmp_path: Path) -> None:
    clock = FixedClock("2026-11-26T13:00:00Z")
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), max_rows=3, margin_us=0)
        store.record_exposures([shown("r1", T0), shown("r2", "2026-11-26T12:01:00Z")])
        log.update(to_us("2026-11-26T12:05:00Z"))  # r1's first row left
        clock.advance(60)
        store.ingest_events([{"user_id": "u1", "item_id": "m2", "type": "click", "timestamp": "2026-11-26T12:06:00Z",
                              "request_id": "r1"}])  # fmt: skip
        log.update(to_us("2026-11-26T12:07:00Z"))
        rows = log.rows
        assert rows["request_id"].tolist() == ["r1", "r2", "r2"]
        assert rows["engaged_us"].tolist()[0] == to_us("2026-11-26T12:06:00Z")


def _from_scratch(log: ExposureLog, engine: SimpleNamespace) -> FeedbackLog:
    """The feedback a model reads, built from the whole log at once (what the kept-in-step one must equal)."""
    rows = log.rows
    user = engine.user_ids.get_indexer(rows["user_id"])
    item = engine.item_ids.get_indexer(rows["item_id"])
    keep = (user >= 0) & (item >= 0) & (item < len(engine.catalog))
    engaged = rows["engaged_us"].to_numpy(np.float64)[keep]
    frame = pd.DataFrame({"user": user[keep], "item": item[keep], "shown_us": rows["timestamp_us"].to_numpy()[keep],
                          "engaged": ~np.isnan(engaged), "engaged_us": engaged})  # fmt: skip
    return FeedbackLog(frame, engine.catalog)


def _answers(log: FeedbackLog, items: np.ndarray, now: int, users: int) -> tuple[list, list]:
    return ([a.tolist() for a in log.item_counts(items, now)],
            [log.user_ignored(u, items, now, now - 3_600_000_000).tolist() for u in range(users)])  # fmt: skip


def test_the_feedback_kept_in_step_with_the_log_answers_as_one_built_from_scratch(tmp_path: Path) -> None:
    """Refresh after refresh — rows read again inside the margin, rows leaving past the bound, late clicks,
    users and items the model learns only later — the feedback a model keeps up to date row by row answers
    every question exactly as one built from the whole log."""
    rng = np.random.default_rng(5)
    n_items = 12
    catalog = Catalog(pd.Index([f"m{i}" for i in range(n_items)], dtype=object), pd.Index(["a", "b"]),
                      sp.csr_matrix(np.eye(n_items, 2, dtype=bool)), np.array([f"p{i % 3}" for i in range(n_items)],
                      dtype=object), np.zeros(n_items, np.int64), np.ones(n_items, bool))  # fmt: skip
    known_users = ["u0", "u1", "u2"]  # u3..u7 join the model as the test goes (folded in)
    engine = SimpleNamespace(user_ids=pd.Index(known_users, dtype=object), catalog=catalog,
                             item_ids=pd.Index([f"m{i}" for i in range(n_items - 2)], dtype=object))  # fmt: skip
    loaded = Loaded("v1", engine, {})  # type: ignore[arg-type]
    clock = FixedClock("2026-11-26T12:00:00Z")
    start = clock.now_us()
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), max_rows=150, margin_us=20_000_000)
        requests = 0
        served: tuple[FeedbackLog, int, tuple[list, list]] | None = None
        for step in range(40):
            now = start + (step + 1) * 10_000_000
            for _ in range(int(rng.integers(0, 4))):  # exposures of the last 18 s, inside the margin
                at = now - int(rng.integers(1, 18_000_000))  # before some of the last step's: they interleave
                user = f"u{int(rng.integers(8))}"
                shown_items = rng.choice(n_items + 2, 5, replace=False)  # m12, m13: items no model knows
                store.record_exposures([Exposure(f"r{requests}", user, "personalized", at,
                                                 [ExposedItem(p + 1, f"m{i}", 1.0, "als", 1.0)
                                                  for p, i in enumerate(shown_items)])])  # fmt: skip
                requests += 1
            if requests and rng.random() < 0.5:  # a click on an earlier list, sometimes long after it
                request = f"r{int(rng.integers(requests))}"
                store.ingest_events([{"user_id": "u0", "item_id": f"m{int(rng.integers(n_items))}", "type": "click",
                                      "timestamp": from_us(now - 1).isoformat(), "request_id": request}])  # fmt: skip
            if step % 7 == 3 and len(engine.user_ids) < 8:  # a user folded in, an item added to the model
                engine.user_ids = engine.user_ids.append(pd.Index([f"u{len(engine.user_ids)}"], dtype=object))
                engine.item_ids = pd.Index([f"m{i}" for i in range(min(len(engine.item_ids) + 1, n_items))],
                                           dtype=object)  # fmt: skip
            clock.advance(10)
            log.update(now)
            items = np.arange(n_items)
            if served is not None:  # the feedback served until now answers as it did: the update left it alone
                assert _answers(served[0], items, served[1], len(served[2][1])) == served[2]
            got, want = loaded.feedback_from(log), _from_scratch(log, engine)
            asked_at = now - 8_000_000  # inside the margin: the rows the next update reads again
            served = (got, asked_at, _answers(got, items, asked_at, len(engine.user_ids)))
            for asked in (now, now - 15_000_000):
                assert all(np.array_equal(a, b) for a, b in zip(got.item_counts(items, asked),
                                                                want.item_counts(items, asked), strict=True))
                assert got.provider_shares(asked, asked - 60_000_000) == want.provider_shares(asked, asked - 60_000_000)
                for user in range(len(engine.user_ids)):
                    assert np.array_equal(got.user_ignored(user, items, asked, start),
                                          want.user_ignored(user, items, asked, start)), (step, user)
        assert requests > 40 and len(log) == 150  # the bound was reached: rows left from the front


def test_a_paced_update_reads_a_few_seconds_at_a_time_and_ends_as_one_read(tmp_path: Path) -> None:
    """After the first update, a paced log reads its exposures a slice at a time (a pause after each but the
    last): the rows, their order, their engagements and what counts as freshly read match an unpaced log's."""
    clock = FixedClock("2026-11-26T12:00:30Z")
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        pauses: list[float] = []
        paced = ExposureLog(store, days=1, engagement_types=("click",), margin_us=5_000_000, pause=pauses.append,
                            slice_us=2_000_000)  # fmt: skip
        whole = ExposureLog(store, days=1, engagement_types=("click",), margin_us=5_000_000)
        store.record_exposures([shown("r0", "2026-11-26T12:00:00Z")])
        for log in (paced, whole):
            log.update(to_us("2026-11-26T12:00:01Z"))
        assert pauses == []  # the first read is whole
        # exposures on and between the slices' edges (the second update reads from 12:00:01 - 5 s)
        stamps = ["2026-11-26T11:59:58Z", "2026-11-26T11:59:57Z", "2026-11-26T11:59:59.999999Z",
                  "2026-11-26T12:00:02Z", "2026-11-26T12:00:03.5Z", "2026-11-26T12:00:06Z", "2026-11-26T12:00:09Z"]
        store.record_exposures([shown(f"r{n + 1}", at) for n, at in enumerate(stamps)])
        store.ingest_events([{"user_id": "u1", "item_id": "m2", "type": "click", "timestamp": "2026-11-26T12:00:07Z",
                              "request_id": "r6"}])  # fmt: skip
        for log in (paced, whole):
            log.update(to_us("2026-11-26T12:00:10Z"))
        assert len(pauses) == 6 and all(p >= 0 for p in pauses)  # 11:59:56 to 12:00:10: seven 2 s slices
        pd.testing.assert_frame_equal(paced.rows, whole.rows)
        assert paced.fresh == whole.fresh and paced.rows["request_id"].nunique() == 8
        assert paced.rows["engaged_us"].notna().sum() == 1
