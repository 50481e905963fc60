"""Reconcile passes on an in-memory host: one guest's failure stays its own, and a
status is published whole."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtpolicy.engine import changes
from virtpolicy.engine.tuning.reconcile import Reconciler
from virtpolicy.errors import GuestNotFoundError, HypervisorError
from virtpolicy.store import SqlStore
from virtpolicy.testing import MemoryGuest, MemoryHypervisor


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(str(tmp_path / "p.db"))
    for guest, cpu in (("a", "1"), ("b", "2"), ("c", "3")):
        changes.set_policy(s, guest, {"cpu": {"vcpupin": {0: cpu}}}, actor="t")
    yield s
    s.close()


def guests() -> list[MemoryGuest]:
    return [MemoryGuest(n, running=True) for n in ("a", "b", "c")]


@pytest.mark.parametrize(
    "error",
    [
        HypervisorError("b: read tuning: internal error"),
        ValueError("an empty set of CPUs has no cpuset spelling"),
        GuestNotFoundError("b: no such guest"),
    ],
)
def test_one_guest_failing_does_not_end_the_pass(store: SqlStore, error: Exception) -> None:
    """b fails (a libvirt error, a bug, or undefined since the listing): a and c are
    still enforced, and b's status carries what happened."""
    host = MemoryHypervisor(guests())
    host.open()
    host.fail["b"] = error
    statuses = {s.guest: s for s in Reconciler(store, host).reconcile()}
    assert host.guests_by_name["a"].vcpupin == {0: frozenset({1})}
    assert host.guests_by_name["c"].vcpupin == {0: frozenset({3})}
    if isinstance(error, GuestNotFoundError):
        assert statuses["b"].state == "undefined"
    else:
        assert statuses["b"].error is not None
        assert str(error) in statuses["b"].error
    assert statuses["a"].error is None


def test_a_status_is_published_whole(store: SqlStore) -> None:
    """While a pass over b is under way, readers see b's previous status, complete,
    never a fresh one with its state still unknown."""
    host = MemoryHypervisor(guests())
    host.open()
    reconciler = Reconciler(store, host)
    reconciler.reconcile()
    inside, release = threading.Event(), threading.Event()

    def hold(method: str, guest: str | None) -> None:
        if method == "actual" and guest == "b":
            inside.set()
            release.wait(5)

    host.before = hold
    worker = threading.Thread(target=reconciler.reconcile, args=(["b"],))
    worker.start()
    try:
        assert inside.wait(5)
        seen = {s.guest: s for s in reconciler.statuses()}
        assert seen["b"].state == "running"
        assert seen["b"].actual.vcpupin == {0: frozenset({2})}
    finally:
        release.set()
        worker.join()


def test_a_forget_during_a_pass_is_not_overwritten(store: SqlStore) -> None:
    """The loop forgets a's mirror (a was defined anew) while a pass is reading it:
    the pass does not keep what it read or wrote before the forget, so the next
    pass reads the mirror again (it kept the stale one, and never read it)."""
    host = MemoryHypervisor(guests())
    host.open()
    reconciler = Reconciler(store, host)
    reads: list[str] = []

    def before(method: str, guest: str | None) -> None:
        if method == "read_mirror" and guest == "a":
            reads.append(guest)
            if len(reads) == 1:
                reconciler.forget_mirrors("a")  # as the loop would, mid-read

    host.before = before
    reconciler.reconcile(["a"])
    reconciler.reconcile(["a"])
    assert reads == ["a", "a"]
    reconciler.reconcile(["a"])
    assert reads == ["a", "a"]  # known since: read once per forget, not per pass
