"""Hosts: each host's memory as its daemon last sampled it, and where its
placer put its guests, for the fleet's pages.

Only adds a column with a default: an older daemon goes on working.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("memory", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("placement", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("placement")
        batch.drop_column("memory")
