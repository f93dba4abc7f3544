"""Alembic migrations of the labels database, run by `filtering.labels.database.upgrade` on open."""
