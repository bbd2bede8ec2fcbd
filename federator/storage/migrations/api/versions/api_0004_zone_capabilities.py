"""Zone capabilities reported by child zones

Revision ID: api_0004
Revises: api_0003
Create Date: 2026-11-21 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0004"
down_revision = "api_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("zones", schema=None) as batch_op:
        batch_op.add_column(sa.Column("capabilities", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("capabilities_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("zones", schema=None) as batch_op:
        batch_op.drop_column("capabilities_at")
        batch_op.drop_column("capabilities")
