"""The daemon: keep every guest true to its policy, and answer about them.

This module wires the daemon's parts together and holds no logic of its own:

- :mod:`~virtpolicy.engine.daemon.supervisor` keeps the libvirt connection;
- :mod:`~virtpolicy.engine.runtime.states` holds every domain's state from events;
- :mod:`~virtpolicy.engine.daemon.policycache` follows the store;
- :mod:`~virtpolicy.engine.daemon.passes` queues and runs reconcile passes;
- :mod:`~virtpolicy.engine.jobs.runner` runs start and stop jobs;
- :mod:`~virtpolicy.engine.daemon.sampler` samples and runs tuners;
- :mod:`~virtpolicy.engine.jobs.prober` probes dependency conditions;
- :mod:`~virtpolicy.engine.fleet.membership` keeps this host's place in the fleet.
Everything here runs on the event loop; blocking calls go to threads there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

from virtpolicy import __version__
from virtpolicy.engine.daemon.everypolicy import EveryPolicy
from virtpolicy.engine.daemon.passes import Passes
from virtpolicy.engine.daemon.policycache import PolicyCache, follow
from virtpolicy.engine.daemon.sampler import Sampling
from virtpolicy.engine.daemon.settings import ControllerSettings
from virtpolicy.engine.daemon.supervisor import Supervisor
from virtpolicy.engine.fleet.membership import Fleet, Membership, Unpublished
from virtpolicy.engine.jobs.admission import migration_refusals, refusals
from virtpolicy.engine.jobs.conditions import Commands
from virtpolicy.engine.jobs.prober import Prober
from virtpolicy.engine.jobs.run import JobRequest
from virtpolicy.engine.jobs.runner import JobRunner
from virtpolicy.engine.jobs.settle import settle
from virtpolicy.engine.runtime.bus import Event, EventBus
from virtpolicy.engine.runtime.states import AT_REST, GuestStates
from virtpolicy.engine.tuners import load as load_tuners
from virtpolicy.engine.tuners.monitor import Monitor
from virtpolicy.engine.tuners.run import Decision, Tuners
from virtpolicy.engine.tuning.reconcile import GuestStatus, Reconciler
from virtpolicy.errors import ConnectionLostError, StoreError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.hypervisor.ksm import Ksm
from virtpolicy.hypervisor.native import Changes, GuestInfo, shown
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import PolicyStore, Revision

log = logging.getLogger(__name__)

_POLICY_EVENTS = 100  # more writes than this at once: one event for them all
_STOP_S = 5.0
#: What a tuner that names no groups of its own reads every round.
_CPU_GROUPS = frozenset({"vcpu", "host"})


class Controller:
    """Runs until :meth:`stop`; see the module docstring."""

    def __init__(
        self, store: PolicyStore, hypervisor: Hypervisor, settings: ControllerSettings
    ) -> None:
        self.store = store
        self.hypervisor = hypervisor
        self.settings = settings
        self.host_name = settings.host_name
        # What every part reads: events out, libvirt's states, the policies, the fleet.
        self.events = EventBus()
        self.states = GuestStates()
        self.fleet = Fleet(settings.host_name, settings.heartbeat, self.states)
        self.cache = PolicyCache(store, scope=self._in_scope)
        self.unpublished = Unpublished()
        # Enforcement: the connection, and passes over the guests.
        self.reconciler = Reconciler(
            store, hypervisor, settings.mode, self.cache.stored, settings.reserved,
            clash=self.fleet.clash, on_applied=self._applied,
        )  # fmt: skip
        self.supervisor = Supervisor(
            hypervisor, self._guest_event, self._connected, settings.backoff
        )
        self.connected = self.supervisor.connected
        self.passes = Passes(
            self.reconciler, self.connected, self.supervisor.lost,
            on_done=self.unpublished.checked,
        )  # fmt: skip
        # Dependencies and jobs.
        commands = Commands.confined(settings.exec_dir, settings.exec_user)
        self.prober = Prober(
            hypervisor, self.states, self.cache.all, commands,
            elsewhere=self.fleet.running_elsewhere,
        )  # fmt: skip
        self.jobs = JobRunner(
            store, hypervisor, self.events, self.states, self.connected, self.reconciler.notice,
            commands, self.prober.holds, self.admission, fleet=self.fleet, moved=self.passes.request
        )  # fmt: skip
        self.tuners = Tuners.from_settings(
            load_tuners(settings.tuners), settings.tuner_settings, dry_run=settings.dry_run
        )
        self.monitor = Monitor(
            settings.sample_interval,
            settings.history,
            keep=self.tuners.window if self.tuners.acting else 0.0,  # none for no tuner
            # What the tuners read every round: per-vCPU and host CPU figures
            # for a tuner that does not say (memory figures for the memory tuner).
            always=frozenset().union(
                *(
                    getattr(t, "groups", _CPU_GROUPS)
                    for t in self.tuners.tuners
                    if t.name != "static"
                )
            ),
        )
        self.ksm = (
            Ksm(settings.ksm_dir)
            if settings.ksm == "auto" and "memory" in self.tuners.names
            else None
        )
        self.sampling = Sampling(
            hypervisor, self.monitor, self.tuners, self.events, self.connected,
            self.cache.all, self.reconciler.placing, self.ksm, self.reconciler.tuner_notes,
        )  # fmt: skip
        # This host in the fleet: what it publishes, and what the fleet's changes set off.
        self.membership = Membership(
            store, hypervisor, self.fleet, self.unpublished, self.connected,
            ready=self.prober.ready, status=self.reconciler.status_of, policies=self.cache.all,
            publish=self.events.publish, notice=self.reconciler.notice,
            on_clash=self.passes.request_each, on_beat=self._beat,
            watched=lambda: self.cache.needed,
            memory=lambda: m.to_dict() if (m := self.monitor.host_memory) else None,
            placement=self.reconciler.placing.view,
            migration=settings.migration,
        )  # fmt: skip
        self._elsewhere: frozenset[str] = frozenset()  # guests on other hosts, last beat
        self._every = EveryPolicy(store)  # all the fleet's policies, while pages ask
        self._autostarted = not settings.autostart
        self._stopping = asyncio.Event()
        self._store_moved = asyncio.Event()

    def _in_scope(self, guest: str) -> bool:
        """Whether ``guest``'s policy is this daemon's to hold: it is defined here, or
        on no other host (from worker threads: both are replaced, or read by key)."""
        return guest in self.states or guest not in self.fleet.elsewhere

    def _beat(self) -> None:
        """After each read of the fleet: let go of the policies of guests now on
        other hosts only, read those of guests now on none, take up job steps."""
        self.jobs.look()
        self._every.let_go_if_idle()
        left = self._elsewhere - self.fleet.elsewhere
        self._elsewhere = self.fleet.elsewhere
        self.jobs.in_background(self._rescope(left))

    async def _rescope(self, came: Collection[str] = ()) -> None:
        await asyncio.to_thread(self.cache.prune)
        await self._fetch(came)

    async def _fetch(self, guests: Collection[str]) -> None:
        """Read the policies of guests that came into scope, and pass those found."""
        try:
            found = await asyncio.to_thread(self.cache.fetch, guests) if guests else set()
        except StoreError as exc:
            log.warning("store: %s", exc)
            return
        for guest in sorted(found):
            self.passes.request(guest)

    def _applied(self, guest: str, applied: Changes) -> None:
        """What a pass changed on a guest, as an event (from the pass's thread)."""
        self.events.publish(
            "enforcement",
            guest=guest,
            applied={k: {"from": old, "to": new} for k, (old, new) in shown(applied).items()},
        )

    # -- what the API asks (see api.deps.Daemon) -----------------------------------

    def notify(self, written: Sequence[Revision]) -> None:
        """Policies were written through the API: take the revisions as they are and
        pass their guests (the store is read if another write came in between)."""
        if self.cache.take(written):
            self._policies_written(list(written))
        else:
            self._store_moved.set()

    def this_host(self) -> str:
        return self.host_name

    def guest_states(self) -> Mapping[str, str]:
        """Every domain's state as libvirt last told (a live view: copy to keep)."""
        return self.states

    def placement(self, host: str | None = None) -> dict[str, Any] | None:
        """Where the latest pass placed the guests here; of another ``host`` of the
        fleet, as its last heartbeat that changed it said (None: not known)."""
        if host is None or host == self.host_name:
            return {"host": self.host_name, **self.reconciler.placing.view()}
        record = next((h for h in self.store.hosts() if h.name == host), None)
        if record is None or record.placement is None:
            return None
        return {**record.placement, "host": host}

    def utilization(self, *groups: str) -> Monitor:
        """The figures sampled so far; ``groups`` are sampled from the next sample on."""
        self.monitor.want(*groups)
        return self.monitor

    def tuner_info(self) -> dict[str, Any]:
        return {
            "running": self.tuners.names,
            "dry_run": self.tuners.dry_run,
            "failing": dict(self.tuners.failures),  # tuner -> why its last round failed
        }

    def decisions(self, guest: str | None, limit: int) -> list[Decision]:
        return self.tuners.decisions(guest, limit)

    def subscribe(
        self, after: int | None, kinds: set[str], idle: float
    ) -> AsyncIterator[Event | None]:
        return self.events.subscribe(after, kinds, idle=idle)

    def recent_events(self, kinds: set[str], limit: int) -> list[Event]:
        return self.events.recent(kinds, limit)

    async def submit(self, request: JobRequest, actor: str) -> dict[str, Any]:
        return await self.jobs.submit(request, actor)

    def job(self, job_id: int) -> dict[str, Any] | None:
        return self.jobs.view(job_id)

    def policies(self) -> Mapping[str, GuestPolicy]:
        """The policies this daemon holds by guest, as last read (no store access):
        every one on a host alone; its guests' and their dependencies' in a fleet."""
        return self.cache.all()

    async def every_policy(self) -> Mapping[str, GuestPolicy]:
        """Every stored policy by guest: as held when no other host has a guest,
        else read from the store (on request: not held)."""
        if not self.fleet.elsewhere:
            return self.cache.all()
        return await asyncio.to_thread(self._every.get)

    async def admission(self, guest: str) -> list[str]:
        """Why ``guest`` may not start now (empty: it may), from memory only (see
        :mod:`~virtpolicy.engine.jobs.admission`); until connected, ConnectionLostError,
        unless the guest has no policy (nothing to ask libvirt: a daemon that has
        just started answers for it at once)."""
        if not self.connected.is_set():
            cache = self.cache
            if (
                cache.revision is not None
                and cache.get(guest) is None
                and guest not in cache.broken()
            ):
                return []
            raise ConnectionLostError(
                f"not connected to {self.settings.uri} yet: cannot tell whether {guest} may start"
            )
        policy, placing = await self._policy_of(guest), self.reconciler.placing
        if policy is not None:
            await self._look_at([d.guest for d in policy.requires])
        found = await refusals(guest, policy, self.states, self.prober, self.fleet)
        return found + [r for r in [placing.refusal(guest)] if r]

    async def migration(
        self, guest: str, vcpus: int | None = None, to: str | None = None
    ) -> list[str]:
        """Why ``guest`` (with ``vcpus`` vCPUs, when told) may not migrate here (empty:
        it may): its fixed pins, and whether the placer finds it room here. With
        ``to``, why not to that host, as it last published itself."""
        if to is not None:
            return (await self.jobs.destination(guest, to)).reasons
        info, policy = self.supervisor.info, await self._policy_of(guest)
        if info is None:
            raise ConnectionLostError(f"not connected to {self.settings.uri} yet")
        room = self.reconciler.placing.arriving
        placed = await asyncio.to_thread(room, guest, vcpus, policy) if vcpus else None
        return migration_refusals(guest, policy, info.cpus) + ([placed] if placed else [])

    async def _look_at(self, guests: list[str]) -> None:
        """Read the fleet's rows of ``guests`` not looked at yet (a dependency named
        since the last heartbeat), so that an answer about them is not a beat old."""
        missing = [g for g in guests if g not in self.states and g not in self.fleet.others]
        if missing and self.fleet.registered:
            try:
                await asyncio.to_thread(self.membership.read_guests, missing)
            except StoreError as exc:
                log.warning("store: %s", exc)

    async def _policy_of(self, guest: str) -> GuestPolicy | None:
        """``guest``'s policy: as held, or read from the store when the guest was
        not in this daemon's scope (it is defined on another host and about to
        run here: started by name, or migrating in); held from then on."""
        policy = self.cache.get(guest)
        if policy is None and not self.cache.wanted(guest):
            await asyncio.to_thread(functools.partial(self.cache.fetch, [guest], outside=True))
            policy = self.cache.get(guest)
        return policy

    def hook_event(self, guest: str, operation: str, phase: str) -> None:
        """libvirt's hook reports an operation: keep ``states`` current. On the loop."""
        log.info("hook guest=%s %s %s", guest, operation, phase)
        if operation in ("started", "stopped", "release"):
            self.states.record(guest, operation)
            self.unpublished.changed(guest)
            self.prober.wake()

    def statuses(self) -> list[GuestStatus]:
        """Every guest's status as of its last pass, and every guest whose stored
        policy no longer loads (not enforced, said so)."""
        # A status is as of its guest's last pass; its state is as libvirt last said.
        found = [
            dataclasses.replace(s, state=self.states[s.guest])
            if s.guest in self.states and self.states[s.guest] != s.state
            else s
            for s in self.reconciler.statuses()
        ]
        broken = self.cache.broken()
        if not broken:
            return found
        found = [s for s in found if s.guest not in broken]
        for guest, why in broken.items():
            state = self.states.get(guest, "undefined")
            error = f"policy not enforced: the stored policy no longer loads: {why}"
            found.append(GuestStatus(guest, state=state, error=error))
        return sorted(found, key=lambda s: s.guest)

    def host_info(self) -> dict[str, Any]:
        """The connection, its driver and the host's CPUs (when connected)."""
        info: dict[str, Any] = {
            "host": self.host_name,
            "version": __version__,
            "uri": self.settings.uri,
            "connected": self.connected.is_set(),
            "mode": self.settings.mode,
            "passes": self.passes.count,
            "pass_cpu_s": {
                "all": round(self.passes.cpu_s, 4),
                "last_full": round(self.passes.full_cpu_s, 4),
            },
            "samples": self.monitor.samples,
            "fleet": self.fleet.info(),
            "policies": {
                "held": len(self.cache.all()),
                "decoded": self.cache.decoded,
                "held_for_pages": self._every.holding,  # every guest's, while pages ask
            },
        }
        host = self.supervisor.info
        if self.connected.is_set() and host is not None:
            info.update(host.describe())
        return info

    # -- running ------------------------------------------------------------------------

    def stop(self) -> None:
        self.events.close()
        self._stopping.set()

    async def run(self) -> None:
        """Connect, then keep reconciling until stopped."""
        self.events.bind(asyncio.get_running_loop())
        try:  # jobs a killed daemon or CLI left "running"; the policies as they are
            for job in await asyncio.to_thread(settle, self.store, self.host_name):
                log.warning("job %d interrupted: %s", job.id, job.detail)
            # Which guests other hosts have first: their policies are not read.
            await asyncio.to_thread(self.membership.read_fleet, self.membership.looked_at())
            self._elsewhere = self.fleet.elsewhere
            await asyncio.to_thread(self.cache.refresh)
        except StoreError as exc:
            log.error("store: %s", exc)
        interval = self.settings.store_poll_interval
        tasks = [
            asyncio.create_task(self.supervisor.run(), name="connection"),
            asyncio.create_task(self.passes.run(), name="worker"),
            asyncio.create_task(self.passes.periodic(self.settings.reconcile_interval)),
            asyncio.create_task(
                follow(self.cache, interval, self._policies_written, self._store_moved)
            ),
            asyncio.create_task(self.sampling.run(), name="sampler"),
            asyncio.create_task(self.prober.run(), name="prober"),
            asyncio.create_task(self.membership.run(), name="membership"),
        ]
        for task in tasks:
            task.add_done_callback(self._task_done)
        try:
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.jobs.cancel()
            if self.ksm is not None:  # as it was found
                await asyncio.to_thread(self.ksm.restore)
            # A stop is never held up long by the store or libvirt.
            for last in (self.membership.leave(), asyncio.to_thread(self.hypervisor.close)):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_STOP_S):
                        await last

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # The tasks loop forever; one that ends has crashed. Stop, so that
        # systemd restarts the daemon, rather than limp on without it.
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s crashed", task.get_name(), exc_info=task.exception())
            self.stop()

    def _connected(self, guests: list[GuestInfo]) -> None:
        self.states.replace({g.name: g.state for g in guests})
        self.jobs.in_background(self._fetch([g.name for g in guests]))
        self.membership.listed(guests)
        self.reconciler.forget_mirrors()  # libvirtd may have restarted with other XML
        self.prober.wake()
        if not self._autostarted:
            self._autostarted = True
            self.jobs.in_background(self.jobs.autostart(self.cache.all()))
        self.passes.request()  # after a (re)connect, check everything

    def _guest_event(self, guest: str, what: str) -> None:
        log.debug("event guest=%s %s", guest, what)
        self.states.record(guest, what)
        self.unpublished.changed(guest)
        if what in ("defined", "undefined"):
            self.reconciler.forget_mirrors(guest)  # a new definition: read its mirror
        if self.cache.get(guest) is None and what not in AT_REST:
            self.jobs.in_background(self._fetch([guest]))  # came into scope
        self.prober.wake()
        self.events.publish("lifecycle", guest=guest, event=what)
        # SHUTDOWN (the guest OS finished) is followed by STOPPED: act once.
        if what in ("stopped", "crashed"):
            self.jobs.in_background(self.jobs.dependency_stopped(guest, what, self.cache.all()))
        if what not in AT_REST or what == "undefined":  # its place (dedicated CPUs) freed
            self.passes.request(guest)

    def _policies_written(self, written: list[Revision] | None) -> None:
        """After the store changed: a pass, and one event per policy written."""
        self.prober.written(written)
        if written is None or len(written) > _POLICY_EVENTS:
            self.passes.request()
            self.events.publish("policy", guests=None, revision=self.cache.revision)
            return
        for r in written:
            self.passes.request(r.guest)
            self.events.publish(
                "policy", guest=r.guest, revision=r.revision, action=r.action, actor=r.actor
            )
