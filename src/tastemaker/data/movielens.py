"""MovieLens readers for the three published layouts, detected from the files in a folder.

* ``latest`` (ml-latest, ml-latest-small, ml-20m/25m/32m): ``ratings.csv``, ``movies.csv`` (genres
  ``|``-separated), optional ``tags.csv`` (joined into the item text)
* ``100k`` (ml-100k): ``u.data`` (tab-separated user, item, rating, unix time), ``u.item`` (``|``-separated,
  latin-1: id, title, release date, video release date, IMDb URL, then one flag per genre in the order of
  ``u.genre``), optional ``u.user``
* ``1m`` (ml-1m, ml-10m): ``ratings.dat``, ``movies.dat``, optional ``users.dat`` / ``tags.dat``, ``::``-separated

Every rating becomes a ``rating`` event with the id ``ml:USER:ITEM:UNIXTIME``, so importing the same
folder twice stores nothing new.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tastemaker.clock import US_PER_SECOND
from tastemaker.data.dataset import Dataset
from tastemaker.errors import DataFormatError

__all__ = ["LAYOUTS", "detect_layout", "read_movielens"]

LAYOUTS = {"latest": "ratings.csv", "100k": "u.data", "1m": "ratings.dat"}
# The genre order of ml-100k's u.genre, used when that file is absent.
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRE = {"(no genres listed)", "unknown"}
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def detect_layout(path: str | Path) -> str:
    """The layout of a MovieLens folder: ``latest``, ``100k`` or ``1m``."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataFormatError(f"MovieLens path {str(folder)!r} is not a folder")
    for layout, marker in LAYOUTS.items():
        if (folder / marker).is_file():
            return layout
    raise DataFormatError(
        f"no MovieLens ratings file in {str(folder)!r}; expected one of {', '.join(LAYOUTS.values())}"
    )


def read_movielens(path: str | Path) -> Dataset:
    """Read a MovieLens folder of any of the three layouts into a :class:`Dataset`."""
    folder = Path(path)
    layout = detect_layout(folder)
    reader = {"latest": _read_latest, "100k": _read_100k, "1m": _read_1m}[layout]
    ratings, items, users = reader(folder)
    events = _rating_events(ratings)
    items = _with_defaults(items)
    return Dataset(name=f"movielens:{folder.name}", events=events, items=items, users=users)


def _read_latest(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(folder / "ratings.csv", dtype={"userId": str, "movieId": str})
    _require(ratings, ["userId", "movieId", "rating", "timestamp"], "ratings.csv")
    movies = (
        pd.read_csv(folder / "movies.csv", dtype=str, keep_default_na=False)
        if (folder / "movies.csv").is_file()
        else pd.DataFrame(columns=["movieId", "title", "genres"])
    )
    _require(movies, ["movieId", "title", "genres"], "movies.csv")
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"],
            "title": movies["title"],
            "categories": [[g for g in s.split("|") if g and g not in NO_GENRE] for s in movies["genres"]],
        }
    )
    if (folder / "tags.csv").is_file():
        # A tag is text: "NA" or "null" are tags, not missing values.
        tags = pd.read_csv(folder / "tags.csv", dtype=str, keep_default_na=False)
        items = _attach_tags(items, tags.rename(columns={"movieId": "item_id"}))
    return ratings.rename(columns={"userId": "user_id", "movieId": "item_id"}), items, _no_users()


def _read_100k(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(
        folder / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str},
    )  # fmt: skip
    genres = GENRES_100K
    if (folder / "u.genre").is_file():
        lines = (folder / "u.genre").read_text(encoding="latin-1").splitlines()
        pairs = [ln.rsplit("|", 1) for ln in lines if "|" in ln]
        genres = tuple(name for name, _ in sorted(pairs, key=lambda p: int(p[1])))
    items = pd.DataFrame(columns=["item_id", "title", "categories"])
    if (folder / "u.item").is_file():
        raw = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1", dtype=str, keep_default_na=False)
        if raw.shape[1] != 5 + len(genres):
            raise DataFormatError(
                f"u.item has {raw.shape[1]} columns; expected {5 + len(genres)} (5 fields + {len(genres)} genres)"
            )
        flags = raw.iloc[:, 5:].to_numpy() == "1"
        items = pd.DataFrame({
            "item_id": raw[0],
            "title": raw[1],
            "categories": [[g for g, on in zip(genres, row, strict=True) if on and g not in NO_GENRE]
                           for row in flags],
            "attributes": [{"release_date": d} if d else {} for d in raw[2]],
        })  # fmt: skip
    users = _no_users()
    if (folder / "u.user").is_file():
        raw = pd.read_csv(folder / "u.user", sep="|", header=None, dtype=str, encoding="latin-1",
                          names=["user_id", "age", "gender", "occupation", "zip"])  # fmt: skip
        users = _users_with(raw, ["age", "gender", "occupation", "zip"])
    return ratings, items, users


def _read_1m(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = _read_dat(folder / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame(columns=["item_id", "title", "categories"])
    if (folder / "movies.dat").is_file():
        movies = _read_dat(folder / "movies.dat", ["item_id", "title", "genres"])
        items = pd.DataFrame(
            {
                "item_id": movies["item_id"],
                "title": movies["title"],
                "categories": [[g for g in s.split("|") if g and g not in NO_GENRE] for s in movies["genres"]],
            }
        )
    if (folder / "tags.dat").is_file():
        tags = _read_dat(folder / "tags.dat", ["user_id", "item_id", "tag", "timestamp"])
        items = _attach_tags(items, tags)
    users = _no_users()
    if (folder / "users.dat").is_file():
        raw = _read_dat(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip"])
        users = _users_with(raw, ["gender", "age", "occupation", "zip"])
    return ratings, items, users


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """``::``-separated files: the C parser on a tab-translated copy, much faster than ``sep='::'``."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # ml-1m's movies.dat and users.dat
    frame = pd.read_csv(
        io.StringIO(text.replace("::", "\t")), sep="\t", header=None, names=names, dtype=str,
        keep_default_na=False, quoting=3,
    )  # fmt: skip
    if frame.empty or frame.iloc[:, -1].eq("").all():
        raise DataFormatError(f"{path.name}: expected {len(names)} '::'-separated fields per line")
    return frame


def _rating_events(ratings: pd.DataFrame) -> pd.DataFrame:
    seconds = pd.to_numeric(ratings["timestamp"], errors="coerce")
    bad = seconds.isna() | pd.to_numeric(ratings["rating"], errors="coerce").isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(f"ratings row {row + 1}: rating or timestamp is not a number")
    seconds = seconds.astype(np.int64)
    user = ratings["user_id"].astype(str)
    item = ratings["item_id"].astype(str)
    return pd.DataFrame({
        "event_id": "ml:" + user + ":" + item + ":" + seconds.astype(str),
        "user_id": user,
        "item_id": item,
        "type": "rating",
        "value": ratings["rating"].astype(float),
        "timestamp_us": seconds * US_PER_SECOND,
    })  # fmt: skip


def _attach_tags(items: pd.DataFrame, tags: pd.DataFrame) -> pd.DataFrame:
    tags = tags.dropna(subset=["tag"])
    tags = tags.assign(key=tags["tag"].str.strip().str.lower()).drop_duplicates(["item_id", "key"])
    text = tags.groupby("item_id", sort=False)["tag"].agg(lambda s: "; ".join(t.strip() for t in s))
    items = items.set_index("item_id")
    # Tagged movies missing from the movie list still exist as items (with text only).
    items = items.reindex(items.index.union(text.index, sort=False))
    items["text"] = text.reindex(items.index)
    return items.rename_axis("item_id").reset_index()


def _with_defaults(items: pd.DataFrame) -> pd.DataFrame:
    items = items.copy()
    n = len(items)
    if "text" not in items:
        items["text"] = None
    items["categories"] = [c if isinstance(c, list) else [] for c in items["categories"]]
    years = items["title"].fillna("").astype(str).str.extract(_YEAR, expand=False)
    base = items["attributes"] if "attributes" in items else pd.Series([{}] * n, index=items.index)
    items["attributes"] = [
        {**(a if isinstance(a, dict) else {}), **({"year": int(y)} if isinstance(y, str) else {})}
        for a, y in zip(base, years, strict=True)
    ]
    items["provider"] = None
    items["created_at_us"] = None  # unknown: snapshots fall back to the item's first event
    items["available"] = True
    items["title"] = items["title"].astype(object).where(items["title"].notna(), None)
    items["text"] = items["text"].astype(object).where(items["text"].notna(), None)
    return items[["item_id", "title", "text", "categories", "provider", "created_at_us", "available", "attributes"]]


def _users_with(raw: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    attrs = raw[keys].to_dict("records")
    return pd.DataFrame({"user_id": raw["user_id"].astype(str), "created_at_us": None, "attributes": attrs})


def _no_users() -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.Series(dtype=object), "created_at_us": pd.Series(dtype=object),
                         "attributes": pd.Series(dtype=object)})  # fmt: skip


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{name} lacks columns {missing}; has {list(frame.columns)}")
