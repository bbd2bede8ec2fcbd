"""Server groups, their members and the groups made for them in remote clouds

Revision ID: api_0006
Revises: api_0005
Create Date: 2027-02-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0006"
down_revision = "api_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_groups",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("max_server_per_host", sa.Integer(), nullable=True),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )
    with op.batch_alter_table("server_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_groups_project_id"), ["project_id"], unique=False
        )
    op.create_table(
        "server_group_members",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("group_uuid", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["group_uuid"], ["server_groups.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    with op.batch_alter_table("server_group_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_group_members_group_uuid"), ["group_uuid"], unique=False
        )
    op.create_table(
        "server_group_zones",
        sa.Column("group_uuid", sa.String(length=36), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_uuid", "zone"),
    )


def downgrade() -> None:
    op.drop_table("server_group_zones")
    with op.batch_alter_table("server_group_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_group_members_group_uuid"))
    op.drop_table("server_group_members")
    with op.batch_alter_table("server_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_groups_project_id"))
    op.drop_table("server_groups")
