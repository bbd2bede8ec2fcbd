"""Zone leases: which node runs each zone's monitor jobs

Revision ID: api_0009
Revises: api_0008
Create Date: 2027-05-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "api_0009"
down_revision = "api_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zone_leases",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("zone"),
    )


def downgrade() -> None:
    op.drop_table("zone_leases")
