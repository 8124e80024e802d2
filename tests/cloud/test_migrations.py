"""The Alembic migrations build exactly the schema `cloud/models.py` declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import cloud.evidence_models
import cloud.lifecycle_models  # noqa: F401 (its tables, on the same metadata)
from cloud.db import make_engine
from cloud.models import Base
from cloud.partitions import is_partition_table


def include_name(name: str | None, kind: str, parents: object) -> bool:
    """Partitions of `samples` are made at run time, not declared (cloud.partitions)."""
    return not (kind == "table" and name is not None and is_partition_table(name))


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"include_name": include_name})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
