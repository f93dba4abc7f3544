"""Pairwise judgements (the comparison page; the Elo fit reads them): one row per vote, never deleted.

A new table only, so SQLite files upgrade in place.

Revision ID: 0004
Revises: 0003
Create Date: 2025-02-10
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judgements",
        sa.Column("id", sa.Integer),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("question", sa.String(32), nullable=False),
        sa.Column("pair_id", sa.String(128), nullable=True),
        sa.Column("model_a", sa.String(256), nullable=False),
        sa.Column("model_b", sa.String(256), nullable=False),
        sa.Column("winner", sa.String(8), nullable=False),
        sa.Column("a_side", sa.String(5), nullable=True),
        sa.Column("prompt", sa.Text, nullable=True),
        sa.Column("seed", sa.Integer, nullable=True),
        sa.Column("rater_id", sa.Integer, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("stored", sa.DateTime, nullable=False),
        sa.Column("undone_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_judgements"),
        sa.UniqueConstraint("client_id", name="uq_judgements_client_id"),
        sa.CheckConstraint("winner IN ('a', 'b', 'tie', 'both_bad')", name="ck_judgements_winner"),
        sa.CheckConstraint("a_side IN ('left', 'right')", name="ck_judgements_a_side"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_judgements_rater_id_raters"),
    )
    op.create_index("ix_judgements_question_rater_id_pair_id", "judgements", ["question", "rater_id", "pair_id"])


def downgrade() -> None:
    op.drop_index("ix_judgements_question_rater_id_pair_id", "judgements")
    op.drop_table("judgements")
