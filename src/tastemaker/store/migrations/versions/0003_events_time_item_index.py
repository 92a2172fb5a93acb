"""events' time index carries the item too: the servers' popularity recount (events per item over the last days)
reads the index alone, without a lookup into the table per event (4x quicker in SQLite on 330k events); every
query that used the time index uses its prefix.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_time_item", "events", ["timestamp_us", "item_id"])
    op.drop_index("ix_events_timestamp", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_timestamp", "events", ["timestamp_us"])
    op.drop_index("ix_events_time_item", table_name="events")
