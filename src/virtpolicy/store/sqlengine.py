"""Connecting to the store's database: URLs, SQLite's settings, and errors.

Shared by the parts of :class:`~virtpolicy.store.sql.SqlStore`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from virtpolicy.errors import StoreBusyError, StoreError, StoreUnavailableError

#: Rows per ``IN (...)`` list, well under every backend's parameter limit.
T = TypeVar("T")
_CHUNK = 500
#: How long a write waits for another writer; well under the hook's patience
#: (20 s), though admission never waits for the store at all.
BUSY_TIMEOUT_MS = 5_000


def to_url(db: str) -> URL:
    """A database URL from ``db``: a SQLAlchemy URL, or a path to a SQLite file."""
    try:
        if "://" in db:
            return make_url(db)
        return make_url("sqlite:///" + str(Path(db).expanduser().absolute()))
    except ArgumentError as exc:
        raise StoreError(f"db: {db!r} is not a database URL or path: {exc}") from None


def prepare_sqlite_file(path: Path) -> None:
    # Policies are the host's configuration: only the owner reads them.
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise StoreError(f"db: cannot create {path}: {exc.strerror}") from None


def tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("virtpolicy_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _wal(cursor: Any) -> None:
    """WAL mode, asked again while SQLite answers "locked" at once: several
    processes opening a new store together may be told so without SQLite's own
    wait (seen 1 in 18 with six at once; none in 36 asking again), for as long
    as a write would wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def db_errors(url: URL) -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        cause = getattr(exc, "orig", None) or exc
        if "locked" in str(cause) or "busy" in str(cause):
            raise StoreBusyError(
                f"store busy: another process has held {masked(url)} for writing "
                f"over {BUSY_TIMEOUT_MS // 1000} s; try again"
            ) from exc
        # The server is down, restarting or unreachable: try again later.
        raise StoreUnavailableError(f"store {masked(url)}: {first_line(cause)}") from exc
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise StoreError(f"store {masked(url)}: {first_line(cause)}") from exc


def first_line(error: BaseException) -> str:
    """The first line of a driver's message (psycopg's run to several: the
    server's text, then hints and the statement)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextmanager
def write_transaction(engine: Engine, url: URL, sqlite: bool) -> Iterator[Connection]:
    """A transaction that writes: ``BEGIN IMMEDIATE`` on SQLite (writers queue for
    the lock rather than fail half-way), committed at the end, errors translated."""
    with db_errors(url), engine.connect() as plain:
        conn = plain.execution_options(virtpolicy_write=True) if sqlite else plain
        with conn.begin():
            yield conn


def masked(url: URL) -> str:
    """The URL as shown to people: any password hidden."""
    return url.render_as_string(hide_password=True)


def chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
