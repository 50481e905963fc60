"""Who may use the store: the oldest schema a virtpolicy must know to read and
write it, and the release that brought that schema.

A fleet is upgraded host by host, so a daemon still at the older release meets
the newer schema. Migrations within a major version only add (tables, and
columns that may be null or have a default), and leave this row alone: an
older daemon goes on working. A migration that an older daemon could not live
with raises ``readers_from`` (and ``needs_version``), and that daemon refuses
to start, naming the release to install.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    compat = op.create_table(
        "schema_compat",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("readers_from", sa.String(32), nullable=False),
        sa.Column("needs_version", sa.String(32), nullable=False),
    )
    op.bulk_insert(compat, [{"id": 1, "readers_from": "0007", "needs_version": "0.1.0"}])


def downgrade() -> None:
    op.drop_table("schema_compat")
