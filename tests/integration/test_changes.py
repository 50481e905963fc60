"""Writes through engine.changes against a real SQLite file and a real PostgreSQL,
from several writers at once."""

from __future__ import annotations

import threading

import pytest

from virtpolicy.engine import changes
from virtpolicy.errors import ConflictError
from virtpolicy.store import SqlStore

pytestmark = pytest.mark.integration

WRITERS = 8
ROUNDS = 15


def race(stores: list[SqlStore], guest: str) -> tuple[list[int], list[int]]:
    """Every store's writer sets its own label on ``guest`` at the same moment;
    (acknowledged, refused with ConflictError)."""
    barrier = threading.Barrier(len(stores))
    acknowledged: list[int] = []
    conflicts: list[int] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            changes.set_policy(stores[i], guest, {"labels": {f"w{i}": "1"}}, actor=f"w{i}")
        except ConflictError:
            conflicts.append(i)
        else:
            acknowledged.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acknowledged, conflicts


def test_concurrent_first_writes_lose_nothing(any_db: str) -> None:
    """Writers creating the same guest at once: every acknowledged write is in the result
    (the losers get ConflictError), because "no policy yet" is guarded as revision 0."""
    db = any_db
    SqlStore(db).close()
    stores = [SqlStore(db) for _ in range(WRITERS)]
    try:
        for round_ in range(ROUNDS):
            guest = f"g{round_}"
            acknowledged, conflicts = race(stores, guest)
            final = stores[0].get(guest)
            assert len(acknowledged) + len(conflicts) == WRITERS
            assert {f"w{i}" for i in acknowledged} <= set(final.policy.labels), round_
            assert final.revision == len(acknowledged)
    finally:
        for s in stores:
            s.close()


def test_write_after_delete_is_guarded_by_the_delete_revision(any_db: str) -> None:
    """A guest whose policy was deleted is at the delete's revision, not 0."""
    store = SqlStore(any_db)
    try:
        changes.set_policy(store, "web", {"cpu": {"weight": 200}}, actor="a")
        changes.delete_policy(store, "web", actor="a")
        assert store.head("web") == (2, None)
        assert store.head("never") == (0, None)
        out = changes.set_policy(store, "web", {"cpu": {"weight": 300}}, actor="a")
        assert (out.action, out.revision) == ("create", 3)
    finally:
        store.close()
