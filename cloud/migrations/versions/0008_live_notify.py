"""PostgreSQL: twins and commands notify the portal's change feed (LISTEN bt_live)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:00:00

A changed twin row sends ``twin:<device id>``, a changed command row ``command:<id>`` on the
channel ``bt_live`` at commit (identical notices in one transaction are sent once), from
whichever process wrote it (`cloud.portal.feed`). SQLite has no NOTIFY: the feed polls.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGGERS = {"twins": ("twin", "device_id"), "commands": ("command", "id")}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (kind, column) in TRIGGERS.items():
        op.execute(
            f"""
            CREATE FUNCTION bt_live_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('bt_live', '{kind}:' || NEW.{column});
                RETURN NULL;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER bt_live_{table} AFTER INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION bt_live_{table}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TRIGGERS:
        op.execute(f"DROP TRIGGER bt_live_{table} ON {table}")
        op.execute(f"DROP FUNCTION bt_live_{table}()")
