"""service platform

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:00:06.506762
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "engineers",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("gas_safe_number", sa.String(length=32), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("home_lat", sa.Float(), nullable=False),
        sa.Column("home_lon", sa.Float(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("invitations", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("evaluated", sa.Integer(), nullable=False),
        sa.Column("cs_sum", sa.Float(), nullable=False),
        sa.Column("sq_sum", sa.Float(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_engineers_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_engineers")),
    )
    op.create_table(
        "notifications",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("read_ms", sa.BigInteger(), nullable=True),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notifications_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_user_id", ["user_id", "id"], unique=False)

    op.create_table(
        "engineer_prices",
        sa.Column("engineer_id", sa.String(length=64), nullable=False),
        sa.Column("service_type", sa.String(length=32), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("average", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["engineer_id"],
            ["engineers.user_id"],
            name=op.f("fk_engineer_prices_engineer_id_engineers"),
        ),
        sa.PrimaryKeyConstraint("engineer_id", "service_type", name=op.f("pk_engineer_prices")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("service_type", sa.String(length=32), nullable=False),
        sa.Column("problem", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("preferred_ms", sa.BigInteger(), nullable=False),
        sa.Column("principle", sa.String(length=16), nullable=False),
        sa.Column("min_performance", sa.Float(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("authorized_by", sa.String(length=64), nullable=True),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.Column("analysis", sa.JSON(), nullable=False),
        sa.Column("responses_due_ms", sa.BigInteger(), nullable=True),
        sa.Column("engineer_id", sa.String(length=64), nullable=True),
        sa.Column("contract", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("completed_ms", sa.BigInteger(), nullable=True),
        sa.Column("normal_since_ms", sa.BigInteger(), nullable=True),
        sa.Column("verified_ms", sa.BigInteger(), nullable=True),
        sa.Column("evaluation_token_hash", sa.String(length=64), nullable=True),
        sa.Column("evaluation", sa.JSON(), nullable=False),
        sa.Column("closed_reason", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_jobs_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["users.id"], name=op.f("fk_jobs_requested_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("evaluation_token_hash", name=op.f("uq_jobs_evaluation_token_hash")),
        sa.UniqueConstraint("requested_by", "idempotency_key", name=op.f("uq_jobs_requested_by")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_device_created", ["device_id", "created_ms"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_engineer_id"), ["engineer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index("ix_jobs_state", ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "reminders",
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("due_date", sa.String(length=10), nullable=False),
        sa.Column("sent_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_reminders_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("device_id", "due_date", name=op.f("pk_reminders")),
    )
    op.create_table(
        "invitations",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("engineer_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("performance", sa.Float(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("invited_ms", sa.BigInteger(), nullable=False),
        sa.Column("responded_ms", sa.BigInteger(), nullable=True),
        sa.Column("quote", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["engineer_id"],
            ["engineers.user_id"],
            name=op.f("fk_invitations_engineer_id_engineers"),
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_invitations_job_id_jobs")),
        sa.PrimaryKeyConstraint("job_id", "engineer_id", name=op.f("pk_invitations")),
    )


def downgrade() -> None:

    op.drop_table("invitations")
    op.drop_table("reminders")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_tenant_id"))
        batch_op.drop_index("ix_jobs_state")
        batch_op.drop_index(batch_op.f("ix_jobs_owner_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_engineer_id"))
        batch_op.drop_index("ix_jobs_device_created")

    op.drop_table("jobs")
    op.drop_table("engineer_prices")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_user_id")

    op.drop_table("notifications")
    op.drop_table("engineers")
