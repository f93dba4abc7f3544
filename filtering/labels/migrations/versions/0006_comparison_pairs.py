"""Comparison tasks for the pairwise page (`glide pairs make`): runs, their pairs, who was handed which;
judgements gain check_kind, undo_client_id and comparison_pair_id, and one vote in force per (rater, pair, question) becomes
a partial unique index (an undone vote leaves room for the rater's new one).

New tables and nullable columns only, so SQLite files upgrade in place.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CURRENT = sa.text("undone_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "comparison_runs",
        sa.Column("id", sa.Integer),
        sa.Column("question", sa.String(32), nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("votes_per_pair", sa.Integer, nullable=False),
        sa.Column("cap_per_rater", sa.Integer, nullable=True),
        sa.Column("params", sa.JSON, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_comparison_runs"),
    )
    op.create_table(
        "comparison_pairs",
        sa.Column("id", sa.Integer),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("duplicate_of", sa.Integer, nullable=True),
        sa.Column("prompt_index", sa.Integer, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("model_a", sa.String(256), nullable=False),
        sa.Column("model_b", sa.String(256), nullable=False),
        sa.Column("image_a", sa.Text, nullable=False),
        sa.Column("image_b", sa.Text, nullable=True),
        sa.Column("a_side", sa.String(5), nullable=False),
        sa.Column("noise_seed", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_comparison_pairs"),
        sa.ForeignKeyConstraint(["run_id"], ["comparison_runs.id"], ondelete="CASCADE",
                                name="fk_comparison_pairs_run_id_comparison_runs"),
        sa.ForeignKeyConstraint(["duplicate_of"], ["comparison_pairs.id"],
                                name="fk_comparison_pairs_duplicate_of_comparison_pairs"),
        sa.UniqueConstraint("run_id", "position", name="uq_comparison_pairs_run_id_position"),
        sa.CheckConstraint("kind IN ('compare', 'duplicate', 'obvious')", name="ck_comparison_pairs_kind"),
        sa.CheckConstraint("a_side IN ('left', 'right')", name="ck_comparison_pairs_a_side"),
    )
    op.create_table(
        "comparison_assignments",
        sa.Column("id", sa.Integer),
        sa.Column("pair_id", sa.Integer, nullable=False),
        sa.Column("rater_id", sa.Integer, nullable=False),
        sa.Column("served", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("voted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_comparison_assignments"),
        sa.ForeignKeyConstraint(["pair_id"], ["comparison_pairs.id"], ondelete="CASCADE",
                                name="fk_comparison_assignments_pair_id_comparison_pairs"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_comparison_assignments_rater_id_raters"),
        sa.UniqueConstraint("pair_id", "rater_id", name="uq_comparison_assignments_pair_id_rater_id"),
    )
    op.create_index("ix_comparison_assignments_rater_id", "comparison_assignments", ["rater_id"])
    with op.batch_alter_table("judgements") as batch:  # SQLite: a CHECK on a new column needs batch mode
        batch.add_column(sa.Column("check_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("undo_client_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("comparison_pair_id", sa.Integer, nullable=True))
        batch.create_foreign_key("fk_judgements_comparison_pair_id_comparison_pairs", "comparison_pairs",
                                 ["comparison_pair_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_judgements_comparison_pair_id", ["comparison_pair_id"])
        batch.create_check_constraint("ck_judgements_check_kind", "check_kind IN ('duplicate', 'obvious')")
        batch.create_unique_constraint("uq_judgements_undo_client_id", ["undo_client_id"])
    op.create_index("uq_judgements_one_vote", "judgements", ["rater_id", "pair_id", "question"], unique=True,
                    sqlite_where=CURRENT, postgresql_where=CURRENT)


def downgrade() -> None:
    op.drop_index("uq_judgements_one_vote", "judgements")
    with op.batch_alter_table("judgements") as batch:
        batch.drop_index("ix_judgements_comparison_pair_id")
        batch.drop_constraint("fk_judgements_comparison_pair_id_comparison_pairs", type_="foreignkey")
        batch.drop_column("comparison_pair_id")
        batch.drop_constraint("uq_judgements_undo_client_id", type_="unique")
        batch.drop_constraint("ck_judgements_check_kind", type_="check")
        batch.drop_column("undo_client_id")
        batch.drop_column("check_kind")
    op.drop_index("ix_comparison_assignments_rater_id", "comparison_assignments")
    op.drop_table("comparison_assignments")
    op.drop_table("comparison_pairs")
    op.drop_table("comparison_runs")
