"""monitor events and remote usage of zones

Revision ID: api_0002
Revises: api_0001
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0002"
down_revision = "api_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=True),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("monitor_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_monitor_events_instance_uuid"), ["instance_uuid"], unique=False
        )
        batch_op.create_index("ix_monitor_events_zone_kind", ["zone", "kind"], unique=False)

    # Nullable: NULL means "not measured yet", so existing rows need no backfill.
    with op.batch_alter_table("zones", schema=None) as batch_op:
        batch_op.add_column(sa.Column("remote_instances", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("remote_vcpus", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("remote_ram_mb", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("zones", schema=None) as batch_op:
        batch_op.drop_column("remote_ram_mb")
        batch_op.drop_column("remote_vcpus")
        batch_op.drop_column("remote_instances")

    with op.batch_alter_table("monitor_events", schema=None) as batch_op:
        batch_op.drop_index("ix_monitor_events_zone_kind")
        batch_op.drop_index(batch_op.f("ix_monitor_events_instance_uuid"))

    op.drop_table("monitor_events")
