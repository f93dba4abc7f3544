"""What the labelling page needs: rater sign-in tokens (hashed), admin and revocation; labels wanted
per queue item, leases of items to raters, gold items with known answers.

Plain ADD COLUMN and CREATE INDEX only, so SQLite files upgrade in place (no table rebuild).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-20
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("raters", sa.Column("token_hash", sa.String(64), nullable=True))
    op.add_column("raters", sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("raters", sa.Column("revoked_at", sa.DateTime, nullable=True))
    op.create_index("ix_raters_token_hash", "raters", ["token_hash"], unique=True)
    op.add_column("queues", sa.Column("labels_per_item", sa.Integer, nullable=False, server_default="1"))
    op.create_table(
        "leases",
        sa.Column("id", sa.Integer),
        sa.Column("queue_item_id", sa.Integer, nullable=False),
        sa.Column("rater_id", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.UniqueConstraint("queue_item_id", "rater_id", name="uq_leases_queue_item_id_rater_id"),
        sa.ForeignKeyConstraint(["queue_item_id"], ["queue_items.id"], name="fk_leases_queue_item_id_queue_items",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_leases_rater_id_raters"),
    )
    op.create_index("ix_leases_expires_at", "leases", ["expires_at"])
    op.create_table(
        "gold_items",
        sa.Column("id", sa.Integer),
        sa.Column("filter", sa.String(32), nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("answer", sa.Boolean, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gold_items"),
        sa.UniqueConstraint("filter", "uid", name="uq_gold_items_filter_uid"),
    )


def downgrade() -> None:
    op.drop_table("gold_items")
    op.drop_table("leases")
    op.drop_column("queues", "labels_per_item")
    op.drop_index("ix_raters_token_hash", "raters")
    for column in ("revoked_at", "is_admin", "token_hash"):
        op.drop_column("raters", column)
