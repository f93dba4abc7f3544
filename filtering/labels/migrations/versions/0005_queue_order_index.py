"""Queue items in queue order straight from an index: the page's search for a rater's next item walks
a queue in position order and stops at the first open item, instead of sorting the whole queue on
every keypress.

Revision ID: 0005
Revises: 0004
Create Date: 2025-02-04
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_queue_items_queue_id_position", "queue_items", ["queue_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_queue_items_queue_id_position", "queue_items")
