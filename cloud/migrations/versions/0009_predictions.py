"""boiler_days, predictions, predictor_state: predictive maintenance (cloud.predict)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "boiler_days",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("computed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "day", name=op.f("pk_boiler_days")),
    )
    op.create_table(
        "predictions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("alarm_id", sa.BigInteger(), nullable=True),
        sa.Column("mode", sa.String(length=32), nullable=False),
        sa.Column("fault", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("raised_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.Column("days_to_fault", sa.Float(), nullable=False),
        sa.Column("days_low", sa.Float(), nullable=False),
        sa.Column("days_high", sa.Float(), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_predictions_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_device_state", ["device_id", "state"], unique=False)
        batch_op.create_index("ix_predictions_state_due", ["state", "due_ms"], unique=False)
    op.create_table(
        "predictor_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_predictor_state")),
    )


def downgrade() -> None:
    op.drop_table("predictor_state")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_state_due")
        batch_op.drop_index("ix_predictions_device_state")
    op.drop_table("predictions")
    op.drop_table("boiler_days")
