"""The stored policies as the daemon last read them: those of its own guests.

Read whole once, then kept current from the revisions written since: a write
costs the daemon the guests it changed, not every stored policy (at 10,000
policies a full read takes some 300 ms). Readers (admission, status, the
sampler, /metrics) get the in-memory mapping and never touch the store.
:meth:`refresh` blocks and runs in a worker thread.

In a fleet a daemon holds only the policies in its ``scope`` (the guests
defined on its host, and those defined on no host) and those they depend on.
The rest are passed over by name: neither decoded nor held, so that a daemon's
memory and work follow its own guests, not the fleet's. When a guest comes
into scope (defined here, migrated in), :meth:`fetch` reads its policy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType

from virtpolicy.engine.runtime.outage import Outage
from virtpolicy.errors import StoreError
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import ChangeFeed, Policies, Revision, StoredPolicy, Wanted
from virtpolicy.store.feed import UNHEARD_S

log = logging.getLogger(__name__)

#: More revisions than this since the last read: read everything again.
_INCREMENTAL_LIMIT = 500


class PolicyCache:
    """guest -> policy, at the store's global revision :attr:`revision`."""

    def __init__(self, store: Policies, scope: Wanted | None = None) -> None:
        """``scope``: whose policies to hold (called from worker threads; None:
        every guest's), besides those they depend on."""
        self._store = store
        self._scope = scope
        self._lock = threading.Lock()  # one refresh at a time
        self.revision: int | None = None
        self._policies: Mapping[str, GuestPolicy] = MappingProxyType({})
        self._stored: Mapping[str, StoredPolicy] = MappingProxyType({})
        self._broken: Mapping[str, str] = MappingProxyType({})
        self._feed: ChangeFeed | None = None
        #: The guests the held policies in scope depend on.
        self._needed: frozenset[str] = frozenset()
        #: Guests in scope or needed that were looked up and have no policy.
        self._absent: set[str] = set()
        #: How many stored documents this cache has decoded (for ``/v1/host``).
        self.decoded = 0

    @property
    def needed(self) -> frozenset[str]:
        """The guests the held policies in scope depend on."""
        return self._needed

    def wanted(self, guest: str) -> bool:
        """Whether ``guest``'s policy is one to hold (see the module docstring)."""
        return self._scope is None or guest in self._needed or self._scope(guest)

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
                    written = self._store.revisions_since(
                        self.revision, _INCREMENTAL_LIMIT + 1, wanted=self._wants()
                    )
                if not written:
                    return []
                if len(written) <= _INCREMENTAL_LIMIT:
                    self._apply(written)
                    self._complete()
                    return written
            # Read after the revision: a write in between only makes the next
            # refresh read it again, never keeps an older list under a newer revision.
            # What the feed heard so far is in what is read now.
            if self._feed is not None:
                self._feed.written()
            revision = self._store.global_revision()
            known = self._stored
            good, bad = self._store.policies_and_broken(wanted=self._wants(), known=known)
            self.decoded += sum(known.get(s.policy.guest) is not s for s in good) + len(bad)
            self._absent = set()
            self._publish(
                {s.policy.guest: s for s in good}, {b.guest: b.reason for b in bad}, revision
            )
            self._complete()
            return None

    def fetch(self, guests: Collection[str], *, outside: bool = False) -> set[str]:
        """(Blocking.) Read the policies of ``guests`` that came into scope and are
        not held (defined here); returns those found. Those without one are
        remembered as such until a revision of theirs is read. With ``outside``,
        also of guests not in scope (one about to run here): held until the next
        :meth:`prune`, unless in scope by then."""
        with self._lock:
            return self._fetch(guests, outside)

    def prune(self) -> None:
        """(Blocking, briefly.) Let go of the policies no longer in scope (their
        guest is now defined on another host only)."""
        with self._lock:
            self._prune()
            self._complete()

    def _wants(self) -> Wanted | None:
        return None if self._scope is None else self.wanted

    def _fetch(self, guests: Collection[str], outside: bool = False) -> set[str]:
        asked = {
            g
            for g in guests
            if g not in self._stored
            and g not in self._broken
            and g not in self._absent
            and (outside or self.wanted(g))
        }
        if not asked or self.revision is None:
            return set()
        good, bad = self._store.policies_and_broken(guests=asked)
        self.decoded += len(good) + len(bad)
        stored, broken = dict(self._stored), dict(self._broken)
        stored.update((s.policy.guest, s) for s in good)
        broken.update((b.guest, b.reason) for b in bad)
        found = set(stored.keys() - self._stored.keys()) | set(broken.keys() - self._broken.keys())
        self._absent |= asked - found
        self._publish(stored, broken, self.revision)
        return found

    def _prune(self) -> None:
        if self._scope is None:
            return
        self._needed = self._needs(self._policies)
        gone = [g for g in [*self._stored, *self._broken] if not self.wanted(g)]
        if gone:
            stored, broken = dict(self._stored), dict(self._broken)
            for g in gone:
                stored.pop(g, None)
                broken.pop(g, None)
            self._publish(stored, broken, self.revision or 0)
        self._absent = {g for g in self._absent if self.wanted(g)}

    def _complete(self) -> None:
        """Read the policies of the guests the held ones depend on, when not held
        (a dependency written before the guest that names it came into scope)."""
        if self._scope is None:
            return
        for _ in range(2):  # what the first read brought in, once more
            missing = self._needed - self._stored.keys() - self._broken.keys() - self._absent
            if not missing:
                return
            self._fetch(missing)

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
            self._absent.discard(r.guest)
            if not r.decoded or not self.wanted(r.guest):  # another host's: let go
                stored.pop(r.guest, None)
                continue
            self.decoded += 1
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
        heard = self._feed.written(self._wants()) if self._feed is not None else None
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
        if self._scope is not None:
            self._needed = self._needs(self._policies)

    def _needs(self, policies: Mapping[str, GuestPolicy]) -> frozenset[str]:
        """The guests that the policies in scope depend on."""
        scope = self._scope
        if scope is None:  # holds every policy: none is needed besides
            return frozenset()
        return frozenset(d for g, p in policies.items() if scope(g) for d, _ in p.dependencies())


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
    database's directory was written, and every :data:`UNHEARD_S` in case;
    without inotify, every ``interval`` seconds, every 4 intervals after
    :data:`QUIET_S` without a write) and wakes the loop only when
    something was written, so an idle daemon's loop does not wake for nothing.
    """
    loop = asyncio.get_running_loop()
    moved = moved or asyncio.Event()
    stop = threading.Event()

    feeds: list[ChangeFeed] = []  # the watch's, to interrupt on the way out

    def watch() -> None:
        feed = cache.feed()
        feeds.append(feed)
        changed_at = -math.inf  # quiet from the start: nothing was written yet
        first = True
        try:
            while not stop.is_set():
                quiet = time.monotonic() - changed_at > QUIET_S
                timeout = interval * 4 if quiet else interval
                if feed.wait(UNHEARD_S if feed.wakes_on_write else timeout, stop):
                    if not first:
                        changed_at = time.monotonic()
                    try:
                        loop.call_soon_threadsafe(moved.set)
                    except RuntimeError:  # the loop closed meanwhile: nobody follows
                        break
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
        for feed in feeds:
            feed.interrupt()
