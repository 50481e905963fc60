"""Hosts: each daemon's clock against the database's.

Heartbeats and guest states are stamped with the database's clock from this
revision on; each daemon records how far its own clock is from it, so that
``virtpolicy hosts`` can show a host whose clock is off.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("clock_offset_s", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("clock_offset_s")
