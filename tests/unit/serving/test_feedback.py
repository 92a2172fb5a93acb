"""The exposure log reads the store incrementally: new exposures, and engagements with older ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tastemaker.clock import FixedClock, to_us
from tastemaker.serving.feedback import ExposureLog
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
        rows = log.update(to_us("2026-11-26T12:10:00Z"))
        assert rows["request_id"].tolist() == ["r1", "r1"] and rows["engaged_us"].isna().all()  # control left out
        store.record_exposures([shown("r2", "2026-11-26T12:20:00Z")])
        store.ingest_events([{"user_id": "u1", "item_id": "m2", "type": "click", "timestamp": "2026-11-26T12:30:00Z",
                              "request_id": "r1"}])  # fmt: skip
        rows = log.update(to_us("2026-11-26T12:40:00Z")).set_index(["request_id", "item_id"])
        assert len(rows) == 4  # nothing read twice
        assert rows.loc[("r1", "m2"), "engaged_us"] == to_us("2026-11-26T12:30:00Z")  # an older exposure's click
        assert np.isnan(rows.loc[("r1", "m1"), "engaged_us"]) and rows.loc["r2", "engaged_us"].isna().all()
        assert len(log.update(to_us("2026-11-27T12:25:00Z"))) == 0  # a day later the window is empty


def test_the_log_keeps_the_newest_rows_when_over_its_bound(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=FixedClock("2026-11-26T13:00:00Z")) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), max_rows=3)
        store.record_exposures([shown("r1", T0), shown("r2", "2026-11-26T12:01:00Z")])
        rows = log.update(to_us("2026-11-26T12:05:00Z"))
        assert rows["request_id"].tolist() == ["r1", "r2", "r2"]


def test_rows_read_again_inside_the_margin_keep_their_engagements_and_late_events_count(tmp_path: Path) -> None:
    clock = FixedClock("2026-11-26T12:00:30Z")  # the ingestion clock
    with open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock) as store:
        log = ExposureLog(store, days=1, engagement_types=("click",), margin_us=60_000_000)
        store.record_exposures([shown("r1", "2026-11-26T12:00:00Z")])
        store.ingest_events([{"user_id": "u1", "item_id": "m1", "type": "click", "timestamp": "2026-11-26T12:00:10Z",
                              "request_id": "r1"}])  # fmt: skip
        rows = log.update(to_us("2026-11-26T12:00:30Z")).set_index("item_id")
        assert rows.loc["m1", "engaged_us"] == to_us("2026-11-26T12:00:10Z")
        store.record_exposures([shown("r2", "2026-11-26T12:00:40Z")])
        rows = log.update(to_us("2026-11-26T12:00:50Z"))  # r1 is inside the margin: read again, not twice
        assert rows["request_id"].tolist() == ["r1", "r1", "r2", "r2"]
        clicked = rows.set_index(["request_id", "item_id"]).loc[("r1", "m1"), "engaged_us"]
        assert clicked == to_us("2026-11-26T12:00:10Z")
        clock.advance(3600)  # an hour later the client sends a click it kept offline, dated just after r1
        store.ingest_events([{"user_id": "u1", "item_id": "m2", "type": "click", "timestamp": "2026-11-26T12:00:20Z",
                              "request_id": "r1"}])  # fmt: skip
        rows = log.update(to_us("2026-11-26T13:00:50Z")).set_index(["request_id", "item_id"])
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
        rows = log.update(to_us("2026-11-26T12:07:00Z"))
        assert rows["request_id"].tolist() == ["r1", "r2", "r2"]
        assert rows["engaged_us"].tolist()[0] == to_us("2026-11-26T12:06:00Z")
