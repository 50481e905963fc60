"""The policy store on SQL: SQLite by default, any SQLAlchemy URL otherwise.

SQLite runs in WAL mode with a busy timeout, so readers never wait for a
writer and writers queue instead of failing. Write transactions start with
``BEGIN IMMEDIATE`` on SQLite and, on every backend, begin by updating the
single ``store_state`` row, which serializes writers: what a write reads to
check revisions and the graph cannot change under it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)

from virtpolicy.clock import now as _now
from virtpolicy.errors import (
    BrokenPolicyError,
    ConflictError,
    NotFoundError,
    PolicyError,
    StoreError,
)
from virtpolicy.policy.graph import check_acyclic
from virtpolicy.policy.model import GuestPolicy, describe_validation_error
from virtpolicy.store.base import (
    Action,
    BrokenPolicy,
    Change,
    ChangeFeed,
    Delete,
    Outcome,
    Revision,
    StoredPolicy,
    Vet,
)
from virtpolicy.store.feed import CHANNEL, DirectoryFeed, PollFeed, PostgresFeed, payload
from virtpolicy.store.schema import (
    SCHEMA_REVISION,
    dependencies,
    labels,
    policies,
    revisions,
    store_state,
)
from virtpolicy.store.sqlengine import (
    chunks,
    db_errors,
    prepare_sqlite_file,
    to_url,
    tune_sqlite,
)
from virtpolicy.store.sqlfleet import Fleet
from virtpolicy.store.sqljobs import Jobs
from virtpolicy.store.sqlrecords import Tokens

log = logging.getLogger(__name__)


class SqlStore(Fleet, Jobs, Tokens):
    """A :class:`~virtpolicy.store.base.PolicyStore` on a SQL database."""

    def __init__(self, db: str, *, migrate: bool = True) -> None:
        self.url = to_url(db)
        self._sqlite = self.url.get_backend_name() == "sqlite"
        self._postgres = self.url.get_backend_name() == "postgresql"
        self._marker: sqlite3.Connection | None = None
        self._marker_lock = threading.Lock()
        if self._sqlite and self.url.database not in (None, "", ":memory:"):
            prepare_sqlite_file(Path(self.url.database))
        with db_errors(self.url):
            # PostgreSQL, shared by a fleet: one connection kept per process (and
            # the change feed's own), a few more only while writes overlap, each
            # checked before use so that a restarted server is noticed at once.
            pool = {"pool_size": 1, "max_overflow": 3, "pool_pre_ping": True}
            self.engine: Engine = create_engine(self.url, **(pool if self._postgres else {}))
            if self._sqlite:
                tune_sqlite(self.engine)
            if migrate:
                self._migrate()

    def close(self) -> None:
        self.engine.dispose()
        if self._marker is not None:
            self._marker.close()

    def change_marker(self) -> int:
        """SQLite: ``PRAGMA data_version`` on a connection of its own (a few
        microseconds; it moves when another connection commits, and every write
        here goes through another). Other databases: the global revision."""
        if not self._sqlite or self.url.database in (None, "", ":memory:"):
            return self.global_revision()
        with self._marker_lock:
            if self._marker is None:
                self._marker = sqlite3.connect(
                    f"file:{self.url.database}?mode=ro", uri=True, check_same_thread=False
                )
            try:
                return int(self._marker.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.url}: {exc}") from exc

    def change_feed(self) -> ChangeFeed:
        """How a daemon hears of writes: LISTEN/NOTIFY on PostgreSQL; on SQLite the
        change marker, looked at when the database's directory is written and every
        so often (see :mod:`virtpolicy.store.feed`)."""
        if self._postgres:
            return PostgresFeed(self.engine, self.url, _carried)
        poll = PollFeed(self.change_marker, self.global_revision)
        if self._sqlite and self.url.database not in (None, "", ":memory:"):
            return DirectoryFeed(os.path.dirname(os.path.abspath(self.url.database)), poll)
        return poll

    # -- reading ---------------------------------------------------------

    def global_revision(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(store_state.c.revision)).scalar_one())

    def get(self, guest: str) -> StoredPolicy:
        with self._read() as conn:
            row = conn.execute(
                select(policies).where(policies.c.guest == guest, policies.c.doc.is_not(None))
            ).first()
        if row is None:
            raise NotFoundError(f"{guest}: no policy")
        return _stored(row)

    def head(self, guest: str) -> tuple[int, GuestPolicy | None]:
        with self._read() as conn:
            row = conn.execute(
                select(policies.c.revision, policies.c.doc).where(policies.c.guest == guest)
            ).first()
        if row is None:
            return 0, None
        if row.doc is None:
            return int(row.revision), None
        return int(row.revision), _decode(guest, row.revision, row.doc)

    def list_policies(self, labels: Mapping[str, str] | None = None) -> list[StoredPolicy]:
        return self.policies_and_broken(labels)[0]

    def policies_and_broken(
        self, labels: Mapping[str, str] | None = None
    ) -> tuple[list[StoredPolicy], list[BrokenPolicy]]:
        query = select(policies).where(policies.c.doc.is_not(None))
        for key, value in (labels or {}).items():
            query = query.where(policies.c.guest.in_(_with_label(key, value)))
        with self._read() as conn:
            rows = conn.execute(query.order_by(policies.c.guest)).all()
        found, broken = [], []
        for row in rows:
            try:
                found.append(_stored(row))
            except BrokenPolicyError as exc:
                broken.append(
                    BrokenPolicy(
                        row.guest, row.revision, row.updated_at, row.updated_by, exc.reason
                    )
                )
        return found, broken

    def guests(self) -> list[str]:
        with self._read() as conn:
            return list(
                conn.execute(
                    select(policies.c.guest)
                    .where(policies.c.doc.is_not(None))
                    .order_by(policies.c.guest)
                ).scalars()
            )

    def edges(self) -> dict[str, list[tuple[str, str]]]:
        with self._read() as conn:
            return _edges(conn)

    def history(self, guest: str) -> list[Revision]:
        with self._read() as conn:
            rows = conn.execute(
                select(revisions).where(revisions.c.guest == guest).order_by(revisions.c.revision)
            ).all()
        if not rows:
            raise NotFoundError(f"{guest}: no policy history")
        return [_revision(row) for row in rows]

    def revisions_since(self, seq: int, limit: int) -> list[Revision]:
        with self._read() as conn:
            rows = conn.execute(
                select(revisions)
                .where(revisions.c.seq > seq)
                .order_by(revisions.c.seq)
                .limit(limit)
            ).all()
        return [_revision(row) for row in rows]

    def revision(self, guest: str, number: int) -> Revision:
        with self._read() as conn:
            row = conn.execute(
                select(revisions).where(revisions.c.guest == guest, revisions.c.revision == number)
            ).first()
        if row is None:
            raise NotFoundError(f"{guest}: no revision {number}")
        return _revision(row)

    # -- writing ---------------------------------------------------------

    def write(
        self,
        changes: Sequence[Change],
        actor: str,
        *,
        dry_run: bool = False,
        vet: Vet | None = None,
    ) -> list[Outcome]:
        guests = [change.guest for change in changes]
        if len(set(guests)) != len(guests):
            dup = next(g for g in guests if guests.count(g) > 1)
            raise PolicyError(f'guest "{dup}" appears twice in one write', field="guest")
        with db_errors(self.url), self.engine.connect() as plain:
            # A dry run only reads: it takes no write lock and waits for no writer.
            writes = self._sqlite and not dry_run
            conn = plain.execution_options(virtpolicy_write=True) if writes else plain
            with conn.begin() as tx:
                base = 0
                if not dry_run:  # take the writers' lock before reading anything
                    base = conn.execute(
                        update(store_state)
                        .values(revision=store_state.c.revision)
                        .returning(store_state.c.revision)
                    ).scalar_one()
                outcomes = self._plan(conn, changes)
                if vet is not None:
                    vet(outcomes)
                written = [o for o in outcomes if o.action != "unchanged"]
                if dry_run or not written:
                    tx.rollback()
                    return outcomes
                stored = self._record(conn, written, int(base), actor)
        outcomes = [dataclasses.replace(o, written=stored.get(o.guest)) for o in outcomes]
        for o in written:
            log.info("policy %s: %s revision %d by %s", o.guest, o.action, o.revision, actor)
        return outcomes

    def _plan(self, conn: Connection, changes: Sequence[Change]) -> list[Outcome]:
        current = _current(conn, [c.guest for c in changes])
        outcomes: list[Outcome] = []
        graph_changed = False
        for change in changes:
            revision, doc = current.get(change.guest, (0, None))
            if change.expect is not None and change.expect != revision:
                raise ConflictError(change.guest, change.expect, revision)
            # A stored policy that no longer loads has no "before": it can be
            # deleted or replaced whole, and what it was shows in its history.
            before = _loaded(change.guest, revision, doc)
            if isinstance(change, Delete):
                if doc is None:
                    raise NotFoundError(f"{change.guest}: no policy")
                outcomes.append(Outcome(change.guest, "delete", revision + 1, before, None))
                continue
            # Canonical JSON: equal text is an equal policy, no decoding needed.
            if doc == change.policy.canonical_json():
                outcomes.append(
                    Outcome(change.guest, "unchanged", revision, change.policy, change.policy)
                )
                continue
            action: Action = "create" if doc is None else "update"
            outcomes.append(Outcome(change.guest, action, revision + 1, before, change.policy))
            old_deps = before.dependencies() if before else []
            graph_changed |= change.policy.dependencies() != old_deps
        if graph_changed:
            graph = _edges(conn)
            for o in outcomes:
                if o.after is None:
                    graph.pop(o.guest, None)
                else:
                    graph[o.guest] = o.after.dependencies()
            check_acyclic(graph, first=[o.guest for o in outcomes if o.action != "unchanged"])
        return outcomes

    def _record(
        self, conn: Connection, written: Sequence[Outcome], base: int, actor: str
    ) -> dict[str, Revision]:
        """Write the revisions (and tell the listeners); each guest's as written."""
        for o in written:
            if o.after is not None:
                _check_reads_back(o.after)
        now = _now()
        rows: list[dict[str, Any]] = [
            {
                "seq": base + i,
                "guest": o.guest,
                "revision": o.revision,
                "action": o.action,
                "actor": actor,
                "created_at": now,
                "doc": o.after.canonical_json() if o.after else None,
            }
            for i, o in enumerate(written, start=1)
        ]
        conn.execute(update(store_state).values(revision=base + len(written)))
        if self._postgres:  # delivered to every listener when this commits
            told = payload(
                base + 1,
                base + len(written),
                [o.guest for o in written],
                [[r[k] for k in _ROW] for r in rows],
            )
            conn.execute(select(func.pg_notify(CHANNEL, told)))
        conn.execute(insert(revisions), rows)
        # Revision 1 is a guest's first row; later ones (after a delete too) update it.
        fresh = [r for r in rows if r["revision"] == 1]
        known = [r for r in rows if r["revision"] > 1]
        if fresh:
            conn.execute(
                insert(policies),
                [
                    {
                        "guest": r["guest"],
                        "revision": 1,
                        "doc": r["doc"],
                        "updated_at": now,
                        "updated_by": actor,
                    }
                    for r in fresh
                ],
            )
        if known:
            conn.execute(
                update(policies)
                .where(policies.c.guest == bindparam("g"))
                .values(
                    revision=bindparam("r"), doc=bindparam("d"), updated_at=now, updated_by=actor
                ),
                [{"g": r["guest"], "r": r["revision"], "d": r["doc"]} for r in known],
            )
        touched = [o.guest for o in written]
        for chunk in chunks(touched):
            conn.execute(delete(dependencies).where(dependencies.c.guest.in_(chunk)))
            conn.execute(delete(labels).where(labels.c.guest.in_(chunk)))
        deps = [
            {"guest": o.guest, "target": target, "kind": kind}
            for o in written
            if o.after
            for target, kind in o.after.dependencies()
        ]
        tags = [
            {"guest": o.guest, "key": k, "value": v}
            for o in written
            if o.after
            for k, v in o.after.labels.items()
        ]
        if deps:
            conn.execute(insert(dependencies), deps)
        if tags:
            conn.execute(insert(labels), tags)
        return {
            o.guest: Revision(
                r["seq"], o.guest, o.revision, cast(Action, o.action), actor, now, o.after
            )
            for o, r in zip(written, rows, strict=True)
        }

    # -- plumbing ----------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with db_errors(self.url), self.engine.connect() as conn:
            yield conn

    def _migrate(self) -> None:
        """Bring the schema up to :data:`SCHEMA_REVISION`, once, however many
        processes start at the same time on a new store (a fleet's first start,
        several CLIs at once): the migration holds a lock (an advisory lock on
        PostgreSQL, the write lock on SQLite) and looks again under it."""
        with self.engine.connect() as conn:
            if _schema_revision(conn) == SCHEMA_REVISION:
                return
        # Alembic is imported only when a migration is due: it costs start-up time.
        from alembic import command  # noqa: PLC0415
        from alembic.config import Config  # noqa: PLC0415
        from alembic.util.exc import CommandError  # noqa: PLC0415

        config = Config()
        config.set_main_option("script_location", "virtpolicy.store:migrations")
        with self.engine.connect() as plain:
            conn = plain.execution_options(virtpolicy_write=True) if self._sqlite else plain
            with conn.begin():
                if self._postgres:
                    conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                current = _schema_revision(conn)
                if current == SCHEMA_REVISION:
                    return  # another process migrated while this one waited
                log.info("store %s: upgrading schema %s -> %s", self.url, current, SCHEMA_REVISION)
                config.attributes["connection"] = conn
                try:
                    command.upgrade(config, SCHEMA_REVISION)
                except CommandError as exc:
                    raise StoreError(
                        f"{self.url}: schema revision {current!r} is unknown to this virtpolicy "
                        f"(it knows up to {SCHEMA_REVISION}); is the store from a newer version?"
                    ) from exc


#: The advisory lock key the schema's migration holds on PostgreSQL ("vpol").
_MIGRATION_LOCK = 0x76706F6C


def _schema_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)


def _with_label(key: str, value: str) -> Any:
    return select(labels.c.guest).where(and_(labels.c.key == key, labels.c.value == value))


def _current(conn: Connection, guests: Sequence[str]) -> dict[str, tuple[int, str | None]]:
    found: dict[str, tuple[int, str | None]] = {}
    for chunk in chunks(guests):
        query = select(policies.c.guest, policies.c.revision, policies.c.doc).where(
            policies.c.guest.in_(chunk)
        )
        for guest, revision, doc in conn.execute(query):
            found[guest] = (revision, doc)
    return found


def _edges(conn: Connection) -> dict[str, list[tuple[str, str]]]:
    graph: dict[str, list[tuple[str, str]]] = {
        guest: []
        for guest in conn.execute(
            select(policies.c.guest).where(policies.c.doc.is_not(None))
        ).scalars()
    }
    for guest, target, kind in conn.execute(
        select(dependencies.c.guest, dependencies.c.target, dependencies.c.kind)
    ):
        graph.setdefault(guest, []).append((target, kind))
    return graph


def _fault(doc: str) -> str | None:
    """Why a stored document does not validate, in one line; None if it does."""
    try:
        GuestPolicy.model_validate_json(doc)
    except ValidationError as exc:
        return str(describe_validation_error(exc))
    except ValueError as exc:  # PolicyError raised outside pydantic's wrapping
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _decode(guest: str, revision: int, doc: str) -> GuestPolicy:
    try:
        return GuestPolicy.model_validate_json(doc)
    except ValueError:
        raise BrokenPolicyError(guest, revision, _fault(doc) or "it does not validate") from None


def _loaded(guest: str, revision: int, doc: str | None) -> GuestPolicy | None:
    """The stored policy, or None when there is none or it no longer loads."""
    if doc is None:
        return None
    try:
        return _decode(guest, revision, doc)
    except BrokenPolicyError:
        return None


def _check_reads_back(policy: GuestPolicy) -> None:
    """What is stored must read back as exactly what was accepted: a policy whose
    text validates as something else (or not at all) is refused, not written."""
    text = policy.canonical_json()
    try:
        again = GuestPolicy.model_validate_json(text)
    except ValueError:
        again = None
    if again != policy:
        raise PolicyError(
            f"{policy.guest}: the policy would not read back as written "
            f"({_fault(text) or 'it reads back as another policy'}); nothing was written",
            field="guest",
        )


def _stored(row: Any) -> StoredPolicy:
    return StoredPolicy(
        _decode(row.guest, row.revision, row.doc), row.revision, row.updated_at, row.updated_by
    )


#: A revision's fields as a notification carries them (see store.feed.payload).
_ROW = ("seq", "guest", "revision", "action", "actor", "created_at", "doc")


def _carried(row: Sequence[Any]) -> Revision:
    """A revision from a notification's row; StoreError if it is not one."""
    if len(row) != len(_ROW):
        raise StoreError(f"a notification's revision has {len(row)} fields, not {len(_ROW)}")
    return _revision(SimpleNamespace(**dict(zip(_ROW, row, strict=True))))


def _revision(row: Any) -> Revision:
    policy = _loaded(row.guest, row.revision, row.doc)
    broken = (_fault(row.doc) or "") if policy is None and row.doc is not None else ""
    return Revision(
        row.seq, row.guest, row.revision, row.action, row.actor, row.created_at, policy, broken
    )
