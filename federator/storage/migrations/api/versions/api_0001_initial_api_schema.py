"""initial api schema

Revision ID: api_0001
Revises:
Create Date: 2026-11-21 04:08:54.678044
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "build_requests",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("flavor_id", sa.String(length=255), nullable=False),
        sa.Column("image_id", sa.String(length=64), nullable=False),
        sa.Column("availability_zone", sa.String(length=64), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("placement", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    with op.batch_alter_table("build_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_build_requests_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_build_requests_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "instance_mappings",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("cell", sa.String(length=64), nullable=True),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    with op.batch_alter_table("instance_mappings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_instance_mappings_project_created", ["project_id", "created_at"], unique=False
        )

    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("policy_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_policy_versions_sha256"), ["sha256"], unique=False)

    op.create_table(
        "request_specs",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.Column("run_after", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_instance_state", ["instance_uuid", "state"], unique=False)
        batch_op.create_index("ix_tasks_state_id", ["state", "id"], unique=False)

    op.create_table(
        "zones",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("driver", sa.String(length=64), nullable=False),
        sa.Column("cell", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_detail", sa.Text(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("bursting", sa.Boolean(), nullable=False),
        sa.Column("ram_used_mb", sa.BigInteger(), nullable=False),
        sa.Column("vcpus_used", sa.BigInteger(), nullable=False),
        sa.Column("disk_used_gb", sa.BigInteger(), nullable=False),
        sa.Column("instances", sa.BigInteger(), nullable=False),
        sa.Column("ram_total_mb", sa.BigInteger(), nullable=False),
        sa.Column("vcpus_total", sa.BigInteger(), nullable=False),
        sa.Column("disk_total_gb", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("az", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("vcpus_used", sa.Integer(), nullable=False),
        sa.Column("ram_used_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_used_gb", sa.BigInteger(), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("cpu_ratio", sa.Float(), nullable=False),
        sa.Column("ram_ratio", sa.Float(), nullable=False),
        sa.Column("disk_ratio", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["zone"], ["zones.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("zone", "name", name="uq_hosts_zone_name"),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hosts_zone"), ["zone"], unique=False)

    op.create_table(
        "allocations",
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.BigInteger(), nullable=False),
        sa.Column("disk_gb", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
        ),
        sa.ForeignKeyConstraint(
            ["zone"],
            ["zones.name"],
        ),
        sa.PrimaryKeyConstraint("instance_uuid"),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_allocations_host_id"), ["host_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_allocations_zone"), ["zone"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_zone"))
        batch_op.drop_index(batch_op.f("ix_allocations_host_id"))

    op.drop_table("allocations")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_zone"))

    op.drop_table("hosts")
    op.drop_table("zones")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_state_id")
        batch_op.drop_index("ix_tasks_instance_state")

    op.drop_table("tasks")
    op.drop_table("request_specs")
    with op.batch_alter_table("policy_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_versions_sha256"))

    op.drop_table("policy_versions")
    op.drop_table("nodes")
    with op.batch_alter_table("instance_mappings", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_mappings_project_created")

    op.drop_table("instance_mappings")
    with op.batch_alter_table("build_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_build_requests_project_id"))
        batch_op.drop_index(batch_op.f("ix_build_requests_created_at"))

    op.drop_table("build_requests")
