"""The store's tables, in SQLAlchemy Core. Migrations under ``migrations/`` create exactly these.

Instants are BIGINT microseconds since the Unix epoch (UTC), the same on SQLite and PostgreSQL, so
snapshots read them without per-row parsing. External ids are strings up to 256 characters.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

ID_LENGTH = 256
TYPE_LENGTH = 64

metadata = MetaData()
_json = JSON().with_variant(JSONB(), "postgresql")

items = Table(
    "items",
    metadata,
    Column("item_id", String(ID_LENGTH), primary_key=True),
    Column("title", Text, nullable=True),
    Column("text", Text, nullable=True),
    Column("categories", _json, nullable=False),
    Column("provider", String(ID_LENGTH), nullable=True),
    Column("created_at_us", BigInteger, nullable=True),
    Column("available", Boolean, nullable=False),
    Column("attributes", _json, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    Index("ix_items_updated", "updated_at_us"),  # a server reads what changed since its last look
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(ID_LENGTH), primary_key=True),
    Column("created_at_us", BigInteger, nullable=True),
    Column("attributes", _json, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
)

# No foreign keys from events: apps send events before (or without) the catalog entry, and an event
# must never be lost for that. Snapshots take the union of ids.
events = Table(
    "events",
    metadata,
    Column("event_id", String(ID_LENGTH), primary_key=True),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("item_id", String(ID_LENGTH), nullable=False),
    Column("type", String(TYPE_LENGTH), nullable=False),
    Column("value", Float, nullable=True),
    Column("timestamp_us", BigInteger, nullable=False),
    Column("context", _json, nullable=True),
    Column("request_id", String(ID_LENGTH), nullable=True),
    Column("ingested_at_us", BigInteger, nullable=False),
    Index("ix_events_time_item", "timestamp_us", "item_id"),  # popularity counts read the index alone
    Index("ix_events_user_time", "user_id", "timestamp_us"),
    # Most events carry no request id: a partial index keeps attribution lookups cheap to maintain.
    Index(
        "ix_events_request",
        "request_id",
        sqlite_where=text("request_id IS NOT NULL"),
        postgresql_where=text("request_id IS NOT NULL"),
    ),
    Index("ix_events_ingested", "ingested_at_us"),
)

exposures = Table(
    "exposures",
    metadata,
    Column("request_id", String(ID_LENGTH), primary_key=True),
    Column("user_id", String(ID_LENGTH), nullable=False),
    Column("variant", String(64), nullable=False),
    Column("model_version", String(128), nullable=True),
    Column("config_hash", String(64), nullable=True),
    Column("timestamp_us", BigInteger, nullable=False),
    Column("context", _json, nullable=True),
    Index("ix_exposures_user_time", "user_id", "timestamp_us"),
    Index("ix_exposures_timestamp", "timestamp_us"),
)

# One row per shown item. ``slate`` names the row/slot group of a page (home rows later); '' for a
# plain list.
exposure_items = Table(
    "exposure_items",
    metadata,
    Column(
        "request_id",
        String(ID_LENGTH),
        ForeignKey("exposures.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("slate", String(128), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("item_id", String(ID_LENGTH), nullable=False),
    Column("score", Float, nullable=True),
    Column("source", String(64), nullable=True),
    Column("propensity", Float, nullable=True),
    Index("ix_exposure_items_item", "item_id"),
)
