"""Alembic environment of the sim2obs leaderboard: migrations run on the connection that
:func:`sim2obs.leaderboard.db.upgrade` passes in (no alembic.ini needed)."""
from alembic import context

from sim2obs.leaderboard.db import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline SQL generation is not used
    raise RuntimeError("run migrations through sim2obs.leaderboard.db.upgrade")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
