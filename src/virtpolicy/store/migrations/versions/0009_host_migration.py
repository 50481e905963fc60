"""Hosts: how other hosts migrate guests to this one (its libvirtd's URI for a
peer-to-peer migration, and where QEMU's stream comes in), for
``virtpolicy migrate``.

Only adds a column with a default: an older daemon goes on working.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("migration", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("migration")
