"""jobs notify the live feed too (the job page is live): PostgreSQL trigger like 0008's

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 21:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION bt_live_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('bt_live', 'job:' || NEW.id);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER bt_live_jobs AFTER INSERT OR UPDATE ON jobs "
        "FOR EACH ROW EXECUTE FUNCTION bt_live_jobs()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER bt_live_jobs ON jobs")
    op.execute("DROP FUNCTION bt_live_jobs()")
