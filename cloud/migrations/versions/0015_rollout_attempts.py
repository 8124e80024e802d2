"""rollout_targets.attempts: a failed download is tried again (cloud.rollouts)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollout_targets") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("rollout_targets") as batch:
        batch.drop_column("attempts")
