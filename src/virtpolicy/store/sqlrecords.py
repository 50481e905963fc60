"""API tokens in the store's database: the records beside the policies."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.engine import URL

from virtpolicy.clock import now as _now
from virtpolicy.errors import NotFoundError, TokenExistsError
from virtpolicy.store.base import Role, Token
from virtpolicy.store.schema import tokens
from virtpolicy.store.sqlengine import db_errors as _db_errors
from virtpolicy.store.sqlengine import write_transaction


class Tokens:
    """Token records of a :class:`~virtpolicy.store.sql.SqlStore`."""

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
