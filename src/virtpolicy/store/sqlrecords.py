"""API tokens and jobs in the store's database: the records beside the policies."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.engine import URL

from virtpolicy.clock import now as _now
from virtpolicy.errors import NotFoundError, TokenExistsError
from virtpolicy.store.base import Job, JobState, Role, Token
from virtpolicy.store.schema import jobs, tokens
from virtpolicy.store.sqlengine import db_errors as _db_errors
from virtpolicy.store.sqlengine import write_transaction


class TokensAndJobs:
    """Token and job records of a :class:`~virtpolicy.store.sql.SqlStore`."""

    url: URL
    engine: Engine
    _sqlite: bool

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    # -- API tokens ----------------------------------------------------------

    def add_token(self, name: str, role: Role, digest: str, actor: str) -> Token:
        token = Token(name, role, _now(), actor)
        with write_transaction(self.engine, self.url, self._sqlite) as conn:
            taken = conn.execute(select(tokens.c.name).where(tokens.c.name == name)).first()
            if taken:
                raise TokenExistsError(f'token "{name}" exists already; delete it first')
            conn.execute(
                insert(tokens).values(
                    name=name,
                    role=role,
                    hash=digest,
                    created_at=token.created_at,
                    created_by=actor,
                )
            )
        return token

    def token_by_digest(self, digest: str) -> Token | None:
        with self._read() as conn:
            row = conn.execute(select(tokens).where(tokens.c.hash == digest)).first()
        return Token(row.name, row.role, row.created_at, row.created_by) if row else None

    def tokens(self) -> list[Token]:
        with self._read() as conn:
            rows = conn.execute(select(tokens).order_by(tokens.c.name)).all()
        return [Token(r.name, r.role, r.created_at, r.created_by) for r in rows]

    def delete_token(self, name: str) -> None:
        with _db_errors(self.url), self.engine.begin() as conn:
            if conn.execute(delete(tokens).where(tokens.c.name == name)).rowcount == 0:
                raise NotFoundError(f'no token "{name}"')

    # -- jobs ----------------------------------------------------------------

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
    ) -> Job:
        with _db_errors(self.url), self.engine.begin() as conn:
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
        return self.job(int(key[0]))

    def update_job(
        self,
        job_id: int,
        results: Sequence[Mapping[str, Any]],
        *,
        state: JobState = "running",
        detail: str = "",
    ) -> bool:
        values: dict[str, Any] = {"results": json.dumps([dict(r) for r in results])}
        if state != "running":
            values.update(state=state, detail=detail, finished_at=_now())
        with _db_errors(self.url), self.engine.begin() as conn:
            done = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.state == "running").values(**values)
            )
        return bool(done.rowcount)

    def job(self, job_id: int) -> Job:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"job {job_id}: no such job")
        return _job(row)

    def jobs(self, *, limit: int = 50, state: JobState | None = None) -> list[Job]:
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(jobs.c.state == state)
        with self._read() as conn:
            return [_job(row) for row in conn.execute(query)]


def _job(row: Any) -> Job:
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
        results=tuple(json.loads(row.results)),
        detail=row.detail,
    )
