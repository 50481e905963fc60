"""Jobs in the store's database, each guest a step that one host's daemon runs.

A job is recorded with one step per guest, each naming the host whose daemon
starts or stops that guest. Every daemon claims the pending steps of its own
host (:meth:`Jobs.claim_steps`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
write lock on SQLite), so that no step runs twice even when two processes
look at once, and writes its guests' results into their steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, insert, select, update
from sqlalchemy.engine import URL

from virtpolicy.clock import now as _now
from virtpolicy.errors import NotFoundError
from virtpolicy.store.jobrecords import IN_FLIGHT, Job, JobState, Step
from virtpolicy.store.schema import job_steps, jobs
from virtpolicy.store.sqlengine import chunks, write_transaction


class Jobs:
    """Job records of a :class:`~virtpolicy.store.sql.SqlStore`."""

    url: URL
    engine: Engine
    _sqlite: bool

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def add_job(
        self,
        action: str,
        request: Mapping[str, Any],
        guests: Sequence[str],
        *,
        runner: str,
        host: str,
        process: str,
        actor: str,
        hosts: Mapping[str, str] | None = None,
    ) -> Job:
        hosts = hosts or {}
        with write_transaction(self.engine, self.url, self._sqlite) as conn:
            key = conn.execute(
                insert(jobs).values(
                    action=action,
                    request=json.dumps(dict(request), sort_keys=True),
                    guests=json.dumps(list(guests)),
                    state="running",
                    runner=runner,
                    host=host,
                    process=process,
                    actor=actor,
                    created_at=_now(),
                    finished_at=None,
                    results="[]",
                    detail="",
                )
            ).inserted_primary_key
            assert key is not None  # an INSERT always has one
            job_id = int(key[0])
            if guests:
                conn.execute(
                    insert(job_steps),
                    [
                        {
                            "job_id": job_id,
                            "guest": g,
                            "host": hosts.get(g, host),
                            "state": "pending",
                            "result": "",
                            "seconds": 0.0,
                            "detail": "",
                        }
                        for g in guests
                    ],
                )
        return self.job(job_id)

    def claim_steps(self, job_id: int, host: str) -> list[str]:
        pending = and_(
            job_steps.c.job_id == job_id,
            job_steps.c.host == host,
            job_steps.c.state == "pending",
        )
        free = select(job_steps.c.guest).where(pending).with_for_update(skip_locked=True)
        claim = (
            update(job_steps)
            .where(pending, job_steps.c.guest.in_(free))
            .values(state="claimed")
            .returning(job_steps.c.guest)
        )
        with write_transaction(self.engine, self.url, self._sqlite) as conn:
            return sorted(conn.execute(claim).scalars())

    def pending_jobs(self, host: str) -> list[int]:
        query = (
            select(job_steps.c.job_id)
            .distinct()
            .join(jobs, jobs.c.id == job_steps.c.job_id)
            .where(
                job_steps.c.host == host,
                job_steps.c.state == "pending",
                jobs.c.state == "running",
            )
            .order_by(job_steps.c.job_id)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def update_job(
        self,
        job_id: int,
        results: Sequence[Step],
        *,
        state: JobState = "running",
        detail: str = "",
    ) -> bool:
        rows = [
            {
                "j": job_id,
                "g": r["guest"],
                "result": r["result"],
                "seconds": float(r["seconds"]),
                "detail": r["detail"],
                "state": "claimed" if r["result"] in IN_FLIGHT else "done",
            }
            for r in results
        ]
        with write_transaction(self.engine, self.url, self._sqlite) as conn:
            if rows:  # a step that is done stays as it was
                conn.execute(
                    update(job_steps)
                    .where(
                        job_steps.c.job_id == bindparam("j"),
                        job_steps.c.guest == bindparam("g"),
                        job_steps.c.state != "done",
                    )
                    .values(
                        result=bindparam("result"),
                        seconds=bindparam("seconds"),
                        detail=bindparam("detail"),
                        state=bindparam("state"),
                    ),
                    rows,
                )
            running = and_(jobs.c.id == job_id, jobs.c.state == "running")
            if state == "running":  # progress: only whether the job still runs
                return conn.execute(select(jobs.c.id).where(running)).first() is not None
            ended = update(jobs).where(running)
            done = conn.execute(ended.values(state=state, detail=detail, finished_at=_now()))
        return bool(done.rowcount)

    def job(self, job_id: int) -> Job:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFoundError(f"job {job_id}: no such job")
            steps = _steps(conn, [job_id])
        return _job(row, steps.get(job_id, []))

    def jobs(self, *, limit: int = 50, state: JobState | None = None) -> list[Job]:
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(jobs.c.state == state)
        with self._read() as conn:
            rows = conn.execute(query).all()
            steps = _steps(conn, [row.id for row in rows])
        return [_job(row, steps.get(row.id, [])) for row in rows]


def _steps(conn: Connection, ids: list[int]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    for some in chunks(ids):
        query = select(job_steps).where(job_steps.c.job_id.in_(some))
        for step in conn.execute(query):
            found.setdefault(step.job_id, []).append(step)
    return found


def _job(row: Any, steps: list[Any]) -> Job:
    return Job(
        id=row.id,
        action=row.action,
        request=json.loads(row.request),
        guests=tuple(json.loads(row.guests)),
        state=row.state,
        runner=row.runner,
        host=row.host,
        process=row.process,
        actor=row.actor,
        created_at=row.created_at,
        finished_at=row.finished_at,
        results=tuple(
            Step(
                guest=s.guest,
                host=s.host,
                result=s.result,
                seconds=s.seconds,
                detail=s.detail,
            )
            for s in sorted(steps, key=lambda s: (s.seconds, s.guest))
            if s.result
        ),
        detail=row.detail,
        hosts={s.guest: s.host for s in steps},
        unclaimed=tuple(sorted(s.guest for s in steps if s.state == "pending")),
    )
