"""Fleet: the hosts whose daemons share the store, and the guests they see.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("uri", sa.String(1024), nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("topology", sa.Text, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("heartbeat_s", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "guest_states",
        sa.Column("guest", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ready", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_guest_states_host", "guest_states", ["host"])


def downgrade() -> None:
    op.drop_index("ix_guest_states_host", "guest_states")
    op.drop_table("guest_states")
    op.drop_table("hosts")
