"""Alembic environment: runs on the engine `cloud.db.upgrade` passes in."""

from __future__ import annotations

from alembic import context

from cloud.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
