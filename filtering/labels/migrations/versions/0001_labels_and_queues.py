"""Labels with their audit trail, raters by name, and the queues the label commands fill.

Revision ID: 0001
Revises:
Create Date: 2025-01-20
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "raters",
        sa.Column("id", sa.Integer),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raters"),
        sa.UniqueConstraint("name", name="uq_raters_name"),
    )
    op.create_table(
        "queues",
        sa.Column("id", sa.Integer),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("filter", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("query", sa.Text, nullable=True),
        sa.Column("filter_version", sa.String(64), nullable=True),
        sa.Column("dataset", sa.Text, nullable=True),
        sa.Column("params", sa.JSON, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queues"),
        sa.UniqueConstraint("name", name="uq_queues_name"),
        sa.CheckConstraint("kind IN ('random', 'search', 'active')", name="ck_queues_kind"),
        sa.ForeignKeyConstraint(["created_by"], ["raters.id"], name="fk_queues_created_by_raters"),
    )
    op.create_index("ix_queues_filter", "queues", ["filter"])
    op.create_table(
        "queue_items",
        sa.Column("id", sa.Integer),
        sa.Column("queue_id", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("similarity", sa.Float, nullable=True),
        sa.Column("margin", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queue_items"),
        sa.UniqueConstraint("queue_id", "uid", name="uq_queue_items_queue_id_uid"),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], name="fk_queue_items_queue_id_queues",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_queue_items_uid", "queue_items", ["uid"])
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("filter", sa.String(32), nullable=False),
        sa.Column("answer", sa.String(4), nullable=False),
        sa.Column("rater_id", sa.Integer, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("dataset", sa.Text, nullable=True),
        sa.Column("queue_id", sa.Integer, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("stored", sa.DateTime, nullable=False),
        sa.Column("undone_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_labels"),
        sa.UniqueConstraint("client_id", name="uq_labels_client_id"),
        sa.CheckConstraint("answer IN ('yes', 'no', 'skip')", name="ck_labels_answer"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_labels_rater_id_raters"),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], name="fk_labels_queue_id_queues", ondelete="SET NULL"),
    )
    op.create_index("ix_labels_filter_uid", "labels", ["filter", "uid"])
    op.create_index("ix_labels_rater_id_id", "labels", ["rater_id", "id"])
    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer),
        sa.Column("label_id", sa.Integer, nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("rater_id", sa.Integer, nullable=True),
        sa.Column("client_id", sa.String(128), nullable=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_label_events"),
        sa.UniqueConstraint("client_id", name="uq_label_events_client_id"),
        sa.CheckConstraint("action IN ('undo')", name="ck_label_events_action"),
        sa.ForeignKeyConstraint(["label_id"], ["labels.id"], name="fk_label_events_label_id_labels"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_label_events_rater_id_raters"),
    )
    op.create_index("ix_label_events_label_id", "label_events", ["label_id"])


def downgrade() -> None:
    for table in ("label_events", "labels", "queue_items", "queues", "raters"):
        op.drop_table(table)
