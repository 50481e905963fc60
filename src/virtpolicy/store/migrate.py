"""The store's schema, brought up to date by Alembic's migrations, once, however
many processes open a new store at the same time."""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, func, inspect, select, text
from sqlalchemy.engine import URL

from virtpolicy.errors import StoreError
from virtpolicy.store.schema import SCHEMA_REVISION

log = logging.getLogger(__name__)


def migrate(engine: Engine, url: URL) -> None:
    """Bring the schema up to :data:`SCHEMA_REVISION`, once, however many
    processes start at the same time on a new store (a fleet's first start,
    several CLIs at once): the migration holds a lock (an advisory lock on
    PostgreSQL, the write lock on SQLite) and looks again under it."""
    with engine.connect() as conn:
        if _schema_revision(conn) == SCHEMA_REVISION:
            return
    # Alembic is imported only when a migration is due: it costs start-up time.
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415
    from alembic.util.exc import CommandError  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", "virtpolicy.store:migrations")
    with engine.connect() as plain:
        sqlite = url.get_backend_name() == "sqlite"
        conn = plain.execution_options(virtpolicy_write=True) if sqlite else plain
        with conn.begin():
            if url.get_backend_name() == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            current = _schema_revision(conn)
            if current == SCHEMA_REVISION:
                return  # another process migrated while this one waited
            log.info("store %s: upgrading schema %s -> %s", url, current, SCHEMA_REVISION)
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, SCHEMA_REVISION)
            except CommandError as exc:
                raise StoreError(
                    f"{url}: schema revision {current!r} is unknown to this virtpolicy "
                    f"(it knows up to {SCHEMA_REVISION}); is the store from a newer version?"
                ) from exc


#: The advisory lock key the schema's migration holds on PostgreSQL ("vpol").
_MIGRATION_LOCK = 0x76706F6C


def _schema_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)
