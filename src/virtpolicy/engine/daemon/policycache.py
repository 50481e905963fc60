"""The stored policies as the daemon last read them.

Read whole once, then kept current from the revisions written since: a write
costs the daemon the guests it changed, not every stored policy (at 10,000
policies a full read takes some 300 ms). Readers (admission, status, the
sampler, /metrics) get the in-memory mapping and never touch the store.
:meth:`refresh` blocks and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from virtpolicy.engine.runtime.outage import Outage
from virtpolicy.errors import StoreError
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import ChangeFeed, Policies, Revision, StoredPolicy

log = logging.getLogger(__name__)

#: More revisions than this since the last read: read everything again.
_INCREMENTAL_LIMIT = 500


class PolicyCache:
    """guest -> policy, at the store's global revision :attr:`revision`."""

    def __init__(self, store: Policies) -> None:
        self._store = store
        self._lock = threading.Lock()  # one refresh at a time
        self.revision: int | None = None
        self._policies: Mapping[str, GuestPolicy] = MappingProxyType({})
        self._stored: Mapping[str, StoredPolicy] = MappingProxyType({})
        self._broken: Mapping[str, str] = MappingProxyType({})
        self._feed: ChangeFeed | None = None

    def all(self) -> Mapping[str, GuestPolicy]:
        """Every policy by guest, as of the last refresh (an immutable view)."""
        return self._policies

    def get(self, guest: str) -> GuestPolicy | None:
        return self._policies.get(guest)

    def stored(self) -> Mapping[str, StoredPolicy]:
        """Every policy by guest with its revision and last writer, as of the last
        refresh: what reconcile passes enforce, with no store access (so that they
        go on when the store does not answer)."""
        return self._stored

    def broken(self) -> Mapping[str, str]:
        """guest -> why its stored policy no longer loads: such a guest is left
        alone (not enforced) and shown, while every other guest goes on."""
        return self._broken

    def feed(self) -> ChangeFeed:
        """A new feed of the store's changes: when it reports one, refresh (which
        takes what the feed heard in full, if it did)."""
        self._feed = self._store.change_feed()
        return self._feed

    def refresh(self) -> list[Revision] | None:
        """(Blocking.) Catch up with the store. Returns the revisions read since the
        last refresh ([] if none), or None when it read everything anew."""
        with self._lock:
            # The change feed has already told a write of a policy from others
            # (heartbeats, guest states): one query reads what was written since.
            if self.revision is not None:
                written = self._heard(self.revision)
                if written is None:
                    written = self._store.revisions_since(self.revision, _INCREMENTAL_LIMIT + 1)
                if not written:
                    return []
                if len(written) <= _INCREMENTAL_LIMIT:
                    self._apply(written)
                    return written
            # Read after the revision: a write in between only makes the next
            # refresh read it again, never keeps an older list under a newer revision.
            # What the feed heard so far is in what is read now.
            if self._feed is not None:
                self._feed.written()
            revision = self._store.global_revision()
            good, bad = self._store.policies_and_broken()
            self._publish(
                {s.policy.guest: s for s in good}, {b.guest: b.reason for b in bad}, revision
            )
            return None

    def take(self, written: Sequence[Revision]) -> bool:
        """Take in the revisions a write of this process made, without reading the
        store, when they follow on from what was read (no other write came in
        between) and no refresh is under way; else False: refresh. Never waits."""
        if not written or not self._lock.acquire(blocking=False):
            return False
        try:
            if self.revision is None or not _in_order(written, self.revision):
                return False
            self._apply(written)
            return True
        finally:
            self._lock.release()

    def _apply(self, written: Sequence[Revision]) -> None:
        stored, broken = dict(self._stored), dict(self._broken)
        for r in written:
            broken.pop(r.guest, None)
            if r.policy is None:
                stored.pop(r.guest, None)
                if r.broken:
                    broken[r.guest] = r.broken
            else:
                stored[r.guest] = StoredPolicy(r.policy, r.revision, r.created_at, r.actor)
        self._publish(stored, broken, max(r.seq for r in written))

    def _heard(self, revision: int) -> list[Revision] | None:
        """The revisions after ``revision`` as the feed heard them, when it heard
        each one in order (PostgreSQL); [] when it heard none after ``revision``
        (those of this process's own writes, taken already); None: read the store."""
        heard = self._feed.written() if self._feed is not None else None
        if heard is None:
            return None
        after = [r for r in heard if r.seq > revision]
        return after if not after or _in_order(after, revision) else None

    def _publish(
        self, stored: dict[str, StoredPolicy], broken: dict[str, str], revision: int
    ) -> None:
        if broken.keys() != self._broken.keys():
            for guest in broken.keys() - self._broken.keys():
                log.warning("policy of %s is not enforced: %s", guest, broken[guest])
        self._broken = MappingProxyType(broken)
        self._stored = MappingProxyType(stored)
        self._policies = MappingProxyType({g: s.policy for g, s in stored.items()})
        self.revision = revision


def _in_order(written: Sequence[Revision], revision: int) -> bool:
    """Whether ``written`` are the revisions right after ``revision``, in order."""
    return [r.seq for r in written] == list(range(revision + 1, revision + 1 + len(written)))


#: After this long without a write, the store is looked at 4 times less often.
QUIET_S = 60.0


async def follow(
    cache: PolicyCache,
    interval: float,
    on_change: Callable[[list[Revision] | None], None],
    moved: asyncio.Event | None = None,
) -> None:
    """Keep ``cache`` current; after each refresh that found writes, call
    ``on_change(revisions or None)`` on the loop. Setting ``moved`` asks for a
    refresh at once (the API wrote).

    A thread of its own waits on the store's change feed (PostgreSQL: a
    notification, at once; SQLite: its change marker, read when inotify says the
    database's directory was written, and every ``interval`` seconds, every 4
    intervals after :data:`QUIET_S` without a write) and wakes the loop only when
    something was written, so an idle daemon's loop does not wake for nothing.
    """
    loop = asyncio.get_running_loop()
    moved = moved or asyncio.Event()
    stop = threading.Event()

    def watch() -> None:
        feed = cache.feed()
        changed_at = -math.inf  # quiet from the start: nothing was written yet
        first = True
        try:
            while not stop.is_set():
                quiet = time.monotonic() - changed_at > QUIET_S
                if feed.wait(interval * 4 if quiet else interval, stop):
                    if not first:
                        changed_at = time.monotonic()
                    loop.call_soon_threadsafe(moved.set)
                first = False
        finally:
            feed.close()

    watcher = threading.Thread(target=watch, name="store-watch", daemon=True)
    watcher.start()
    outage = Outage("store", log)
    try:
        while True:
            await moved.wait()
            moved.clear()
            try:
                written = await asyncio.to_thread(cache.refresh)
            except StoreError as exc:
                outage.failed(exc)
                await asyncio.sleep(interval)
                moved.set()  # try again
            else:
                outage.answered()
                if written != []:
                    on_change(written)
    finally:
        stop.set()
