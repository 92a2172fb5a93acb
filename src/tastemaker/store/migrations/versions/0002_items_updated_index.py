"""An index on items.updated_at_us: servers read the items changed since their last refresh.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_updated", "items", ["updated_at_us"])


def downgrade() -> None:
    op.drop_index("ix_items_updated", table_name="items")
