"""evidence: uplinks.envelope (the device's signed message), the thread's hash chain
(thread_events.chain_seq/prev_hash/hash, thread_heads) and signed checkpoints

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("uplinks") as batch:
        batch.add_column(sa.Column("envelope", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("thread_events") as batch:
        batch.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_table(
        "thread_heads",
        sa.Column("chain", sa.String(length=63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("checkpointed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_thread_heads")),
    )
    op.create_table(
        "thread_checkpoints",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(length=63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_thread_checkpoints")),
    )
    op.create_index("ix_thread_checkpoints_chain_seq", "thread_checkpoints", ["chain", "seq"])
    op.create_index("ix_thread_events_chain", "thread_events", ["device_id", "chain_seq"])


def downgrade() -> None:
    op.drop_index("ix_thread_events_chain", table_name="thread_events")
    op.drop_index("ix_thread_checkpoints_chain_seq", table_name="thread_checkpoints")
    op.drop_table("thread_checkpoints")
    op.drop_table("thread_heads")
    with op.batch_alter_table("thread_events") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("chain_seq")
    with op.batch_alter_table("uplinks") as batch:
        batch.drop_column("envelope")
