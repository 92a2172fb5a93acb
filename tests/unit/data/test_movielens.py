"""MovieLens readers on the hand-made fixtures in ``tests/fixtures/movielens`` (one folder per layout).

Expected values are read from the fixture files with plain Python (csv module, ``str.split``), not
with the reader under test, or written out by hand from the files.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from tastemaker.data.dataset import ITEM_FIELDS
from tastemaker.data.movielens import detect_layout, read_movielens
from tastemaker.errors import DataFormatError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ML = FIXTURES / "movielens"
LAYOUTS = ("latest", "100k", "1m")


def raw_ratings(layout: str) -> list[tuple[str, str, float, int]]:
    """``(user, item, rating, unix seconds)`` in file order, parsed without pandas."""
    if layout == "latest":
        with open(ML / "latest" / "ratings.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))[1:]
    elif layout == "100k":
        rows = [ln.split("\t") for ln in (ML / "100k" / "u.data").read_text(encoding="latin-1").splitlines()]
    else:
        rows = [ln.split("::") for ln in (ML / "1m" / "ratings.dat").read_text(encoding="latin-1").splitlines()]
    return [(u, i, float(r), int(t)) for u, i, r, t in rows]


def items_by_id(layout: str) -> pd.DataFrame:
    return read_movielens(ML / layout).items.set_index("item_id")


@pytest.fixture(scope="module")
def latest_items() -> pd.DataFrame:
    return items_by_id("latest")


def copy_layout(layout: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ML / layout, tmp_path / layout))


# --- layout detection -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_detect_layout_recognises_each_fixture_folder(layout: str) -> None:
    assert detect_layout(ML / layout) == layout


def test_detect_layout_refuses_a_folder_without_a_ratings_file(tmp_path: Path) -> None:
    shutil.copy(ML / "latest" / "movies.csv", tmp_path / "movies.csv")
    with pytest.raises(DataFormatError, match=r"no MovieLens ratings file in .*ratings\.csv, u\.data, ratings\.dat"):
        detect_layout(tmp_path)
    with pytest.raises(DataFormatError, match="no MovieLens ratings file"):
        read_movielens(tmp_path)


def test_detect_layout_refuses_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"ratings\.csv' is not a folder"):
        detect_layout(ML / "latest" / "ratings.csv")


# --- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "n_events", "n_users", "n_items", "n_rated"),
    [("latest", 443, 40, 31, 30), ("100k", 431, 40, 30, 30), ("1m", 444, 40, 30, 30)],
)
def test_counts(layout: str, n_events: int, n_users: int, n_items: int, n_rated: int) -> None:
    ds = read_movielens(ML / layout)
    assert ds.name == f"movielens:{layout}"
    assert len(ds.events) == n_events
    assert ds.events["user_id"].nunique() == n_users
    assert ds.events["item_id"].nunique() == n_rated
    assert len(ds.items) == n_items
    assert ds.items["item_id"].is_unique
    assert list(ds.items.columns) == list(ITEM_FIELDS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_rating_becomes_one_rating_event_in_file_order(layout: str) -> None:
    events = read_movielens(ML / layout).events
    raw = raw_ratings(layout)
    assert events["event_id"].tolist() == [f"ml:{u}:{i}:{t}" for u, i, _, t in raw]
    assert events["user_id"].tolist() == [u for u, _, _, _ in raw]
    assert events["item_id"].tolist() == [i for _, i, _, _ in raw]
    assert events["value"].tolist() == [r for _, _, r, _ in raw]
    assert events["timestamp_us"].tolist() == [t * 1_000_000 for _, _, _, t in raw]
    assert set(events["type"]) == {"rating"}
    assert events["event_id"].is_unique


def test_event_ids_are_the_same_on_every_read() -> None:
    first, second = read_movielens(ML / "1m").events, read_movielens(ML / "1m").events
    assert first["event_id"].tolist() == second["event_id"].tolist()
    assert first["event_id"].iloc[0] == "ml:1:5:1673015129"


def test_latest_keeps_half_star_ratings() -> None:
    values = set(read_movielens(ML / "latest").events["value"])
    assert {0.5, 3.5, 5.0} <= values
    assert values <= {x / 2 for x in range(1, 11)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_non_numeric_rating_is_a_data_format_error_naming_the_row(layout: str, tmp_path: Path) -> None:
    folder = copy_layout(layout, tmp_path)
    name, sep, newline, header = {
        "latest": ("ratings.csv", ",", "\r\n", 1), "100k": ("u.data", "\t", "\n", 0),
        "1m": ("ratings.dat", "::", "\n", 0),
    }[layout]  # fmt: skip
    path = folder / name
    lines = path.read_bytes().decode("latin-1").split(newline)
    fields = lines[header + 2].split(sep)
    fields[2] = "five"  # the third rating
    lines[header + 2] = sep.join(fields)
    path.write_bytes(newline.join(lines).encode("latin-1"))
    with pytest.raises(DataFormatError, match="ratings row 3: rating or timestamp is not a number"):
        read_movielens(folder)


# --- latest: movies.csv and tags.csv ----------------------------------------------------------


def test_latest_titles_with_commas_quotes_and_non_ascii_are_decoded(latest_items: pd.DataFrame) -> None:
    assert latest_items.loc["32", "title"] == "Last Lighthouse, The (1998)"
    assert latest_items.loc["261", "title"] == 'Tell Me, "Maybe" (2001)'
    assert latest_items.loc["17", "title"] == "Café Society (1995)"
    assert latest_items.loc["2294", "title"] == "Ungeheuer Süß (2002)"
    assert latest_items.loc["48516", "title"] == "Tōkyō Blues (2011)"  # outside latin-1


def test_latest_genres_become_categories(latest_items: pd.DataFrame) -> None:
    # The last column of a CRLF file: a leftover "\r" would show up here.
    assert latest_items.loc["32", "categories"] == ["Mystery", "Thriller"]
    assert latest_items.loc["364", "categories"] == ["Animation", "Children", "Comedy"]
    assert latest_items.loc["161", "categories"] == ["Action", "Adventure", "War"]
    assert latest_items.loc["79132", "categories"] == []  # "(no genres listed)"
    assert latest_items.loc["193573", "categories"] == []
    every = {g for cats in latest_items["categories"] for g in cats}
    assert "(no genres listed)" not in every
    assert not any(g.endswith("\r") for g in every)
    assert len(every) == 14


def test_latest_tags_are_joined_without_case_duplicates(latest_items: pd.DataFrame) -> None:
    assert latest_items.loc["47", "text"] == "lighthouse; twist ending; slow, but worth it"
    assert latest_items.loc["17", "text"] == "Paris; jazz"  # "JAZZ" dropped
    assert latest_items.loc["913", "text"] == "noir; black and white"  # "Noir" dropped
    # Duplicates are found per movie: "dark" and "Dark" on two movies both stay.
    assert latest_items.loc["4014", "text"] == "dark"
    assert latest_items.loc["48516", "text"] == "Dark"
    assert latest_items.loc["1", "text"] is None
    assert latest_items["text"].notna().sum() == 7  # six rated movies and the tag-only one


def test_a_tagged_movie_missing_from_movies_csv_is_still_an_item(latest_items: pd.DataFrame) -> None:
    movie = latest_items.loc["4242"]
    assert movie["text"] == "never released"
    assert movie["title"] is None
    assert movie["categories"] == []
    assert movie["attributes"] == {}
    assert "4242" not in set(read_movielens(ML / "latest").events["item_id"])


def test_latest_without_tags_csv_has_no_text(tmp_path: Path) -> None:
    folder = copy_layout("latest", tmp_path)
    (folder / "tags.csv").unlink()
    items = read_movielens(folder).items
    assert len(items) == 30
    assert items["text"].isna().all()


def test_tags_that_look_like_missing_values_are_kept(tmp_path: Path) -> None:
    folder = copy_layout("latest", tmp_path)
    with open(folder / "tags.csv", "ab") as f:
        f.write(b"7,1,NA,1680000000\r\n7,3,None,1680000001\r\n7,7,null,1680000002\r\n")
    items = read_movielens(folder).items.set_index("item_id")
    assert items.loc[["1", "3", "7"], "text"].tolist() == ["NA", "None", "null"]


def test_latest_has_no_user_file_so_no_users() -> None:
    assert read_movielens(ML / "latest").users.empty


def test_latest_ratings_csv_must_have_the_four_columns(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating\r\n1,1,4.0\r\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv lacks columns \['timestamp'\]"):
        read_movielens(tmp_path)


# --- years --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("layout", "item", "year"), [
    ("latest", "32", 1998), ("latest", "913", 1950), ("latest", "48516", 2011),
    ("100k", "11", 1995), ("1m", "23", 1950), ("1m", "25", 1999),
])  # fmt: skip
def test_year_is_parsed_from_the_title(layout: str, item: str, year: int) -> None:
    assert items_by_id(layout).loc[item, "attributes"]["year"] == year


@pytest.mark.parametrize(("layout", "item"), [("latest", "193573"), ("100k", "10"), ("1m", "10")])
def test_a_title_without_a_year_has_no_year(layout: str, item: str) -> None:
    attributes = items_by_id(layout).loc[item, "attributes"]
    assert "year" not in attributes


# --- 100k ---------------------------------------------------------------------------------------


def test_100k_latin1_titles_and_genre_flags() -> None:
    items = items_by_id("100k")
    assert items.loc["11", "title"] == "Café Society (1995)"
    assert items.loc["18", "title"] == "Ungeheuer Süß (2002)"
    assert items.loc["25", "title"] == "Niño Perdido (1999)"
    assert items.loc["4", "title"] == "Last Lighthouse, The (1998)"
    assert items.loc["14", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["29", "categories"] == ["Crime", "Drama"]  # in u.genre order
    assert items.loc["10", "categories"] == []  # only the "unknown" flag is set
    assert items.loc["30", "categories"] == []
    assert items["text"].isna().all()


def test_100k_release_date_is_an_attribute_when_present() -> None:
    items = items_by_id("100k")
    assert items.loc["11", "attributes"] == {"release_date": "01-Jan-1995", "year": 1995}
    assert items.loc["10", "attributes"] == {}  # no release date, no year


def test_100k_users_come_from_u_user() -> None:
    users = read_movielens(ML / "100k").users.set_index("user_id")
    lines = (ML / "100k" / "u.user").read_text(encoding="latin-1").splitlines()
    expected = {}
    for line in lines:
        uid, age, gender, occupation, zip_code = line.split("|")
        expected[uid] = {"age": age, "gender": gender, "occupation": occupation, "zip": zip_code}
    assert len(users) == 40
    assert users["attributes"].to_dict() == expected
    assert users.loc["1", "attributes"]["zip"] == "01002"  # text, leading zero kept
    assert users.loc["2", "attributes"]["zip"] == "T8H1N"


def test_100k_reads_without_u_genre_using_the_standard_order(tmp_path: Path) -> None:
    folder = copy_layout("100k", tmp_path)
    (folder / "u.genre").unlink()
    with_file, without = items_by_id("100k"), read_movielens(folder).items.set_index("item_id")
    assert without["categories"].tolist() == with_file["categories"].tolist()


def test_100k_u_item_must_match_u_genre(tmp_path: Path) -> None:
    folder = copy_layout("100k", tmp_path)
    lines = (folder / "u.genre").read_text(encoding="latin-1").splitlines()
    (folder / "u.genre").write_text("\n".join(lines[:-2]) + "\n", encoding="latin-1")  # drops Western
    with pytest.raises(DataFormatError, match=r"u\.item has 24 columns; expected 23 \(5 fields \+ 18 genres\)"):
        read_movielens(folder)


def test_100k_without_u_user_has_no_users(tmp_path: Path) -> None:
    folder = copy_layout("100k", tmp_path)
    (folder / "u.user").unlink()
    ds = read_movielens(folder)
    assert ds.users.empty
    assert len(ds.events) == 431


# --- 1m -------------------------------------------------------------------------------------------


def test_1m_latin1_titles_and_genres() -> None:
    items = items_by_id("1m")
    assert items.loc["11", "title"] == "Café Society (1995)"
    assert items.loc["25", "title"] == "Niño Perdido (1999)"
    assert items.loc["13", "title"] == 'Tell Me, "Maybe" (2001)'
    assert items.loc["14", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["29", "categories"] == ["Drama", "Crime"]  # in file order
    assert items.loc["30", "categories"] == []  # "(no genres listed)"
    assert items.loc["23", "attributes"] == {"year": 1950}


def test_1m_users_come_from_users_dat() -> None:
    users = read_movielens(ML / "1m").users.set_index("user_id")
    expected = {}
    for line in (ML / "1m" / "users.dat").read_text(encoding="latin-1").splitlines():
        uid, gender, age, occupation, zip_code = line.split("::")
        expected[uid] = {"gender": gender, "age": age, "occupation": occupation, "zip": zip_code}
    assert len(users) == 40
    assert users["attributes"].to_dict() == expected
    assert users.loc["1", "attributes"] == {"gender": "F", "age": "45", "occupation": "14", "zip": "02460"}


def test_1m_tags_dat_is_joined_like_tags_csv(tmp_path: Path) -> None:
    folder = copy_layout("1m", tmp_path)
    (folder / "tags.dat").write_text(
        "1::5::fast::1673000000\n2::5::Fast::1673000100\n2::5::loud::1673000200\n3::99::lost reel::1673000300\n"
    )
    items = read_movielens(folder).items.set_index("item_id")
    assert items.loc["5", "text"] == "fast; loud"
    assert items.loc["99", "text"] == "lost reel"
    assert items.loc["99", "title"] is None
    assert len(items) == 31


def test_1m_files_must_be_double_colon_separated(tmp_path: Path) -> None:
    folder = copy_layout("1m", tmp_path)
    text = (folder / "ratings.dat").read_text()
    (folder / "ratings.dat").write_text(text.replace("::", ","))
    with pytest.raises(DataFormatError, match=r"ratings\.dat: expected 4 '::'-separated fields per line"):
        read_movielens(folder)


# --- the fixtures themselves --------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fixture_shape(layout: str) -> None:
    """The structure the fixtures promise: every user has 6+ ratings, no repeated pair, months of time."""
    raw = pd.DataFrame(raw_ratings(layout), columns=["user", "item", "rating", "t"])
    assert raw.groupby("user").size().min() >= 6
    assert not raw.duplicated(["user", "item"]).any()
    assert raw["rating"].between(0.5 if layout == "latest" else 1, 5).all()
    assert (raw["t"].max() - raw["t"].min()) / 86_400 > 120


def test_committed_fixtures_match_the_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_movielens_fixtures", FIXTURES / "make_movielens_fixtures.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generator)  # dataclasses look their module up
    spec.loader.exec_module(generator)
    monkeypatch.setattr(generator, "OUT", tmp_path)
    generator.main()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(ML) for p in ML.rglob("*") if p.is_file())
    for relative in written:
        assert (tmp_path / relative).read_bytes() == (ML / relative).read_bytes(), relative
