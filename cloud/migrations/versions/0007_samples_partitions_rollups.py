"""sample_rollups; on PostgreSQL samples partitioned by time (and rollups of what is there)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 08:00:00

On PostgreSQL the existing ``samples`` table is replaced by one partitioned by range of
``ts_ms`` (primary key ``(id, ts_ms)``, the same ``id`` sequence): a default partition, one
7-day partition for every period that holds readings, and the rows copied over. Rollups are
computed from the readings already stored. On a large table this takes a while and holds
the table: run it in a maintenance window (docs/operations.md). SQLite only gains the (unused
there) rollups table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WEEK_MS = 7 * 86_400_000
COLUMNS = "id, device_id, point, ts_ms, device_ts_ms, num, text, quality, seq"


def upgrade() -> None:
    op.create_table(
        "sample_rollups",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=63), nullable=False),
        sa.Column("point", sa.String(length=64), nullable=False),
        sa.Column("width_ms", sa.Integer(), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_rollups")),
    )
    with op.batch_alter_table("sample_rollups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sample_rollups_key", ["device_id", "point", "width_ms", "bucket_ms"], unique=False
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    from cloud.partitions import create_partition  # the same code housekeeping runs

    bind = op.get_bind()
    op.execute("ALTER TABLE samples RENAME TO samples_unpartitioned")
    op.execute("ALTER TABLE samples_unpartitioned RENAME CONSTRAINT pk_samples TO pk_samples_old")
    op.execute("ALTER INDEX ix_samples_device_point_ts RENAME TO ix_samples_old_device_point_ts")
    op.execute(
        """
        CREATE TABLE samples (
            id BIGINT NOT NULL DEFAULT nextval('samples_id_seq'),
            device_id VARCHAR(63) NOT NULL,
            point VARCHAR(64) NOT NULL,
            ts_ms BIGINT NOT NULL,
            device_ts_ms BIGINT,
            num FLOAT,
            text VARCHAR(200),
            quality VARCHAR(16) NOT NULL,
            seq BIGINT NOT NULL,
            CONSTRAINT pk_samples PRIMARY KEY (id, ts_ms)
        ) PARTITION BY RANGE (ts_ms)
        """
    )
    op.execute("CREATE INDEX ix_samples_device_point_ts ON samples (device_id, point, ts_ms)")
    op.execute("CREATE TABLE samples_default PARTITION OF samples DEFAULT")
    periods = bind.execute(
        sa.text(f"SELECT DISTINCT ts_ms / {WEEK_MS} FROM samples_unpartitioned WHERE ts_ms >= 0")
    ).scalars()
    for period in sorted(periods):
        create_partition(bind, period * WEEK_MS, (period + 1) * WEEK_MS)
    op.execute(f"INSERT INTO samples ({COLUMNS}) SELECT {COLUMNS} FROM samples_unpartitioned")
    op.execute("ALTER SEQUENCE samples_id_seq OWNED BY samples.id")
    op.execute("DROP TABLE samples_unpartitioned")
    for width in (60_000, 3_600_000):
        op.execute(
            f"""
            INSERT INTO sample_rollups (device_id, point, width_ms, bucket_ms, n, total, min, max)
            SELECT device_id, point, {width}, ts_ms / {width} * {width},
                   count(num), sum(num), min(num), max(num)
            FROM samples WHERE num IS NOT NULL
            GROUP BY device_id, point, ts_ms / {width} * {width}
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE samples RENAME TO samples_partitioned")
        op.execute("ALTER TABLE samples_partitioned RENAME CONSTRAINT pk_samples TO pk_samples_p")
        op.execute("ALTER INDEX ix_samples_device_point_ts RENAME TO ix_samples_p_device_point_ts")
        op.execute(
            "CREATE TABLE samples (LIKE samples_partitioned INCLUDING DEFAULTS, "
            "CONSTRAINT pk_samples PRIMARY KEY (id))"
        )
        op.execute("CREATE INDEX ix_samples_device_point_ts ON samples (device_id, point, ts_ms)")
        op.execute(f"INSERT INTO samples ({COLUMNS}) SELECT {COLUMNS} FROM samples_partitioned")
        op.execute("ALTER SEQUENCE samples_id_seq OWNED BY samples.id")
        op.execute("DROP TABLE samples_partitioned")
    op.drop_table("sample_rollups")
