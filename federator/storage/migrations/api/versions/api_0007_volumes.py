"""Block storage: pools, volumes, their attachments and allocations; zone storage counters

Revision ID: api_0007
Revises: api_0006
Create Date: 2027-03-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0007"
down_revision = "api_0006"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN: a batch (copy and drop) of ``zones`` would cascade to its hosts.
    for column in ("volume_gb_used", "volumes", "volume_gb_total"):
        op.add_column(
            "zones", sa.Column(column, sa.BigInteger(), nullable=False, server_default="0")
        )
    op.add_column(
        "zones",
        sa.Column("storage_bursting", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "storage_pools",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("az", sa.String(length=64), nullable=False),
        sa.Column("capacity_gb", sa.BigInteger(), nullable=True),
        sa.Column("used_gb", sa.BigInteger(), nullable=False),
        sa.Column("free_gb", sa.BigInteger(), nullable=True),
        sa.Column("volumes", sa.Integer(), nullable=False),
        sa.Column("reported", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["zone"], ["zones.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("zone", "name", name="uq_storage_pools_zone_name"),
    )
    op.create_index("ix_storage_pools_zone_free", "storage_pools", ["zone", "free_gb"])
    op.create_table(
        "volumes",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("size_gb", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("volume_type", sa.String(length=255), nullable=False),
        sa.Column("requested_az", sa.String(length=64), nullable=True),
        sa.Column("availability_zone", sa.String(length=64), nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("multiattach", sa.Boolean(), nullable=False),
        sa.Column("bootable", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("fault", sa.JSON(), nullable=True),
        sa.Column("placement", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("deleted_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_index("ix_volumes_project_created", "volumes", ["project_id", "created_at"])
    op.create_index("ix_volumes_zone_deleted", "volumes", ["zone", "deleted"])
    op.create_table(
        "volume_attachments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("volume_uuid", sa.String(length=36), nullable=False),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("tag", sa.String(length=60), nullable=True),
        sa.Column("delete_on_termination", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["volume_uuid"], ["volumes.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("volume_uuid", "server_uuid", name="uq_volume_server"),
    )
    op.create_index("ix_volume_attachments_volume_uuid", "volume_attachments", ["volume_uuid"])
    op.create_index("ix_volume_attachments_server_uuid", "volume_attachments", ["server_uuid"])
    op.create_table(
        "volume_allocations",
        sa.Column("volume_uuid", sa.String(length=36), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("size_gb", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["zone"], ["zones.name"]),
        sa.ForeignKeyConstraint(["pool_id"], ["storage_pools.id"]),
        sa.PrimaryKeyConstraint("volume_uuid"),
    )
    op.create_index("ix_volume_allocations_zone", "volume_allocations", ["zone"])
    op.create_index("ix_volume_allocations_pool_id", "volume_allocations", ["pool_id"])


def downgrade() -> None:
    op.drop_table("volume_allocations")
    op.drop_table("volume_attachments")
    op.drop_table("volumes")
    op.drop_table("storage_pools")
    for column in ("storage_bursting", "volume_gb_total", "volumes", "volume_gb_used"):
        op.drop_column("zones", column)
