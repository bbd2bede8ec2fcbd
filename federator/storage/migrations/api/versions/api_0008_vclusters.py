"""Virtual clusters and their members

Revision ID: api_0008
Revises: api_0007
Create Date: 2027-04-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0008"
down_revision = "api_0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vclusters",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("fault", sa.JSON(), nullable=True),
        sa.Column("remote_groups", sa.JSON(), nullable=False),
        sa.Column("previous_spec", sa.JSON(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_index("ix_vclusters_project_created", "vclusters", ["project_id", "created_at"])
    op.create_table(
        "vcluster_members",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("cluster_uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pool", sa.String(length=255), nullable=True),
        sa.Column("availability_zone", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fault", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["cluster_uuid"], ["vclusters.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("cluster_uuid", "name", name="uq_vcluster_member_name"),
    )
    op.create_index("ix_vcluster_members_cluster_uuid", "vcluster_members", ["cluster_uuid"])


def downgrade() -> None:
    op.drop_index("ix_vcluster_members_cluster_uuid", table_name="vcluster_members")
    op.drop_table("vcluster_members")
    op.drop_index("ix_vclusters_project_created", table_name="vclusters")
    op.drop_table("vclusters")
