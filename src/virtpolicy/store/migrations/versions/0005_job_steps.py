"""Job steps: each guest of a job, the host that runs it, and its result.

The results of jobs recorded before this revision move from the jobs'
``results`` column into steps of the job's own host.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_IN_FLIGHT = ("", "waiting", "starting", "stopping")


def upgrade() -> None:
    steps = op.create_table(
        "job_steps",
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("guest", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("result", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_job_steps_host_state", "job_steps", ["host", "state"])
    conn = op.get_bind()
    rows = []
    for job in conn.execute(sa.text("SELECT id, guests, results, host, state FROM jobs")):
        results = {r["guest"]: r for r in json.loads(job.results)}
        for guest in json.loads(job.guests):
            r = results.get(guest, {})
            result = r.get("result", "")
            done = job.state != "running" or result not in _IN_FLIGHT
            rows.append(
                {
                    "job_id": job.id,
                    "guest": guest,
                    "host": job.host,
                    "state": "done" if done else "claimed",
                    "result": result,
                    "seconds": float(r.get("seconds", 0.0)),
                    "detail": r.get("detail", ""),
                }
            )
    if rows:
        op.bulk_insert(steps, rows)


def downgrade() -> None:
    op.drop_index("ix_job_steps_host_state", "job_steps")
    op.drop_table("job_steps")
