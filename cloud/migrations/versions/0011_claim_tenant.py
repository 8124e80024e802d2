"""claims.tenant_id: a claim binds the tenant as well as the owner (cloud.provisioning)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("claims") as batch:
        batch.add_column(sa.Column("tenant_id", sa.String(length=64), nullable=True))
        batch.create_foreign_key(op.f("fk_claims_tenant_id_users"), "users", ["tenant_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("claims") as batch:
        batch.drop_constraint(op.f("fk_claims_tenant_id_users"), type_="foreignkey")
        batch.drop_column("tenant_id")
