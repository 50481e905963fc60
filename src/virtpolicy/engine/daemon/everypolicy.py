"""Every stored policy, for the few requests that need them all.

A daemon of a fleet holds only its own guests' policies (and what they depend
on). The fleet's page and the graph need every guest's labels and
dependencies: decoding 10,000 stored policies at each reload of an open page
cost some 300 ms of CPU. So they are read whole once, kept current from the
revisions written since (a few at each reload), and let go after
:data:`IDLE_S` seconds without such a request: a daemon no one looks at holds
no more than its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import Policies

#: Seconds without a request after which the policies are let go.
IDLE_S = 120.0
#: Revisions read at a time when catching up.
BATCH = 1000


class EveryPolicy:
    def __init__(self, store: Policies, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._held: dict[str, GuestPolicy] | None = None
        self._seq = 0
        self._asked = 0.0
        self._lock = threading.Lock()

    def get(self) -> dict[str, GuestPolicy]:
        """(In a thread.) Every stored policy that loads, by guest."""
        with self._lock:
            self._asked = self.clock()
            if self._held is None:
                seq = self.store.global_revision()  # first: what is written meanwhile is read again
                self._held = {s.policy.guest: s.policy for s in self.store.list_policies()}
                self._seq = seq
            while True:
                found = self.store.revisions_since(self._seq, BATCH)
                for r in found:
                    if r.policy is None:  # deleted, or no longer loads
                        self._held.pop(r.guest, None)
                    else:
                        self._held[r.guest] = r.policy
                    self._seq = r.seq
                if len(found) < BATCH:
                    return dict(self._held)

    def let_go_if_idle(self) -> None:
        """(On the loop.) Drop what is held when no request asked for it for
        :data:`IDLE_S` s; never waits: a request reading now is not idle."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._held is not None and self.clock() - self._asked > IDLE_S:
                self._held = None
        finally:
            self._lock.release()

    @property
    def holding(self) -> int:
        """How many policies are held now (0 when let go)."""
        return len(self._held or ())
