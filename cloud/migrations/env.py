"""Alembic environment: runs on the engine `cloud.db.upgrade` passes in."""

from __future__ import annotations

from alembic import context

import cloud.evidence_models
import cloud.lifecycle_models  # noqa: F401 (its tables, on the same metadata)
from cloud.models import Base
from cloud.partitions import is_partition_table

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # partitions of `samples` are made at run time (cloud.partitions), not declared
        include_name=lambda name, kind, _: (
            not (kind == "table" and name is not None and is_partition_table(name))
        ),
    )
    with context.begin_transaction():
        context.run_migrations()
