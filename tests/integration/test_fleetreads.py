"""FleetReads: the fleet's statuses and hosts, kept for every reader of one API,
read whole once and then only what changed (and which guests are gone)."""

from __future__ import annotations

import time

import pytest

from virtpolicy.engine import fleetview
from virtpolicy.store import SqlStore
from virtpolicy.store.base import GuestState, HostRecord

pytestmark = pytest.mark.integration


def state(guest: str, host: str, running: bool, revision: int) -> GuestState:
    status = {
        "guest": guest,
        "state": "running" if running else "shut off",
        "policy_revision": revision,
    }
    return GuestState(guest, host, "u-" + guest, status["state"], {}, time.time(), status)


def test_changes_and_gone_guests_are_read_after_the_first_read(store: SqlStore) -> None:
    now = time.time()
    for name in ("a", "b"):
        store.register_host(HostRecord(name, "test:///x", 4, {}, "t", "up", 60.0, now, "t"))
    store.publish_guests("a", [state("web", "a", True, 1), state("db", "a", True, 1)], [])
    reads = fleetview.FleetReads(store, ttl=0.0)
    assert reads.statuses_and_guests(None)[0] == fleetview.statuses(store)
    assert [r["guest"] for r in reads.statuses_and_guests("a")[0]] == []
    # A change since: read without a full read.
    store.publish_guests("b", [state("api", "b", False, 2)], [])
    store.publish_guests("a", [state("web", "a", False, 3)], [])
    assert reads.statuses_and_guests(None)[0] == fleetview.statuses(store)

    def without_age(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "heartbeat_age_s"} for r in rows]

    assert without_age(reads.hosts()) == without_age(fleetview.hosts(store))
    assert [(h["name"], h["guests"], h["running"]) for h in reads.hosts()] == [
        ("a", 2, 1),
        ("b", 1, 0),
    ]
    # A guest gone: dropped at the next read.
    store.publish_guests("a", [], ["db"])
    assert reads.statuses_and_guests(None)[0] == fleetview.statuses(store)
    assert "db" not in [r["guest"] for r in reads.statuses_and_guests(None)[0]]


def test_within_ttl_every_reader_gets_the_same_copy(store: SqlStore) -> None:
    store.register_host(HostRecord("a", "test:///x", 4, {}, "t", "up", 60.0, time.time(), "t"))
    reads = fleetview.FleetReads(store, ttl=3600.0)
    assert reads.statuses_and_guests(None)[0] == []
    store.publish_guests("a", [state("web", "a", True, 1)], [])
    assert reads.statuses_and_guests(None)[0] == []  # not read again within the ttl
