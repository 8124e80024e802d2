"""twins.last_seen_ms index: the watermark sender and fleet views find active devices by it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("twins", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_twins_last_seen_ms"), ["last_seen_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("twins", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_twins_last_seen_ms"))
