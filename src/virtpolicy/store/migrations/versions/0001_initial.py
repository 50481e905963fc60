"""Initial schema: policies, revisions, derived dependencies and labels.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table("store_state", sa.column("id"), sa.column("revision")),
        [{"id": 1, "revision": 0}],
    )
    op.create_table(
        "policies",
        sa.Column("guest", sa.String(255), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("doc", sa.Text, nullable=True),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "revisions",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("guest", sa.String(255), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("doc", sa.Text, nullable=True),
        sa.UniqueConstraint("guest", "revision", name="uq_revisions_guest_revision"),
    )
    op.create_table(
        "dependencies",
        sa.Column("guest", sa.String(255), primary_key=True),
        sa.Column("target", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    op.create_table(
        "labels",
        sa.Column("guest", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.create_index("ix_labels_key_value", "labels", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_labels_key_value", table_name="labels")
    for table in ("labels", "dependencies", "revisions", "policies", "store_state"):
        op.drop_table(table)
