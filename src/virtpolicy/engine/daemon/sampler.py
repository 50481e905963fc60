"""Sampling and tuner rounds: one sample every sample interval, the rates it
gives, and then one round of the tuners on them.

All of it runs on a thread of its own, with its own clock: the event loop
does not wake for a sample. Handing each sample to a worker thread and back
cost a wake-up of the loop and two thread hops, about 0.5 ms of CPU a sample
on this project's lab (bench/README.md), more than reading twenty guests.
What the loop must see goes through the event bus, which hops to the loop
itself, and only when someone listens. A round reads a running guest's live
tuning only when a policy asks about that guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping

from virtpolicy.engine.runtime.bus import EventBus
from virtpolicy.engine.tuners import Action
from virtpolicy.engine.tuners.memory import needs_memory, settings_from
from virtpolicy.engine.tuners.monitor import Monitor
from virtpolicy.engine.tuners.run import ROUTINE, Decision, Tuners
from virtpolicy.engine.tuning.placing import HostPlacement
from virtpolicy.errors import GuestNotFoundError, HypervisorError, StoreError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.hypervisor.ksm import Ksm
from virtpolicy.hypervisor.native import Tuning, cap_of
from virtpolicy.policy.model import GuestPolicy

log = logging.getLogger(__name__)


class Sampling:
    """The sampler task of the daemon, and the tuners it feeds."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        monitor: Monitor,
        tuners: Tuners,
        events: EventBus,
        connected: asyncio.Event,
        policies: Callable[[], Mapping[str, GuestPolicy]],
        placing: HostPlacement | None = None,
        ksm: Ksm | None = None,
        on_notes: Callable[[dict[str, dict[str, str]]], None] = lambda _notes: None,
    ) -> None:
        self.hypervisor = hypervisor
        self.monitor = monitor
        self.tuners = tuners
        self.events = events
        self.connected = connected
        self.policies = policies
        #: Where the placer put the guests (the reconciler's).
        self.placing = placing
        #: KSM, run by the host's need of memory (``memory.ksm: auto``).
        self.ksm = ksm
        #: Gets each round's tuner notes (the guests' statuses show them).
        self.on_notes = on_notes

    async def run(self) -> None:
        """Sample on the sampler's thread until cancelled; raises what ended the
        thread, if anything did (a bug: each sample's own errors are logged)."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def sample_forever() -> None:
            try:
                self._sample_forever(stop)
            except BaseException as exc:  # handed to the task, which stops the daemon
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, ended, exc)
                raise

        threading.Thread(target=sample_forever, name="sampler", daemon=True).start()
        try:
            await ended
        finally:
            stop.set()

    def _sample_forever(self, stop: threading.Event) -> None:
        """(The sampler's thread.) One sample every interval while connected; a
        disconnected daemon looks again every :data:`_UNCONNECTED_S` at most."""
        interval = self.monitor.interval
        due = time.monotonic()
        while not stop.wait(max(0.0, due - time.monotonic())):
            now = time.monotonic()
            if not self.connected.is_set():
                due = now + min(interval, _UNCONNECTED_S)
                continue
            due = max(due + interval, now)  # a late sample does not bring on a burst
            self._sample_once()

    def _sample_once(self) -> None:
        streaming = self.events.listening("stats")
        if streaming:
            self.monitor.want("vcpu", "balloon", "host")
        groups = self.monitor.groups()
        before = time.thread_time()
        try:
            sample = self.hypervisor.sample(groups)
        except HypervisorError as exc:
            self.monitor.failed(str(exc))
            log.warning("statistics: %s", exc)
            return
        except Exception as exc:  # a bug in one sample: the daemon goes on without it
            self.monitor.failed(f"sample failed: {exc!r}")
            log.exception("statistics: sample failed")
            return
        self.monitor.ingest(sample, time.thread_time() - before)
        if self.tuners.acting:
            self._decide()
        if streaming and (rates := self.monitor.latest):  # else nobody listens: no event
            self.events.publish(
                "stats",
                keep=False,
                guests=[g.to_dict() for g in rates.guests.values()],
                host_busy_percent=[
                    None if b is None else round(b, 2) for b in rates.host_busy_percent
                ],
            )

    def _decide(self) -> None:
        """Run the tuners on the newest statistics; log and publish."""
        try:
            decisions = self._decide_now()
        except (HypervisorError, StoreError) as exc:
            log.warning("tuners: %s", exc)
            return
        for d in decisions:
            if d.verdict in ROUTINE:
                continue  # routine, every sample: in the decision log only
            log.info(
                "decision tuner=%s guest=%s %s%s=%s %s: %s",
                d.tuner,
                d.guest,
                d.kind,
                "" if d.vcpu is None else f".{d.vcpu}",
                d.shown_value,
                d.outcome,
                d.reason,
            )
            self.events.publish("decision", **d.to_dict())

    def _decide_now(self) -> list[Decision]:
        """Current pins and caps of running guests with a policy,
        then one round of the tuners, applying live."""
        latest = self.monitor.latest
        if latest is None:
            return []
        policies = self.policies()
        node = self.hypervisor.node()
        live = _LiveTuning(
            self.hypervisor,
            [n for n, r in latest.guests.items() if r.running and n in policies],
        )

        def apply(action: Action) -> str | None:
            try:
                if action.kind == "vcpupin" and action.vcpu is not None:
                    self.hypervisor.place(action.guest, action.vcpu, action.cpus)
                elif action.kind == "cap":
                    self.hypervisor.set_cap(action.guest, action.cap)
                elif action.kind == "balloon" and isinstance(action.value, int):
                    self.hypervisor.set_balloon(action.guest, action.value)
            except HypervisorError as exc:
                return str(exc)
            return None

        pools = self.placing.pools() if self.placing is not None else {}
        if self.ksm is not None and latest.host_memory is not None:
            try:
                need = needs_memory(latest.host_memory, settings_from(self.tuners.settings))
            except ValueError as exc:  # a bad memory setting: KSM left as it is, and said
                self.tuners.failures["ksm"] = str(exc)
            else:
                self.tuners.failures.pop("ksm", None)
                if changed := self.ksm.adjust(need):
                    log.info("%s", changed)
        decisions = self.tuners.run(
            list(self.monitor.recent),
            policies,
            node.cpus,
            live.pins,
            live.caps,
            apply,
            node.layout,
            pools,
        )
        self.on_notes(self.tuners.notes())
        return decisions


#: How often a disconnected daemon's sampler looks whether it is connected again.
_UNCONNECTED_S = 0.5


def _settle(ended: asyncio.Future[None], exc: BaseException) -> None:
    if not ended.done():
        ended.set_exception(exc)


class _LiveTuning:
    """Running guests' live tuning for one round of tuners, read from
    libvirt the first time something asks about a guest (four calls each): a
    round whose policies look at a few guests costs a few reads, not four calls
    for every guest with a policy. ``pins`` and ``caps`` are the views a
    :class:`~virtpolicy.engine.tuners.Context` takes."""

    def __init__(self, hypervisor: Hypervisor, guests: Collection[str]) -> None:
        self._hypervisor = hypervisor
        self.guests = guests
        self._read: dict[str, Tuning | None] = {}
        self.pins = _Pins(self)
        self.caps = _Caps(self)

    def of(self, guest: str) -> Tuning | None:
        """The guest's tuning; None if it is not one of ours, or is gone."""
        if guest not in self._read:
            tuning = None
            if guest in self.guests:
                # Undefined since the sample: nothing to place.
                with contextlib.suppress(GuestNotFoundError):
                    tuning = self._hypervisor.actual(guest, True)
            self._read[guest] = tuning
        return self._read[guest]

    def cap(self, guest: str) -> int | None:
        tuning = self.of(guest)
        if tuning is None:
            raise KeyError(guest)
        return cap_of(tuning.sched, self._hypervisor.node().scheduler)


class _Pins(Mapping[tuple[str, int], frozenset[int]]):
    def __init__(self, live: _LiveTuning) -> None:
        self._live = live

    def __getitem__(self, key: tuple[str, int]) -> frozenset[int]:
        tuning = self._live.of(key[0])
        if tuning is None or key[1] not in tuning.vcpupin:
            raise KeyError(key)
        return tuning.vcpupin[key[1]]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for guest in self._live.guests:
            tuning = self._live.of(guest)
            yield from ((guest, v) for v in (tuning.vcpupin if tuning else ()))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Caps(Mapping[str, int | None]):
    def __init__(self, live: _LiveTuning) -> None:
        self._live = live

    def __getitem__(self, guest: str) -> int | None:
        return self._live.cap(guest)

    def __iter__(self) -> Iterator[str]:
        return (g for g in self._live.guests if self._live.of(g) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
