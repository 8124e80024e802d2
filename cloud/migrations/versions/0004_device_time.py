"""device time kept beside the ordering time of re-timed readings

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("samples", "twin_values"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("device_ts_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in ("samples", "twin_values"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("device_ts_ms")
