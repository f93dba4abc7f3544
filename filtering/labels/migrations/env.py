"""Alembic's entry point: migrates the connection `filtering.labels.database.upgrade` passes in.

That connection is already inside a write transaction (BEGIN IMMEDIATE on SQLite), so a second
process opening the same new database waits, then finds it migrated.
"""
from alembic import context

from filtering.labels.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
