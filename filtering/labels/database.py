"""Open the labels database: a SQLite file (WAL, busy timeout, BEGIN IMMEDIATE writes) or any SQLAlchemy URL.

    engine = open_engine("labels.db")                # or sqlite:///labels.db, postgresql://host/labels
    upgrade(engine)                                   # create or migrate to the newest schema
    with write_transaction(engine) as conn: ...       # short; on SQLite it takes the write lock first

Why SQLite stops saying "database is locked" here: WAL lets readers run beside the one writer; the
busy timeout makes a writer wait for the lock instead of failing at once; and every write transaction
starts with BEGIN IMMEDIATE, so it takes the lock before reading anything. (pysqlite's default BEGIN
is deferred: a transaction that read first and then wants to write while another writer committed
meanwhile fails at once, whatever the timeout.) Write transactions are kept to a few hundred rows.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

import shards as sh

MIGRATIONS = Path(__file__).with_name("migrations")
WRITE_OPTION = "glide_labels_write"
DEFAULT_BUSY_TIMEOUT_S = 30.0


def database_url(db: str) -> str:
    """A path becomes a SQLite URL (absolute); a URL (scheme://...) is used as given."""
    db = str(db).strip()
    if not db:
        raise sh.UserError("--db: empty labels database (give a path or an SQLAlchemy URL)")
    if "://" in db:
        return db
    return f"sqlite:///{os.path.abspath(db)}"


def display_name(db: str) -> str:
    """`db` as messages show it: a URL's password masked."""
    if "://" not in str(db):
        return str(db)
    try:
        return sa.make_url(str(db)).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return str(db)


def sqlite_path(url: sa.engine.URL) -> str | None:
    """The file of a SQLite URL; None for another backend or an in-memory database."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def open_engine(db: str, *, create: bool = True, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sa.Engine:
    """An engine for `db` (path or URL); UserError naming `db` when it cannot be one."""
    text, db = database_url(db), display_name(db)
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError:
        raise sh.UserError(f"{db}: not a database path or SQLAlchemy URL") from None
    path = sqlite_path(url)
    if path is not None:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise sh.UserError(f"{db}: folder {parent} does not exist")
        if not create and not os.path.exists(path):
            raise sh.UserError(f"{db}: no labels database there (glide label sample/search/import creates one)")
    try:
        if url.get_backend_name() == "sqlite":
            engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})
            _configure_sqlite(engine, busy_timeout_s)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as e:
        raise sh.UserError(f"{db}: no database driver for it here ({e})") from None
    return engine


def _configure_sqlite(engine: sa.Engine, busy_timeout_s: float) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own: _on_begin does
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")  # before anything that locks
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable at each WAL checkpoint; safe with WAL
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One write transaction (committed on exit, rolled back on an exception)."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def read_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One consistent read (a snapshot in WAL mode; never waits on a writer)."""
    with engine.connect() as conn, conn.begin():
        yield conn


# ---------------------------------------------------------------- schema versions

def alembic_config(connection: sa.Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head", *, where: str = "") -> None:
    """Create the schema or migrate it to `revision`; safe when several processes open one file at once."""
    from alembic import command
    from alembic.util import CommandError

    where = where or engine.url.render_as_string(hide_password=True)
    target = head_revision() if revision == "head" else revision
    try:
        with read_transaction(engine) as conn:
            now = current_revision(conn)
            tables = set(sa.inspect(conn).get_table_names())
    except sa.exc.DatabaseError as e:
        raise sh.UserError(f"{where}: not a readable labels database ({_first_line(e)})") from None
    if now == target:
        return
    if now is None and tables - {"alembic_version"}:
        raise sh.UserError(f"{where}: holds tables ({', '.join(sorted(tables)[:4])}) but no labels schema version; "
                           f"not a labels database")
    try:
        with write_transaction(engine) as conn:  # the write lock first: a racing opener waits, then finds it done
            command.upgrade(alembic_config(conn), revision)
    except CommandError as e:
        raise sh.UserError(f"{where}: labels schema revision {now!r} is not one this release knows (newest "
                           f"{head_revision()!r}); is the database from a newer glide-pipeline? ({e})") from None
    except sa.exc.DBAPIError:  # on a server, a racing opener may migrate first (no IMMEDIATE lock there)
        with read_transaction(engine) as conn:
            if current_revision(conn) != target:
                raise


def _first_line(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e)
    return text.splitlines()[0][:160] if text else type(e).__name__
