"""The store's schema, brought up to date by Alembic's migrations, once, however
many processes open a new store at the same time. A new store (no table at all)
is made at once from the tables of :mod:`virtpolicy.store.schema`, stamped at
their revision: the migrations' result, without loading Alembic and running
every migration (0.4 s of a process's start; a test checks that both make the
same store)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL

from virtpolicy import __version__
from virtpolicy.errors import StoreError
from virtpolicy.store.schema import FIRST_ROWS, SCHEMA_REVISION, metadata
from virtpolicy.store.sqlengine import BUSY_TIMEOUT_MS

log = logging.getLogger(__name__)


def migrate(engine: Engine, url: URL) -> None:
    """Bring the schema up to :data:`SCHEMA_REVISION`, once, however many
    processes start at the same time on a new store (a fleet's first start,
    several CLIs at once): the migration holds a lock (an advisory lock on
    PostgreSQL, the write lock on SQLite) and looks again under it."""
    with engine.connect() as conn:
        current = _schema_revision(conn)
        if current == SCHEMA_REVISION or _fits(conn, current, url):
            return
    with engine.connect() as plain, _patient(plain, url):
        sqlite = url.get_backend_name() == "sqlite"
        conn = plain.execution_options(virtpolicy_write=True) if sqlite else plain
        with conn.begin():
            if url.get_backend_name() == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            current = _schema_revision(conn)
            if current == SCHEMA_REVISION:
                return  # another process migrated while this one waited
            if _fits(conn, current, url):
                return
            if current is None and not inspect(conn).get_table_names():
                log.info("store %s: new, schema %s", url, SCHEMA_REVISION)
                _create(conn)
                return
            log.info("store %s: upgrading schema %s -> %s", url, current, SCHEMA_REVISION)
            _upgrade(conn, current, url)


def _upgrade(conn: Connection, current: str | None, url: URL) -> None:
    """Alembic's migrations from ``current`` on, in the transaction of ``conn``."""
    # Alembic is imported only when a migration is due: it costs start-up time.
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415
    from alembic.util.exc import CommandError  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", "virtpolicy.store:migrations")
    config.attributes["connection"] = conn
    try:
        command.upgrade(config, SCHEMA_REVISION)
    except CommandError as exc:
        raise StoreError(
            f"{url}: schema revision {current!r} is unknown to this virtpolicy "
            f"(it knows up to {SCHEMA_REVISION}); is the store from a newer version?"
        ) from exc


#: Alembic's own table, as Alembic makes it: the revision a store is at.
_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _create(conn: Connection) -> None:
    """A new store's tables and first rows, stamped at :data:`SCHEMA_REVISION`,
    in the transaction of ``conn``."""
    metadata.create_all(conn)
    for name, rows in FIRST_ROWS.items():
        conn.execute(insert(metadata.tables[name]), rows)
    _VERSION.create(conn)
    conn.execute(insert(_VERSION), [{"version_num": SCHEMA_REVISION}])


#: The advisory lock key the schema's migration holds on PostgreSQL ("vpol").
_MIGRATION_LOCK = 0x76706F6C
#: How long a process waits on SQLite for another's migration: a migration
#: loads its scripts under the lock, which takes seconds on a loaded host.
_MIGRATION_WAIT_MS = 60_000


@contextmanager
def _patient(conn: Connection, url: URL) -> Iterator[None]:
    """On SQLite, ``conn`` waits for the write lock as long as a migration may
    hold it (not the few seconds a write waits), then as before."""
    if url.get_backend_name() != "sqlite":
        yield
        return
    driver = conn.connection.driver_connection  # outside any transaction
    assert driver is not None
    driver.execute(f"PRAGMA busy_timeout={_MIGRATION_WAIT_MS}")
    try:
        yield
    finally:
        driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _fits(conn: Connection, current: str | None, url: URL) -> bool:
    """Whether ``current`` is a newer schema that this virtpolicy may use as it is
    (its migrations only added to it, see migration 0007); StoreError naming the
    release to install when it is newer and may not be used."""
    if current is None or not _number(current) or int(current) <= int(SCHEMA_REVISION):
        return False
    found = None
    if inspect(conn).has_table("schema_compat"):
        found = conn.execute(
            text("SELECT readers_from, needs_version FROM schema_compat WHERE id = 1")
        ).first()
    if found is None:
        return False  # says nothing of older readers: refused below, as unknown
    readers_from, needs = str(found[0]), str(found[1])
    if _number(readers_from) and int(readers_from) <= int(SCHEMA_REVISION):
        log.warning(
            "store %s: schema %s is newer than this virtpolicy's (%s) and still fits it:"
            " upgrade this host when you can",
            url, current, SCHEMA_REVISION,
        )  # fmt: skip
        return True
    raise StoreError(
        f"{url}: the store's schema ({current}) needs virtpolicy {needs} or newer;"
        f" this is {__version__} (schema {SCHEMA_REVISION}): install virtpolicy {needs}"
    )


def _number(revision: str) -> bool:
    return revision.isascii() and revision.isdigit() and len(revision) <= 9


def _schema_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)


def schema_state(engine: Engine, url: URL) -> tuple[bool, str]:
    """The store's schema against this code's, for ``virtpolicy doctor``: whether
    all is well, and one line. Reads only: nothing is migrated."""
    with engine.connect() as conn:
        current = _schema_revision(conn)
        if current == SCHEMA_REVISION:
            return True, f"schema {current}, the one this virtpolicy expects"
        if current is None:
            return True, "no schema yet: the daemon makes it when it first starts"
        try:
            newer = _fits(conn, current, url)
        except StoreError as exc:
            return False, str(exc)
    if newer:
        return False, (
            f"schema {current} is newer than this virtpolicy's ({SCHEMA_REVISION}) and still"
            " fits it: install the newer virtpolicy on this host"
        )
    if _number(current) and int(current) < int(SCHEMA_REVISION):
        return True, f"schema {current}: the daemon brings it to {SCHEMA_REVISION} when it starts"
    return False, f"schema revision {current!r} is unknown to this virtpolicy"
