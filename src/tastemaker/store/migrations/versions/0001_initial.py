"""Initial schema: items, users, events, exposures, exposure_items.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 256
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(ID), primary_key=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("provider", sa.String(ID), nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=True),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(ID), primary_key=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=True),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(ID), primary_key=True),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("item_id", sa.String(ID), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("timestamp_us", sa.BigInteger(), nullable=False),
        sa.Column("context", JSON, nullable=True),
        sa.Column("request_id", sa.String(ID), nullable=True),
        sa.Column("ingested_at_us", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_events_timestamp", "events", ["timestamp_us"])
    op.create_index("ix_events_user_time", "events", ["user_id", "timestamp_us"])
    op.create_index(
        "ix_events_request",
        "events",
        ["request_id"],
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.create_index("ix_events_ingested", "events", ["ingested_at_us"])
    op.create_table(
        "exposures",
        sa.Column("request_id", sa.String(ID), primary_key=True),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("timestamp_us", sa.BigInteger(), nullable=False),
        sa.Column("context", JSON, nullable=True),
    )
    op.create_index("ix_exposures_user_time", "exposures", ["user_id", "timestamp_us"])
    op.create_index("ix_exposures_timestamp", "exposures", ["timestamp_us"])
    op.create_table(
        "exposure_items",
        sa.Column(
            "request_id",
            sa.String(ID),
            sa.ForeignKey("exposures.request_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("slate", sa.String(128), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.String(ID), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("propensity", sa.Float(), nullable=True),
    )
    op.create_index("ix_exposure_items_item", "exposure_items", ["item_id"])


def downgrade() -> None:
    op.drop_table("exposure_items")
    op.drop_table("exposures")
    op.drop_table("events")
    op.drop_table("users")
    op.drop_table("items")
