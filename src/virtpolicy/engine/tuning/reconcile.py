"""Reconcile passes: make each guest's actual tuning match its stored policy.

One pass per guest: read the policy (store), the guest and its tuning
(libvirt), compute the native desired tuning, and in ``enforce`` mode apply
what differs (to the definition and, if running, live) and mirror the policy
into the domain's <metadata>; in ``report`` mode only record the drift. Every
outcome lands on the guest's :class:`GuestStatus`. Guests without a policy are
left alone.

Blocking (it calls libvirt): the daemon runs passes in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from virtpolicy.clock import now as _now
from virtpolicy.engine.tuning.placing import HostPlacement
from virtpolicy.errors import (
    ConnectionLostError,
    GuestNotFoundError,
    HypervisorError,
)
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.hypervisor.native import (
    Changes,
    GuestInfo,
    Tuning,
    desired_tuning,
    drift,
    shown,
)
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.placement import Placed, Request, placed_from_pins
from virtpolicy.store.base import Policies, StoredPolicy

log = logging.getLogger(__name__)

Mode = Literal["enforce", "report"]
_NOTICES = 10


@dataclass
class GuestStatus:
    """Desired vs actual for one guest, as of the last pass that looked at it."""

    guest: str
    policy_revision: int | None = None
    state: str = "undefined"
    desired: Tuning = field(default_factory=Tuning)
    actual: Tuning = field(default_factory=Tuning)
    drift: Changes = field(default_factory=dict)
    applied: Changes = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    checked_at: str | None = None
    applied_at: str | None = None
    #: Recent things that happened to the guest's dependencies, newest last.
    notices: list[str] = field(default_factory=list)
    #: Tuner -> why it leaves the guest as it is (its last round).
    tuning: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "guest": self.guest,
            "policy_revision": self.policy_revision,
            "state": self.state,
            "desired": self.desired.to_dict(),
            "actual": self.actual.to_dict(),
            "drift": {k: {"actual": a, "desired": d} for k, (a, d) in shown(self.drift).items()},
            "applied": {k: {"from": a, "to": d} for k, (a, d) in shown(self.applied).items()},
            "problems": self.problems,
            "error": self.error,
            "checked_at": self.checked_at,
            "applied_at": self.applied_at,
            "notices": self.notices,
            "tuning": self.tuning,
        }


class Reconciler:
    """Reconciles the guests of one hypervisor connection with the store."""

    def __init__(
        self,
        store: Policies,
        hypervisor: Hypervisor,
        mode: Mode = "enforce",
        policies: Callable[[], Mapping[str, StoredPolicy]] | None = None,
        reserved: frozenset[int] = frozenset(),
        *,
        clash: Callable[[str, str], str | None] = lambda _guest, _uuid: None,
        on_applied: Callable[[str, Changes], None] = lambda _g, _a: None,
    ) -> None:
        self.store = store
        #: Where the placer puts each guest here (the host's CPUs minus ``reserved``).
        self.placing = HostPlacement(reserved)
        #: Where passes read the policies: the daemon's cache (no store access),
        #: else the store itself.
        self.policies = policies or (lambda: {s.policy.guest: s for s in store.list_policies()})
        #: Why a running guest is not ours alone to enforce (the same name running
        #: on another host of the fleet with another UUID), or None.
        self.clash = clash
        self.hypervisor = hypervisor
        self.mode = mode
        self._status: dict[str, GuestStatus] = {}
        self._status_lock = threading.Lock()  # readers (the API) vs the pass
        #: What each guest's <metadata> mirror holds, as last read or written here:
        #: only this daemon writes it, so it is read once per connection.
        self._mirrors: dict[str, tuple[int, GuestPolicy] | None] = {}
        #: Guards ``_mirrors`` (a pass's thread writes it, the loop forgets it);
        #: ``_forgets`` counts the forgets, so that what a pass read or wrote
        #: before one is not kept after it.
        self._mirrors_lock = threading.Lock()
        self._forgets = 0
        self._lock = threading.Lock()  # one pass at a time
        #: Told (in the pass's thread) what a pass changed on a guest.
        self.on_applied = on_applied

    def statuses(self) -> list[GuestStatus]:
        """A snapshot of every guest's status, by name."""
        with self._status_lock:
            return [self._status[name] for name in sorted(self._status)]

    def reconcile(self, guests: Iterable[str] | None = None) -> list[GuestStatus]:
        """One pass over ``guests`` (default: every guest with a policy).

        An error in one guest lands on that guest's status and the pass goes on;
        only a lost connection or a failing store ends it.
        """
        with self._lock:
            if guests is None:
                policies = self.policies()
                self._forget(set(self._status) - set(policies))
                if not policies:
                    return []  # nothing to enforce: no need to list the domains
                domains = {d.name: d for d in self.hypervisor.guests()}
                self.placing.listed(domains.values())
                self._place(policies)
                return [
                    self._one(policies[n], domains.get(n))
                    for n in sorted(policies)
                    if n in domains or not self._still_absent(policies[n])
                ]
            # A few guests (an event, an API write): look up only those, and
            # those whose place moved because of them (a shared pool shrank).
            known = self.policies()
            infos: dict[str, GuestInfo | None] = {}
            for name in guests:
                try:
                    info: GuestInfo | None = self.hypervisor.guest(name)
                except GuestNotFoundError:
                    info = None
                # Without a policy (here) it still takes room: it floats over the
                # shared pool; once undefined (or migrated away) its place is free.
                self.placing.seen(name, info)
                if name not in known:
                    self._forget({name})
                    continue
                infos[name] = info
            for name in sorted(self._place(known) - set(infos)):
                if name in known:
                    infos[name] = self.placing.info(name)
            return [self._one(known[n], info) for n, info in infos.items()]

    def status(self, guest: str) -> GuestStatus | None:
        """``guest``'s status as of its last pass (None: it has no policy)."""
        with self._status_lock:
            return self._status.get(guest)

    def status_of(self, guest: str) -> dict[str, object] | None:
        """``guest``'s status as published (None: it has no policy)."""
        status = self.status(guest)
        return status.to_dict() if status is not None else None

    def forget_mirrors(self, guest: str | None = None) -> None:
        """Read the mirror of ``guest`` (None: every guest) again at its next pass:
        after a reconnection, or when the guest was defined anew."""
        with self._mirrors_lock:
            if guest is None:
                self._mirrors.clear()
            else:
                self._mirrors.pop(guest, None)
            self._forgets += 1

    def _mirror(self, name: str, persistent: bool) -> tuple[tuple[int, GuestPolicy] | None, int]:
        """(In the pass's thread.) What ``name``'s mirror holds, read from libvirt
        unless known, and the forgets counted when it was looked up."""
        with self._mirrors_lock:
            if name in self._mirrors:
                return self._mirrors[name], self._forgets
            seen = self._forgets
        mirror = self.hypervisor.read_mirror(name, persistent=persistent)  # not under the lock
        self._remember(name, mirror, seen)
        return mirror, seen

    def _remember(self, name: str, mirror: tuple[int, GuestPolicy] | None, seen: int) -> None:
        """Keep ``mirror`` unless a forget came since ``seen``: then the next pass reads."""
        with self._mirrors_lock:
            if self._forgets == seen:
                self._mirrors[name] = mirror

    def tuner_notes(self, notes: Mapping[str, dict[str, str]]) -> None:
        """Each guest's tuner notes from the tuners' last round (see ``Tuners.notes``)."""
        with self._status_lock:
            for guest in set(notes) | {g for g, s in self._status.items() if s.tuning}:
                status = self._status.get(guest) or GuestStatus(guest)
                self._status[guest] = dataclasses.replace(status, tuning=notes.get(guest, {}))

    def notice(self, guest: str, text: str) -> None:
        """Record something that happened around ``guest`` on its status."""
        with self._status_lock:  # a status once published is replaced, never changed
            status = self._status.get(guest) or GuestStatus(guest)
            notices = [*status.notices, f"{_now()} {text}"][-_NOTICES:]
            self._status[guest] = dataclasses.replace(status, notices=notices)

    def _still_absent(self, stored: StoredPolicy) -> bool:
        """Whether the guest was not here at its last pass, at this revision: its
        status stands (most of a fleet's policies are for other hosts' guests)."""
        with self._status_lock:
            old = self._status.get(stored.policy.guest)
        return (
            old is not None and old.state == "undefined" and old.policy_revision == stored.revision
        )

    def _forget(self, guests: set[str]) -> None:
        # Policy deleted: no longer ours to report.
        with self._status_lock:
            for gone in guests:
                self._status.pop(gone, None)

    def _one(self, stored: StoredPolicy, info: GuestInfo | None) -> GuestStatus:
        """Check (and enforce) one guest; its status is published whole, when done."""
        name = stored.policy.guest
        with self._status_lock:
            previous = self._status.get(name)
        status = GuestStatus(
            name,
            stored.revision,
            checked_at=_now(),
            applied=previous.applied if previous else {},
            applied_at=previous.applied_at if previous else None,
        )
        clash = self.clash(name, info.uuid) if info is not None and info.running else None
        if clash:  # and no enforcement until it is resolved
            state = info.state if info else status.state
            status = dataclasses.replace(status, state=state, problems=[clash])
        elif info is not None:
            status = self._checked(stored, info, dataclasses.replace(status, state=info.state))
        with self._status_lock:
            # Notices may have arrived meanwhile (from the loop): keep the newest.
            current = self._status.get(name)
            status = dataclasses.replace(
                status,
                notices=current.notices if current else [],
                tuning=current.tuning if current else {},
            )
            self._status[name] = status
        return status

    def _checked(self, stored: StoredPolicy, info: GuestInfo, status: GuestStatus) -> GuestStatus:
        """``status`` once the guest is checked (and enforced); a failure is said on
        it, with what the pass had found before it."""
        found = [status]  # the status as the pass goes, newest last
        try:
            self._enforce(stored, info, found)
        except GuestNotFoundError:
            return dataclasses.replace(found[-1], state="undefined")  # undefined since listed
        except ConnectionLostError:
            raise  # the controller reconnects; not this guest's fault
        except HypervisorError as exc:
            log.warning("%s", exc)
            return dataclasses.replace(found[-1], error=str(exc))
        except Exception as exc:
            log.exception("guest %s: pass failed", info.name)
            return dataclasses.replace(found[-1], error=f"internal error: {exc!r}")
        return found[-1]

    def _enforce(self, stored: StoredPolicy, info: GuestInfo, found: list[GuestStatus]) -> None:
        hv, name = self.hypervisor, info.name
        mirror, seen = self._mirror(name, info.persistent)
        policy, placed = stored.policy, self.placing.of(name)
        previous = mirror[1] if mirror else None
        # <numatune> and <cpu><topology>, the soft limit and free page reporting
        # are read only where the policy asks for them (or asked, for the limit).
        defined = policy.numa.nodes is not None or policy.cpu.topology is not None
        memory = policy.memory.soft_limit is not None or (
            policy.memory.free_page_reporting is not None
            or (previous is not None and previous.memory.soft_limit is not None)
        )
        where = {"definition": defined, "memory": memory, "persistent": info.persistent}
        actual = hv.actual(name, info.running, **where)
        desired = desired_tuning(policy, hv.node(), info.vcpus, previous, actual, placed)
        problems = list(desired.problems)
        if info.autostart and stored.policy.start.autostart:
            problems.append(
                "start.autostart: libvirt's own autostart is on too and races the ordered "
                f"start (virsh autostart --disable {name})"
            )
        found_drift = drift(desired.tuning, actual)
        found.append(
            dataclasses.replace(
                found[-1],
                problems=problems,
                desired=desired.tuning,
                actual=actual,
                drift=found_drift,
            )
        )
        if self.mode != "enforce":
            return
        if found_drift:
            changes = desired.tuning.only(found_drift)
            problems = problems + hv.apply(
                name, changes, running=info.running, persistent=info.persistent
            )
            found.append(dataclasses.replace(found[-1], problems=problems))
            after = hv.actual(name, info.running, **where)
            applied = {k: v for k, v in found_drift.items() if k not in drift(changes, after)}
            for what, (old, new) in shown(applied).items():
                log.info("enforce guest=%s %s: %s -> %s", name, what, old, new)
            if applied:
                self.on_applied(name, applied)
            found.append(
                dataclasses.replace(
                    found[-1],
                    problems=problems,
                    applied=applied,
                    applied_at=_now(),
                    actual=after,
                    drift=drift(desired.tuning, after),
                )
            )
        if mirror is None or mirror[0] != stored.revision or mirror[1] != stored.policy:
            hv.write_mirror(
                name,
                stored.revision,
                stored.policy,
                running=info.running,
                persistent=info.persistent,
            )
            self._remember(name, (stored.revision, stored.policy), seen)

    def _place(self, policies: Mapping[str, StoredPolicy]) -> set[str]:
        """Place the guests here again; the guests whose place changed."""

        def pins_of(info: GuestInfo, r: Request) -> Placed | None:
            if topology is None:
                return None
            try:
                now = self.hypervisor.actual(info.name, info.running)
            except GuestNotFoundError:
                return None
            return placed_from_pins(topology, r, now.vcpupin, now.emulatorpin)

        topology = self.hypervisor.node().layout
        return self.placing.update(topology, {n: s.policy for n, s in policies.items()}, pins_of)
