"""Host aggregates, host maintenance and moves between hosts

Revision ID: api_0005
Revises: api_0004
Create Date: 2027-01-11 09:00:00.000000

Hosts now take instances only while they belong to an aggregate. So that a broker keeps
placing exactly as before the upgrade, every zone that has hosts gets an aggregate of the
same name holding all of them (without an availability zone, so each host stays in its
zone's availability zone).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "api_0005"
down_revision = "api_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("name_key", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name_key"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_table(
        "aggregate_hosts",
        sa.Column("aggregate_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["aggregate_id"], ["aggregates.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("aggregate_id", "host_id"),
    )
    with op.batch_alter_table("aggregate_hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_aggregate_hosts_host_id"), ["host_id"], unique=False)
    op.create_table(
        "aggregate_metadata",
        sa.Column("aggregate_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["aggregate_id"], ["aggregates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("aggregate_id", "key"),
    )
    op.create_table(
        "migrations",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("source_host_id", sa.Integer(), nullable=False),
        sa.Column("dest_host_id", sa.Integer(), nullable=False),
        sa.Column("was_active", sa.Boolean(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dest_host_id"], ["hosts.id"]),
        sa.ForeignKeyConstraint(["source_host_id"], ["hosts.id"]),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reported", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column("admin_disabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("admin_reason", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("maintenance", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("maintenance_reason", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("maintenance_since", sa.DateTime(timezone=True), nullable=True)
        )
    _existing_hosts_keep_serving()


def _existing_hosts_keep_serving() -> None:
    conn = op.get_bind()
    hosts = sa.table(
        "hosts",
        sa.column("id", sa.Integer()),
        sa.column("zone", sa.String()),
        sa.column("reported", sa.Boolean()),
        sa.column("disabled_reason", sa.Text()),
    )
    aggregates = sa.table(
        "aggregates",
        sa.column("id", sa.Integer()),
        sa.column("uuid", sa.String()),
        sa.column("name", sa.String()),
        sa.column("name_key", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    members = sa.table(
        "aggregate_hosts",
        sa.column("aggregate_id", sa.Integer()),
        sa.column("host_id", sa.Integer()),
    )
    conn.execute(
        sa.update(hosts)
        .where(hosts.c.disabled_reason == "not reported by driver")
        .values(reported=False)
    )
    by_zone: dict[str, list[int]] = {}
    for host_id, zone in conn.execute(sa.select(hosts.c.id, hosts.c.zone).order_by(hosts.c.id)):
        by_zone.setdefault(zone, []).append(host_id)
    now = datetime.now(UTC)
    for zone, ids in sorted(by_zone.items()):
        aggregate_id = conn.execute(
            sa.insert(aggregates)
            .values(uuid=str(uuid.uuid4()), name=zone, name_key=zone.casefold(), created_at=now)
            .returning(aggregates.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(members), [{"aggregate_id": aggregate_id, "host_id": i} for i in ids]
        )


def downgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("maintenance_since")
        batch_op.drop_column("maintenance_reason")
        batch_op.drop_column("maintenance")
        batch_op.drop_column("admin_reason")
        batch_op.drop_column("admin_disabled")
        batch_op.drop_column("reported")
    op.drop_table("migrations")
    op.drop_table("aggregate_metadata")
    with op.batch_alter_table("aggregate_hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aggregate_hosts_host_id"))
    op.drop_table("aggregate_hosts")
    op.drop_table("aggregates")
