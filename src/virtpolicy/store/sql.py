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
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)

from virtpolicy.clock import now as _now
from virtpolicy.errors import (
    ConflictError,
    NotFoundError,
    PolicyError,
    StoreError,
)
from virtpolicy.policy.graph import check_acyclic
from virtpolicy.policy.model import GuestPolicy
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
    Wanted,
)
from virtpolicy.store.decoding import (
    ROW,
    carried,
    check_reads_back,
    current_rows,
    decode,
    loaded,
    revision_of,
    stored,
)
from virtpolicy.store.feed import DirectoryFeed, PollFeed, PostgresFeed, channel, payload
from virtpolicy.store.migrate import migrate as upgrade_schema
from virtpolicy.store.schema import (
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
        #: The NOTIFY channel of this store's schema, learnt at its first write.
        self._channel: str | None = None
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
                upgrade_schema(self.engine, self.url)

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
            return PostgresFeed(self.engine, self.url, carried)
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
        return stored(row)

    def head(self, guest: str) -> tuple[int, GuestPolicy | None]:
        with self._read() as conn:
            row = conn.execute(
                select(policies.c.revision, policies.c.doc).where(policies.c.guest == guest)
            ).first()
        if row is None:
            return 0, None
        if row.doc is None:
            return int(row.revision), None
        return int(row.revision), decode(guest, row.revision, row.doc)

    def list_policies(self, labels: Mapping[str, str] | None = None) -> list[StoredPolicy]:
        return self.policies_and_broken(labels)[0]

    def policies_and_broken(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        wanted: Wanted | None = None,
        guests: Collection[str] | None = None,
        known: Mapping[str, StoredPolicy] | None = None,
    ) -> tuple[list[StoredPolicy], list[BrokenPolicy]]:
        query = select(policies).where(policies.c.doc.is_not(None))
        for key, value in (labels or {}).items():
            query = query.where(policies.c.guest.in_(_with_label(key, value)))
        found: list[StoredPolicy] = []
        if wanted is not None and guests is None:
            # Names and revisions first: the documents of the guests not wanted, or
            # known at that revision already, are not even fetched.
            heads = query.with_only_columns(policies.c.guest, policies.c.revision)
            with self._read() as conn:
                named = [(g, r) for g, r in conn.execute(heads).all() if wanted(g)]
            held = known or {}
            found = [held[g] for g, r in named if g in held and held[g].revision == r]
            guests = [g for g, r in named if g not in held or held[g].revision != r]
        queries = [query.order_by(policies.c.guest)]
        if guests is not None:
            queries = [
                query.where(policies.c.guest.in_(chunk)).order_by(policies.c.guest)
                for chunk in chunks(sorted(guests))
            ]
        with self._read() as conn:
            rows = [row for q in queries for row in conn.execute(q).all()]
        more, broken = current_rows(rows, wanted, known)
        return sorted([*found, *more], key=lambda s: s.policy.guest), broken

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
        return [revision_of(row) for row in rows]

    def revisions_since(
        self, seq: int, limit: int, *, wanted: Wanted | None = None
    ) -> list[Revision]:
        with self._read() as conn:
            rows = conn.execute(
                select(revisions)
                .where(revisions.c.seq > seq)
                .order_by(revisions.c.seq)
                .limit(limit)
            ).all()
        return [revision_of(row, wanted) for row in rows]

    def revision(self, guest: str, number: int) -> Revision:
        with self._read() as conn:
            row = conn.execute(
                select(revisions).where(revisions.c.guest == guest, revisions.c.revision == number)
            ).first()
        if row is None:
            raise NotFoundError(f"{guest}: no revision {number}")
        return revision_of(row)

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
            before = loaded(change.guest, revision, doc)
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
                check_reads_back(o.after)
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
                [[r[k] for k in ROW] for r in rows],
            )
            if self._channel is None:  # the schema is the URL's: it never changes
                self._channel = channel(conn.execute(select(func.current_schema())).scalar_one())
            conn.execute(select(func.pg_notify(self._channel, told)))
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
