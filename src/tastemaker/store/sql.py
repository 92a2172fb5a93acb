"""The SQL store: SQLAlchemy Core over SQLite (default) or PostgreSQL. Contract in ``store.base``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Connection, Engine, Table, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from tastemaker.clock import Clock
from tastemaker.errors import ConfigError, InvalidBatchError, RecordError, StoreError
from tastemaker.store.base import (
    ATTRIBUTION_SKEW_US,
    EVENT_COLUMNS,
    Exposure,
    IngestResult,
    Mode,
    Records,
    Store,
    UpsertResult,
    UserEvents,
)
from tastemaker.store.schema import events, exposure_items, exposures, items, users
from tastemaker.store.validation import (
    ValidationConfig,
    validate_events,
    validate_exposures,
    validate_items,
    validate_users,
)

__all__ = ["SqlStore"]

_CHUNK = 2_000  # rows per INSERT statement; keeps PostgreSQL under its bind-parameter limit
_EVENT_CHUNK = 1_000  # rows per event INSERT: 9,000 parameters, under SQLite's and PostgreSQL's limits
_EVENT_COLUMNS = ("event_id", "user_id", "item_id", "type", "value", "timestamp_us", "context", "request_id",
                  "ingested_at_us")  # fmt: skip
_NO_END_US = 2**62
_NO_START_US = -(2**62)
_EXPOSURE_COLUMNS = {
    "exposures": ("request_id", "user_id", "variant", "model_version", "config_hash", "timestamp_us", "context"),
    "exposure_items": ("request_id", "slate", "position", "item_id", "score", "source", "propensity"),
}
_EXPOSURE_CHUNK = 1_000  # rows per multi-row INSERT on PostgreSQL: 7,000 parameters
_ITEM_DEFAULTS = {"title": None, "text": None, "categories": [], "provider": None,
                  "created_at_us": None, "available": True, "attributes": {}}  # fmt: skip
_USER_DEFAULTS = {"created_at_us": None, "attributes": {}}


class SqlStore(Store):
    """A :class:`Store` on a SQLAlchemy engine. Build it with :func:`tastemaker.store.open_store`."""

    def __init__(self, engine: Engine, clock: Clock, validation: ValidationConfig) -> None:
        self._engine = engine
        self.clock = clock
        self.validation = validation
        self._dialect = engine.dialect.name
        self._insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        # Events go to the driver directly as multi-row INSERTs: SQLAlchemy's per-row parameter
        # processing would cost more than the database's own work on ingestion's hot path.
        # the driver's parameter marks (a JSON column's cast on PostgreSQL)
        self._mark, self._json_mark = ("%s", "CAST(%s AS JSONB)") if self._dialect == "postgresql" else ("?", "?")
        self._event_row_marks = "(" + ", ".join(self._json_mark if c == "context" else self._mark
                                                for c in _EVENT_COLUMNS) + ")"  # fmt: skip
        self._event_sql: dict[int, str] = {}
        self._exposures_sql: dict[tuple[str, int], str] = {}

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    # -- writes ---------------------------------------------------------------------------------

    def ingest_events(self, records: Records, *, mode: Mode = "strict") -> IngestResult:
        batch = _as_list(records)
        now = self.clock.now_us()
        rows, errors = validate_events(batch, self.validation, now)
        _check_mode(mode, errors)
        event_ids: list[str | None] = [None] * len(batch)
        first_seen: dict[str, int] = {}
        fresh: list[dict[str, Any]] = []
        for index, row in rows:
            event_ids[index] = row["event_id"]
            if row["event_id"] not in first_seen:
                first_seen[row["event_id"]] = index
                row["ingested_at_us"] = now
                fresh.append(row)
        inserted = self._insert_new_events(fresh)
        duplicates = [
            row["event_id"]
            for index, row in rows
            if row["event_id"] not in inserted or first_seen[row["event_id"]] != index
        ]
        return IngestResult(len(inserted), duplicates, errors, event_ids)

    def _insert_new_events(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the rows whose id is not stored yet, in one transaction; return the ids inserted.

        Exact under concurrent writers on both back ends, each in its own way. SQLite has one write
        lock, taken at BEGIN IMMEDIATE: ids read under it cannot be stored by anyone else before this
        commit, so a plain ``executemany`` of the new rows is safe (and the fastest path). PostgreSQL
        writers run concurrently: ``ON CONFLICT DO NOTHING RETURNING`` skips, and does not return, a row
        another transaction stored first; rows go in sorted by id so writers lock in one order and
        cannot deadlock.
        """
        ordered = sorted(rows, key=lambda r: r["event_id"])
        inserted: set[str] = set()
        with self._transaction("ingest events", write=True) as conn:
            if self._dialect == "sqlite":
                stored: set[str] = set()
                for chunk in _chunks([r["event_id"] for r in ordered], 900):
                    stored.update(conn.execute(select(events.c.event_id).where(events.c.event_id.in_(chunk))).scalars())
                new = [_event_tuple(r) for r in ordered if r["event_id"] not in stored]
                if new:
                    conn.exec_driver_sql(self._event_insert_sql(1), new)
                return {t[0] for t in new}
            for chunk in _chunks(ordered, _EVENT_CHUNK):
                params = tuple(value for row in chunk for value in _event_tuple(row))
                inserted.update(r[0] for r in conn.exec_driver_sql(self._event_insert_sql(len(chunk)), params))
        return inserted

    def _event_insert_sql(self, n_rows: int) -> str:
        if n_rows not in self._event_sql:
            values = ", ".join([self._event_row_marks] * n_rows)
            conflict = "" if self._dialect == "sqlite" else " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            self._event_sql[n_rows] = f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES {values}{conflict}"
        return self._event_sql[n_rows]

    def upsert_items(self, records: Records, *, mode: Mode = "strict") -> UpsertResult:
        rows, errors = validate_items(_as_list(records), self.validation)
        _check_mode(mode, errors)
        return UpsertResult(self._upsert(items, "item_id", rows, _ITEM_DEFAULTS), errors)

    def upsert_users(self, records: Records, *, mode: Mode = "strict") -> UpsertResult:
        rows, errors = validate_users(_as_list(records), self.validation)
        _check_mode(mode, errors)
        return UpsertResult(self._upsert(users, "user_id", rows, _USER_DEFAULTS), errors)

    def _upsert(
        self, table: Table, key: str, rows: list[tuple[int, dict[str, Any]]], defaults: Mapping[str, Any]
    ) -> int:
        merged: dict[str, dict[str, Any]] = {}
        for _, row in rows:  # a repeated id in one batch: later fields win, as if sent one by one
            merged.setdefault(row[key], {}).update(row)
        now = self.clock.now_us()
        by_fields: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for _, row in sorted(merged.items()):  # one lock order for every writer: no deadlocks
            by_fields.setdefault(tuple(sorted(row)), []).append({**defaults, **row, "updated_at_us": now})
        with self._transaction(f"upsert {table.name}", write=True) as conn:
            for fields, group in by_fields.items():
                stmt = self._insert(table)
                changing = [f for f in fields if f != key]
                if changing:  # rewrite (and re-stamp) a stored row only when a sent field differs
                    stmt = stmt.on_conflict_do_update(
                        index_elements=[key],
                        set_={f: stmt.excluded[f] for f in (*changing, "updated_at_us")},
                        where=or_(*(table.c[f].is_distinct_from(stmt.excluded[f]) for f in changing)),
                    )
                else:
                    stmt = stmt.on_conflict_do_nothing(index_elements=[key])
                for chunk in _chunks(group):
                    conn.execute(stmt, chunk)
        return len(merged)

    def record_exposures(self, exposures_: Sequence[Exposure]) -> int:
        errors = validate_exposures(exposures_, self.validation)
        if errors:
            raise InvalidBatchError(errors)
        unique: dict[str, Exposure] = {}
        for exposure in exposures_:  # a request id repeated within the batch: the first one wins
            unique.setdefault(exposure.request_id, exposure)
        if not unique:
            return 0
        # Rows go to the driver as tuples, as events do: SQLAlchemy's per-row parameter processing (and its
        # JSON encoding of each context) cost more than the database's own work on the serving process.
        head = [
            (e.request_id, e.user_id, e.variant, e.model_version, e.config_hash, e.timestamp_us,
             orjson.dumps(dict(e.context), option=orjson.OPT_SERIALIZE_NUMPY).decode() if e.context else "null")
            for e in unique.values()
        ]  # fmt: skip
        with self._transaction("record exposures", write=True) as conn:
            new = self._insert_new_exposures(conn, head)
            shown = [
                (e.request_id, it.slate, it.position, it.item_id, it.score, it.source, it.propensity)
                for e in unique.values() if e.request_id in new for it in e.items
            ]  # fmt: skip
            if self._dialect == "sqlite":
                if shown:
                    conn.exec_driver_sql(self._exposure_sql("exposure_items", 1), shown)
            else:
                for chunk in _chunks(shown, _EXPOSURE_CHUNK):
                    conn.exec_driver_sql(self._exposure_sql("exposure_items", len(chunk)), _flat(chunk))
        return len(new)

    def _insert_new_exposures(self, conn: Connection, head: list[tuple[Any, ...]]) -> set[str]:
        """Insert the exposures whose request id is not stored yet; the ids inserted. As for events (see
        ``_insert_new_events``): SQLite's write lock makes read-then-insert exact, PostgreSQL skips conflicts."""
        if self._dialect == "sqlite":
            stored: set[str] = set()
            for chunk in _chunks([h[0] for h in head], 900):
                found = conn.execute(select(exposures.c.request_id).where(exposures.c.request_id.in_(chunk)))
                stored.update(found.scalars())
            fresh = [h for h in head if h[0] not in stored]
            if fresh:
                conn.exec_driver_sql(self._exposure_sql("exposures", 1), fresh)
            return {h[0] for h in fresh}
        inserted: set[str] = set()
        for chunk in _chunks(head, _EXPOSURE_CHUNK):
            found = conn.exec_driver_sql(self._exposure_sql("exposures", len(chunk)), _flat(chunk))
            inserted.update(r[0] for r in found)
        return inserted

    def _exposure_sql(self, table: str, n_rows: int) -> str:
        key = (table, n_rows)
        if key not in self._exposures_sql:
            columns = _EXPOSURE_COLUMNS[table]
            row = "(" + ", ".join(self._json_mark if c == "context" else self._mark for c in columns) + ")"
            conflict = " ON CONFLICT (request_id) DO NOTHING RETURNING request_id" if (
                table == "exposures" and self._dialect == "postgresql") else ""  # fmt: skip
            values = ", ".join([row] * n_rows)
            self._exposures_sql[key] = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}{conflict}"
        return self._exposures_sql[key]

    # -- reads ----------------------------------------------------------------------------------

    def get_items(self, item_ids: Sequence[str]) -> list[dict[str, Any]]:
        return self._get(items, items.c.item_id, item_ids)

    def get_users(self, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        return self._get(users, users.c.user_id, user_ids)

    def _get(self, table: Table, key: Any, ids: Sequence[str]) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._transaction(f"read {table.name}") as conn:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                for row in conn.execute(select(table).where(key.in_(chunk))).mappings():
                    found[row[key.name]] = dict(row)
        return [found[i] for i in ids if i in found]

    def events_frame(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        columns: Sequence[str] = EVENT_COLUMNS,
        user_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        unknown = sorted(set(columns) - set(events.c.keys()))
        if unknown:
            raise ConfigError(f"unknown event columns {unknown}; known: {', '.join(events.c.keys())}")
        stmt = select(*(events.c[c] for c in columns))
        if since_us is not None:
            stmt = stmt.where(events.c.timestamp_us >= since_us)
        if until_us is not None:
            stmt = stmt.where(events.c.timestamp_us < until_us)
        if user_ids is not None:
            wanted = list(dict.fromkeys(str(u) for u in user_ids))
            if not wanted:
                return pd.DataFrame({c: [] for c in columns})
            if len(wanted) > _CHUNK:
                frames = [self.events_frame(since_us=since_us, until_us=until_us, columns=columns, user_ids=chunk)
                          for chunk in _chunks(wanted)]  # fmt: skip
                both = pd.concat(frames, ignore_index=True)
                order = [c for c in ("timestamp_us", "event_id") if c in both]
                return both.sort_values(order, kind="stable").reset_index(drop=True) if order else both
            stmt = stmt.where(events.c.user_id.in_(wanted))
        stmt = stmt.order_by(events.c.timestamp_us, events.c.event_id)
        return self._frame(stmt, list(columns))

    def user_events(self, user_ids: Sequence[str], *, until_us: int | None = None) -> dict[str, UserEvents]:
        wanted = list(dict.fromkeys(str(u) for u in user_ids))
        until = _NO_END_US if until_us is None else until_us
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for chunk in _chunks(wanted):  # the request path's read: plain statements on a pooled driver connection
            sql = (
                "SELECT user_id, event_id, item_id, type, value, timestamp_us FROM events "
                f"WHERE user_id IN ({', '.join([self._mark] * len(chunk))}) AND timestamp_us < {self._mark} "
                "ORDER BY user_id, timestamp_us, event_id"
            )
            for user, *event in self._driver_read("read events", sql, (*chunk, until)):
                rows.setdefault(user, []).append(event)
        return {user: UserEvents.of_rows(found) for user, found in rows.items()}

    def items_frame(self, *, updated_since_us: int | None = None) -> pd.DataFrame:
        stmt = select(items).order_by(items.c.item_id)
        if updated_since_us is not None:
            stmt = stmt.where(items.c.updated_at_us >= updated_since_us)
        return self._frame(stmt, list(items.c.keys()))

    def count_items(self, *, updated_since_us: int | None = None) -> int:
        stmt = select(func.count()).select_from(items)
        if updated_since_us is not None:
            stmt = stmt.where(items.c.updated_at_us >= updated_since_us)
        with self._transaction("count items") as conn:
            return int(conn.execute(stmt).scalar_one())

    def item_counts(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        ingested_since_us: int | None = None,
        ingested_until_us: int | None = None,
    ) -> pd.DataFrame:
        # A plain statement (every server counts every minute). One index reads the rows: the ingestion one when
        # asked for what arrived since an instant (a few seconds of events), else the (time, item) one, alone when
        # no ingestion bound is asked; a unary plus keeps the other column's bounds off their index (SQLite would
        # otherwise pick either range by a guess, and a guess that read the whole table read a million rows).
        m = self._mark
        by_ingestion = ingested_since_us is not None
        stamp, ingested = ("+timestamp_us", "ingested_at_us") if by_ingestion else ("timestamp_us", "+ingested_at_us")
        where = [f"{stamp} >= {m}", f"{stamp} < {m}"]
        args = [_or(since_us, _NO_START_US), _or(until_us, _NO_END_US)]
        for bound, op in [(ingested_since_us, ">="), (ingested_until_us, "<")]:
            if bound is not None:
                where.append(f"{ingested} {op} {m}")
                args.append(int(bound))
        sql = f"SELECT item_id, count(*) FROM events WHERE {' AND '.join(where)} GROUP BY item_id"
        rows = self._driver_read("count events per item", sql, tuple(args))
        return pd.DataFrame(rows, columns=["item_id", "events"]).astype({"events": "int64"})

    def users_frame(self) -> pd.DataFrame:
        return self._frame(select(users).order_by(users.c.user_id), list(users.c.keys()))

    def exposures_frame(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        engagement_types: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        first = select(
            events.c.request_id, events.c.item_id, func.min(events.c.timestamp_us).label("engaged_us")
        ).where(events.c.request_id.is_not(None))
        if engagement_types is not None:
            first = first.where(events.c.type.in_(list(engagement_types)))
        if since_us is not None:  # an attributed event comes after its exposure (give or take clock skew)
            first = first.where(events.c.timestamp_us >= since_us - ATTRIBUTION_SKEW_US)
        first = first.group_by(events.c.request_id, events.c.item_id).subquery()
        cols = [*exposures.c, *(c for c in exposure_items.c if c.name != "request_id"), first.c.engaged_us]
        stmt = (
            select(*cols)
            .join(exposure_items, exposure_items.c.request_id == exposures.c.request_id)
            .outerjoin(
                first,
                (first.c.request_id == exposures.c.request_id) & (first.c.item_id == exposure_items.c.item_id),
            )
        )
        if since_us is not None:
            stmt = stmt.where(exposures.c.timestamp_us >= since_us)
        if until_us is not None:
            stmt = stmt.where(exposures.c.timestamp_us < until_us)
        stmt = stmt.order_by(exposures.c.timestamp_us, exposures.c.request_id, exposure_items.c.slate,
                             exposure_items.c.position)  # fmt: skip
        return self._frame(stmt, [c.name for c in cols])

    def shown_items(self, *, since_us: int, until_us: int, variant: str | None = None) -> pd.DataFrame:
        # a plain statement on a driver connection, fetched at once: the exposure log reads every row shown since
        # its last refresh (tens of thousands at a few hundred lists a second), and SQLAlchemy's row-by-row
        # fetch costs several times the query, with the interpreter lock held against the requests being served.
        # One row per exposure, its items joined by a unit separator (ids hold no control characters) in slate
        # and position order: a driver row per shown item cost ~30x the tuples (51 ms of the lock held for 33k
        # items, then 26 ms for pandas to convert them)
        m = self._mark
        if self._dialect == "postgresql":
            joined = ("SELECT string_agg(i.item_id, chr(31) ORDER BY i.slate, i.position) FROM exposure_items i "
                      "WHERE i.request_id = e.request_id")  # fmt: skip
        else:  # (SQLite before 3.44 has no ORDER BY inside an aggregate: it concatenates in its input's order)
            joined = ("SELECT group_concat(item_id, char(31)) FROM (SELECT i.item_id FROM exposure_items i "
                      "WHERE i.request_id = e.request_id ORDER BY i.slate, i.position)")  # fmt: skip
        sql = (
            f"SELECT e.request_id, e.user_id, e.timestamp_us, ({joined}) FROM exposures e "
            f"WHERE e.timestamp_us >= {m} AND e.timestamp_us < {m}"
            + (f" AND e.variant = {m}" if variant is not None else "")
            + " ORDER BY e.timestamp_us, e.request_id"
        )
        params = (since_us, until_us, *([variant] if variant is not None else []))
        rows = [row for row in self._driver_read("read shown items", sql, params) if row[3]]
        shown = [row[3].split("\x1f") for row in rows]
        counts = [len(found) for found in shown]
        columns = {
            "request_id": np.repeat(np.array([row[0] for row in rows], dtype=object), counts),
            "user_id": np.repeat(np.array([row[1] for row in rows], dtype=object), counts),
            "item_id": np.array([item for found in shown for item in found], dtype=object),
            "timestamp_us": np.repeat(np.array([row[2] for row in rows], dtype=np.int64), counts),
        }
        # object columns as given (pandas would otherwise convert every id to its string type)
        return pd.DataFrame({name: pd.Series(values, dtype=values.dtype) for name, values in columns.items()})

    def engagements(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        types: Sequence[str] | None = None,
        ingested_since_us: int | None = None,
    ) -> pd.DataFrame:
        # the recent few (``ingested_since_us``) are found through the ingestion index: the request id is
        # tested as an expression, which SQLite (no statistics) would otherwise prefer to walk in full
        attributed = events.c.request_id.concat("") if ingested_since_us is not None else events.c.request_id
        stmt = (
            select(events.c.request_id, events.c.item_id, func.min(events.c.timestamp_us).label("engaged_us"))
            .where(attributed.is_not(None))
            .group_by(events.c.request_id, events.c.item_id)
        )
        if since_us is not None:
            stmt = stmt.where(events.c.timestamp_us >= since_us)
        if until_us is not None:
            stmt = stmt.where(events.c.timestamp_us < until_us)
        if types is not None:
            stmt = stmt.where(events.c.type.in_(list(types)))
        if ingested_since_us is not None:
            stmt = stmt.where(events.c.ingested_at_us >= ingested_since_us)
        return self._frame(stmt, ["request_id", "item_id", "engaged_us"])

    def counts(self) -> dict[str, int]:
        with self._transaction("count rows") as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (items, users, events, exposures)
            }

    def ping(self) -> None:
        with self._transaction("answer a ping") as conn:
            conn.execute(select(1)).scalar_one()

    def _driver_read(self, what: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One read-only statement straight on a pooled driver connection: no transaction to begin and end
        around it (SQLAlchemy's costs several times the read of a user's few events). A single statement reads
        one consistent snapshot on both back ends; the pool rolls the connection back when it is returned."""
        try:
            conn = self._engine.raw_connection()
            try:
                cursor = conn.cursor()
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                conn.close()
        except (SQLAlchemyError, self._engine.dialect.loaded_dbapi.Error) as exc:
            raise self._failed(what, exc) from exc

    def _frame(self, stmt: Any, columns: list[str]) -> pd.DataFrame:
        with self._transaction("read") as conn:
            # plain tuples: pandas probes each SQLAlchemy Row for array attributes, ~15x slower on big reads
            rows = [tuple(row) for row in conn.execute(stmt)]
        return pd.DataFrame(rows, columns=columns)

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, what: str, *, write: bool = False) -> Iterator[Connection]:
        try:
            with self._engine.connect().execution_options(writer=write) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise self._failed(what, exc) from exc
        except OverflowError as exc:  # raised by the driver while binding, outside SQLAlchemy's wrapping
            raise StoreError(
                f"could not {what} in {self.url}: a number is out of the database's range ({exc})"
            ) from exc

    def _failed(self, what: str, exc: Exception) -> StoreError:
        cause = getattr(exc, "orig", None) or exc  # the driver's own error, where SQLAlchemy wrapped one
        return StoreError(f"could not {what} in {self.url}: {cause.__class__.__name__}: {cause}")

    def close(self) -> None:
        self._engine.dispose()


def _flat(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(value for row in rows for value in row)


def _event_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in _EVENT_COLUMNS)  # context is already JSON text (validation made it)


def _check_mode(mode: str, errors: list[RecordError]) -> None:
    if mode not in ("strict", "lenient"):
        raise ConfigError(f"unknown mode {mode!r}; known: lenient, strict")
    if errors and mode == "strict":
        raise InvalidBatchError(errors)


def _as_list(records: Records | pd.DataFrame) -> list[Any]:
    if isinstance(records, pd.DataFrame):
        from tastemaker.data.dataset import frame_records

        return frame_records(records)
    return list(records)


def _chunks(rows: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _or(value: int | None, default: int) -> int:
    return default if value is None else int(value)
