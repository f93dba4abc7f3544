"""The labels database's tables (the schema at the newest migration; migrations/ builds it step by step).

    raters        who answers: name; the labelling page's hashed sign-in token, admin flag, revocation
    labels        one row per answer given, never deleted: pair (uid, dataset), filter, answer
                  (yes / no / skip), rater, source (ground_truth / import / page), when answered
                  (created) and stored, the queue that served it, the sender's client_id (unique: a
                  resent answer is stored once), undone_at (set by an undo), answer_ms (the page:
                  how long the pair was shown before the key)
    label_events  the audit trail of changes to stored labels (an undo: which label, who, when,
                  the undo's own client_id so a resent undo reverts one label, not two)
    queues        a batch of pairs picked for one filter: kind random / search (its query) / active
                  (the filters' version and the boundary), the dataset, labels wanted per item
    queue_items   a queue's pairs in order, with the similarity (search) or margin (active) that
                  picked each
    leases        which rater holds which queue item until when (the page hands items out)
    gold_items    pairs with a known answer per filter, mixed into queues to check raters
    judgements    pairwise comparisons of two models' images for one question (the comparison
                  page; evaluation.judgements reads them for the Elo fit): the two models, which
                  one won (a / b / tie / both_bad, both_bad counted as a tie), which side model_a
                  was shown on, the pair task, prompt and seed, rater, client_id (unique), when
                  answered and stored, undone_at; check_kind (duplicate / obvious: a check item, left
                  out of the Elo fit), undo_client_id (the undo's id: a resent undo reverts one vote),
                  comparison_pair_id (the page's votes: the pair as a key).
                  One vote in force per (rater, pair, question): a partial unique index.
    comparison_runs         a batch of comparison tasks made by `glide pairs make`: question, report
                            folder, the settings compared, votes wanted per pair, a per-rater cap
    comparison_pairs        a run's tasks in order: prompt and seed, model_a / model_b, their images
                            (paths inside the report), which side model_a is shown on; check items
                            (duplicate of an earlier pair, or obvious: a sample against noise)
    comparison_assignments  which rater was handed which pair, until when, and whether their vote on
                            it is in force (the page hands pairs out)

A pair's current answer from one rater is their latest label for it that is not undone; the
labels table is the history, so an undo brings the previous answer back.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

ANSWERS = ("yes", "no", "skip")
SOURCES = ("ground_truth", "import", "page")
QUEUE_KINDS = ("random", "search", "active")
EVENT_ACTIONS = ("undo",)
WINNERS = ("a", "b", "tie", "both_bad")
SIDES = ("left", "right")
CHECK_KINDS = ("duplicate", "obvious")
PAIR_KINDS = ("compare",) + CHECK_KINDS
MODEL_NAME_LENGTH = 256
UID_LENGTH = 32
CLIENT_ID_LENGTH = 128
RATER_NAME_LENGTH = 64

# Named constraints: migrations can refer to them, and every backend gets the same names.
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


class UtcDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out (stored naive UTC: SQLite has no zones)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give an aware (UTC) time")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


raters = sa.Table(
    "raters", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(RATER_NAME_LENGTH), nullable=False, unique=True),
    sa.Column("created", UtcDateTime, nullable=False),
    # sha256 of the sign-in token (the token itself is shown once and never stored)
    sa.Column("token_hash", sa.String(64), nullable=True, index=True, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
)

queues = sa.Table(
    "queues", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("filter", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(16), sa.CheckConstraint(_in("kind", QUEUE_KINDS), name="kind"), nullable=False),
    sa.Column("query", sa.Text, nullable=True),            # search: the text query
    sa.Column("filter_version", sa.String(64), nullable=True),  # active: the FILTERS folder's sha256
    sa.Column("dataset", sa.Text, nullable=True),          # the embeddings dataset the pairs came from
    sa.Column("params", sa.JSON, nullable=True),           # how the picking ran (seed, model, boundary, ...)
    sa.Column("created", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.Integer, sa.ForeignKey("raters.id"), nullable=True),
    sa.Column("labels_per_item", sa.Integer, nullable=False, server_default="1"),
)

queue_items = sa.Table(
    "queue_items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("uid", sa.String(UID_LENGTH), nullable=False, index=True),
    sa.Column("similarity", sa.Float, nullable=True),      # search: cosine similarity to the query
    sa.Column("margin", sa.Float, nullable=True),          # active: score minus the boundary it was near
    sa.UniqueConstraint("queue_id", "uid"),
    sa.Index(None, "queue_id", "position"),                # the page walks a queue in order
)

labels = sa.Table(
    "labels", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("client_id", sa.String(CLIENT_ID_LENGTH), nullable=False, unique=True),
    sa.Column("uid", sa.String(UID_LENGTH), nullable=False),
    sa.Column("filter", sa.String(32), nullable=False),
    sa.Column("answer", sa.String(4), sa.CheckConstraint(_in("answer", ANSWERS), name="answer"), nullable=False),
    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("dataset", sa.Text, nullable=True),
    sa.Column("queue_id", sa.Integer, sa.ForeignKey("queues.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created", UtcDateTime, nullable=False),     # when the rater answered
    sa.Column("stored", UtcDateTime, nullable=False),      # when this database received it
    sa.Column("undone_at", UtcDateTime, nullable=True),
    sa.Column("answer_ms", sa.Integer, nullable=True),     # the page: ms from showing the pair to the key
    sa.Index(None, "filter", "uid"),
    sa.Index(None, "rater_id", "id"),
)

label_events = sa.Table(
    "label_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("label_id", sa.Integer, sa.ForeignKey("labels.id"), nullable=False, index=True),
    sa.Column("action", sa.String(8), sa.CheckConstraint(_in("action", EVENT_ACTIONS), name="action"),
              nullable=False),
    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=True),
    sa.Column("client_id", sa.String(CLIENT_ID_LENGTH), nullable=True, unique=True),
    sa.Column("at", UtcDateTime, nullable=False),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("queue_item_id", sa.Integer, sa.ForeignKey("queue_items.id", ondelete="CASCADE"), nullable=False),
    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=False, index=True),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
    sa.UniqueConstraint("queue_item_id", "rater_id"),
)

gold_items = sa.Table(
    "gold_items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("filter", sa.String(32), nullable=False),
    sa.Column("uid", sa.String(UID_LENGTH), nullable=False),
    sa.Column("answer", sa.Boolean, nullable=False),
    sa.Column("created", UtcDateTime, nullable=False),
    sa.UniqueConstraint("filter", "uid"),
)

judgements = sa.Table(
    "judgements", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("client_id", sa.String(CLIENT_ID_LENGTH), nullable=False, unique=True),
    sa.Column("question", sa.String(32), nullable=False),     # e.g. photorealism, caption
    sa.Column("pair_id", sa.String(128), nullable=True),      # the comparison task (glide pairs make)
    sa.Column("model_a", sa.String(MODEL_NAME_LENGTH), nullable=False),
    sa.Column("model_b", sa.String(MODEL_NAME_LENGTH), nullable=False),
    sa.Column("winner", sa.String(8), sa.CheckConstraint(_in("winner", WINNERS), name="winner"), nullable=False),
    sa.Column("a_side", sa.String(5), sa.CheckConstraint(_in("a_side", SIDES), name="a_side"),
              nullable=True),                                 # where model_a's image was shown
    sa.Column("prompt", sa.Text, nullable=True),
    sa.Column("seed", sa.Integer, nullable=True),
    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),       # page / import
    sa.Column("created", UtcDateTime, nullable=False),        # when the rater answered
    sa.Column("stored", UtcDateTime, nullable=False),         # when this database received it
    sa.Column("undone_at", UtcDateTime, nullable=True),
    sa.Column("check_kind", sa.String(16), sa.CheckConstraint(_in("check_kind", CHECK_KINDS), name="check_kind"),
              nullable=True),                                 # a check item's vote (not for the Elo fit)
    sa.Column("undo_client_id", sa.String(CLIENT_ID_LENGTH), nullable=True, unique=True),
    # the page's votes: the comparison pair as a key (pair_id holds it as text, as imports name theirs)
    sa.Column("comparison_pair_id", sa.Integer, sa.ForeignKey("comparison_pairs.id", ondelete="SET NULL"),
              nullable=True, index=True),
    sa.Index(None, "question", "rater_id", "pair_id"),
    # one vote in force per (rater, pair, question): an undone vote no longer counts, so the rater can vote again
    sa.Index("uq_judgements_one_vote", "rater_id", "pair_id", "question", unique=True,
             sqlite_where=sa.text("undone_at IS NULL"), postgresql_where=sa.text("undone_at IS NULL")),
)

comparison_runs = sa.Table(
    "comparison_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("question", sa.String(32), nullable=False),
    sa.Column("report", sa.Text, nullable=False),               # the report folder (absolute)
    sa.Column("settings", sa.JSON, nullable=False),             # the settings compared, in the order given
    sa.Column("votes_per_pair", sa.Integer, nullable=False),    # raters wanted per comparison pair
    sa.Column("cap_per_rater", sa.Integer, nullable=True),      # votes one rater may give in this run
    sa.Column("params", sa.JSON, nullable=True),                # seed, check fractions, counts
    sa.Column("created", UtcDateTime, nullable=False),
)

comparison_pairs = sa.Table(
    "comparison_pairs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("comparison_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), sa.CheckConstraint(_in("kind", PAIR_KINDS), name="kind"), nullable=False),
    sa.Column("duplicate_of", sa.Integer, sa.ForeignKey("comparison_pairs.id"), nullable=True),
    sa.Column("prompt_index", sa.Integer, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("model_a", sa.String(MODEL_NAME_LENGTH), nullable=False),
    sa.Column("model_b", sa.String(MODEL_NAME_LENGTH), nullable=False),   # obvious: "noise"
    sa.Column("image_a", sa.Text, nullable=False),              # PNG path relative to the report
    sa.Column("image_b", sa.Text, nullable=True),               # obvious: none (noise made when served)
    sa.Column("a_side", sa.String(5), sa.CheckConstraint(_in("a_side", SIDES), name="a_side"), nullable=False),
    sa.Column("noise_seed", sa.BigInteger, nullable=True),      # obvious: the noise image's seed
    sa.UniqueConstraint("run_id", "position"),
)

comparison_assignments = sa.Table(
    "comparison_assignments", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("pair_id", sa.Integer, sa.ForeignKey("comparison_pairs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("rater_id", sa.Integer, sa.ForeignKey("raters.id"), nullable=False, index=True),
    sa.Column("served", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("voted", sa.Boolean, nullable=False, server_default=sa.false()),  # their vote is in force
    sa.UniqueConstraint("pair_id", "rater_id"),
)
