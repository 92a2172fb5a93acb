"""read_events_table on small CSV, TSV and Parquet files written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tastemaker.data.dataset import EVENT_FIELDS
from tastemaker.data.tabular import read_events_table
from tastemaker.errors import DataFormatError

T0 = 1_672_531_200  # 2023-01-01T00:00:00Z
MAPPING = {"user_id": "customer", "item_id": "sku", "timestamp": "ts", "type": "action", "value": "amount"}


def shop_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "customer": ["c1", "c2", "c1"],
        "sku": ["A-1", "B-2", "C-3"],
        "ts": [T0, T0 + 60, T0 + 3600],
        "action": ["view", "purchase", "view"],
        "amount": [None, 19.5, None],
    })  # fmt: skip


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_columns_are_read_through_the_mapping(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"shop.{suffix}"
    frame = shop_frame()
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path, index=False)
    ds = read_events_table(path, MAPPING)
    events = ds.events
    assert ds.name == f"events:shop.{suffix}"
    assert list(events.columns) == list(EVENT_FIELDS)
    assert events["user_id"].tolist() == ["c1", "c2", "c1"]
    assert events["item_id"].tolist() == ["A-1", "B-2", "C-3"]
    assert events["type"].tolist() == ["view", "purchase", "view"]
    assert events["timestamp_us"].tolist() == [T0 * 10**6, (T0 + 60) * 10**6, (T0 + 3600) * 10**6]
    assert events["value"].isna().tolist() == [True, False, True]
    assert events["value"].iloc[1] == 19.5
    assert events["event_id"].tolist() == [None, None, None]  # derived from content at ingest


def test_unmapped_fields_are_looked_up_under_their_own_name(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.csv", f"user_id,item_id,timestamp,type,value\n7,42,{T0},click,1\n")
    events = read_events_table(path).events
    assert events[["user_id", "item_id", "type", "value"]].iloc[0].tolist() == ["7", "42", "click", 1.0]
    assert events["timestamp_us"].iloc[0] == T0 * 10**6


def test_numeric_ids_become_text(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.csv", f"u,i,t\n1,10,{T0}\n2,20,{T0}\n")
    events = read_events_table(path, {"user_id": "u", "item_id": "i", "timestamp": "t"}, event_type="view").events
    assert events["user_id"].tolist() == ["1", "2"]
    assert events["item_id"].tolist() == ["10", "20"]


def test_event_type_fills_in_when_the_file_has_no_type_column(tmp_path: Path) -> None:
    path = write(tmp_path, "clicks.csv", f"u,i,t\na,x,{T0}\nb,y,{T0 + 1}\n")
    events = read_events_table(path, {"user_id": "u", "item_id": "i", "timestamp": "t"}, event_type="click").events
    assert events["type"].tolist() == ["click", "click"]
    assert events["value"].isna().all()


def test_a_type_column_wins_over_event_type(tmp_path: Path) -> None:
    path = write(tmp_path, "mixed.csv", f"user_id,item_id,timestamp,type\na,x,{T0},purchase\n")
    assert read_events_table(path, event_type="view").events["type"].tolist() == ["purchase"]


def test_no_type_column_and_no_event_type_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "clicks.csv", f"user_id,item_id,timestamp\na,x,{T0}\n")
    with pytest.raises(DataFormatError, match=r"clicks\.csv: no type column 'type'; map one or give event_type"):
        read_events_table(path)


def test_a_mapped_event_id_column_is_kept_and_gaps_stay_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.csv", f"id,user_id,item_id,timestamp\nev-1,a,x,{T0}\n,b,y,{T0}\n")
    events = read_events_table(path, {"event_id": "id"}, event_type="view").events
    assert events["event_id"].iloc[0] == "ev-1" and pd.isna(events["event_id"].iloc[1])


def test_tsv_files_are_tab_separated(tmp_path: Path) -> None:
    path = write(tmp_path, "e.tsv", f"user_id\titem_id\ttimestamp\nu, 1\ti\t{T0}\n")
    events = read_events_table(path, event_type="view").events
    assert events["user_id"].tolist() == ["u, 1"]


# --- time units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("unit", "cell", "expected_us"), [
    ("s", str(T0), T0 * 1_000_000),
    ("s", f"{T0}.25", T0 * 1_000_000 + 250_000),
    ("ms", f"{T0}123", T0 * 1_000_000 + 123_000),
    ("us", f"{T0}123456", T0 * 1_000_000 + 123_456),
    ("iso", "2023-01-01T00:00:00.123456Z", T0 * 1_000_000 + 123_456),
    ("iso", "2023-01-01T02:00:00+02:00", T0 * 1_000_000),
    ("iso", "2023-01-01", T0 * 1_000_000),  # naive means UTC
])  # fmt: skip
def test_time_units(tmp_path: Path, unit: str, cell: str, expected_us: int) -> None:
    path = write(tmp_path, "t.csv", f"user_id,item_id,timestamp\na,x,{cell}\n")
    events = read_events_table(path, event_type="view", time_unit=unit).events  # type: ignore[arg-type]
    assert events["timestamp_us"].tolist() == [expected_us]


def test_text_timestamps_are_read_as_iso_whatever_the_unit(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "user_id,item_id,timestamp\na,x,2023-01-01T00:00:01Z\n")
    assert read_events_table(path, event_type="view").events["timestamp_us"].tolist() == [(T0 + 1) * 10**6]


@pytest.mark.parametrize("tz", [None, "UTC"])
def test_parquet_datetime_columns_keep_microseconds(tmp_path: Path, tz: str | None) -> None:
    when = pd.to_datetime(["2023-01-01 00:00:00.000007", "2023-01-02 00:00:00"], format="ISO8601").tz_localize(tz)
    pd.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "when": when}).to_parquet(tmp_path / "e.parquet")
    events = read_events_table(
        tmp_path / "e.parquet", {"user_id": "u", "item_id": "i", "timestamp": "when"}, event_type="view"
    ).events
    assert events["timestamp_us"].tolist() == [T0 * 10**6 + 7, (T0 + 86_400) * 10**6]


def test_unknown_time_unit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", f"user_id,item_id,timestamp\na,x,{T0}\n")
    with pytest.raises(DataFormatError, match=r"unknown time unit 'h'; known: iso, ms, s, us"):
        read_events_table(path, event_type="view", time_unit="h")  # type: ignore[arg-type]


# --- bad input ----------------------------------------------------------------------------------


def test_a_missing_numeric_timestamp_names_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", f"user_id,item_id,timestamp\na,x,{T0}\nb,y,\nc,z,{T0}\n")
    with pytest.raises(DataFormatError, match=r"t\.csv: 1 timestamps could not be read as 's': row 2 \(<NA>\)"):
        read_events_table(path, event_type="view")


def test_a_bad_iso_timestamp_names_its_row(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t.csv",
        "user_id,item_id,timestamp\na,x,2023-01-01T00:00:00Z\nb,y,2023-01-01\nc,z,yesterday\n",
    )  # fmt: skip
    with pytest.raises(DataFormatError, match=r"1 timestamps could not be read as 'iso': row 3 \('yesterday'\)$"):
        read_events_table(path, event_type="view", time_unit="iso")


def test_a_bad_cell_among_unix_seconds_names_only_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", f"user_id,item_id,timestamp\na,x,{T0}\nb,y,{T0 + 1}\nc,z,soon\nd,w,{T0 + 2}\n")
    with pytest.raises(DataFormatError, match=r"1 timestamps could not be read as 's': row 3 \('soon'\)$"):
        read_events_table(path, event_type="view")


@pytest.mark.parametrize("field", ["user_id", "item_id", "timestamp"])
def test_a_missing_required_column_names_the_field(tmp_path: Path, field: str) -> None:
    columns = {"user_id": "who", "item_id": "what", "timestamp": "when"}
    header = ",".join(name for f, name in columns.items() if f != field)
    path = write(tmp_path, "e.csv", f"{header}\n" + ",".join(["1"] * 2) + "\n")
    mapping = {f: name for f, name in columns.items() if f != field}  # the missing field is left unmapped
    with pytest.raises(DataFormatError, match=rf"e\.csv: no column '{field}' for {field}; map it with {field}=COLUMN"):
        read_events_table(path, mapping, event_type="view")


def test_a_mapping_to_an_absent_column_names_the_column(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", f"user,item,ts\na,x,{T0}\n")
    with pytest.raises(DataFormatError, match=r"no column 'time' for timestamp; .*columns: user, item, ts"):
        read_events_table(path, {"user_id": "user", "item_id": "item", "timestamp": "time"}, event_type="view")


def test_an_unknown_mapping_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", f"user_id,item_id,timestamp\na,x,{T0}\n")
    with pytest.raises(DataFormatError, match=r"cannot map \['rating', 'user'\]; mappable fields: event_id, user_id"):
        read_events_table(path, {"user": "user_id", "rating": "r"}, event_type="view")


def test_a_missing_file_and_an_unknown_suffix_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"no such file: .*nope\.csv"):
        read_events_table(tmp_path / "nope.csv", event_type="view")
    path = write(tmp_path, "e.json", "[]")
    with pytest.raises(DataFormatError, match=r"e\.json: unknown file type '\.json'; use \.csv, \.tsv or \.parquet"):
        read_events_table(path, event_type="view")


def test_ids_keep_leading_zeros_and_exponent_like_text(tmp_path: Path) -> None:
    path = write(tmp_path, "z.csv", f"user_id,item_id,timestamp\n007,1e3,{T0}\n7,1000,{T0}\n")
    events = read_events_table(path, event_type="view").events
    assert events["user_id"].tolist() == ["007", "7"] and events["item_id"].tolist() == ["1e3", "1000"]


def test_a_non_numeric_value_names_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, "v.csv", f"user_id,item_id,timestamp,value\nu,i,{T0},4.5\nu,j,{T0},lots\n")
    with pytest.raises(DataFormatError, match=r"1 values are not numbers: row 2 \('lots'\)"):
        read_events_table(path, event_type="purchase")
