"""The labelling page's timing of each answer, and finding a rater's leases without a scan.

labels.answer_ms: milliseconds between the page showing the pair and the rater's key (NULL for
labels from other doors). Plain ADD COLUMN and CREATE INDEX: SQLite files upgrade in place.

Revision ID: 0003
Revises: 0002
Create Date: 2025-02-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("labels", sa.Column("answer_ms", sa.Integer, nullable=True))
    op.create_index("ix_leases_rater_id", "leases", ["rater_id"])


def downgrade() -> None:
    op.drop_index("ix_leases_rater_id", "leases")
    op.drop_column("labels", "answer_ms")
