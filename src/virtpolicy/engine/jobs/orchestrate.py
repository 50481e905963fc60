"""Starting and stopping groups of guests in dependency order.

Start: every selected guest has a task that waits for each of its own
dependencies (their start, then the condition on that edge) and starts the
guest as soon as all of them hold, within a concurrency limit. There are no
lock-step waves, so the makespan follows the critical path. A failed
``requires`` holds its dependents back, and the result says which
dependency did it; a failed ``wants`` is noted and its dependents go on.

Stop is the reverse: a guest stops once everything that depends on it (of
the selection) has stopped, with its policy's action and timeout, escalating
to destroy only when the policy says so.

In a fleet each host's daemon runs the same plan over the whole selection
but starts and stops only its own guests (:class:`Remote` says which); of
the others it awaits the outcome their own host reports, and a condition
on one of them is checked from here (``tcp:``, ``exec:``) or as its host
reports it (``running``, ``agent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from virtpolicy.engine.jobs.conditions import Commands, Guests, probe_for, wait_until
from virtpolicy.engine.runtime.gate import PriorityGate
from virtpolicy.errors import ConditionError, GuestNotFoundError, HypervisorError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.policy.graph import Edges, start_waves, stop_waves
from virtpolicy.policy.model import Dependency, GuestPolicy, StopPolicy
from virtpolicy.store.jobrecords import FAILED, Result

T = TypeVar("T")

#: (guest, what happened, detail) for live progress.
Progress = Callable[[str, str, str], None]


_STOP_POLL_S = 0.2


class Remote(Protocol):
    """The guests of a job that other hosts' daemons start and stop."""

    def owns(self, guest: str) -> bool:
        """Whether this daemon starts or stops ``guest``."""

    async def outcome(self, guest: str) -> tuple[str, str]:
        """(result, detail) of another host's guest, once its host reports one."""

    def agent_ping(self, guest: str) -> None:
        """HypervisorError unless another host reports ``guest``'s agent answering."""


@dataclass
class GuestResult:
    """How one guest fared: started, already running, stopped, failed, held back."""

    guest: str
    result: Result
    seconds: float
    detail: str = ""
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.result not in FAILED


@dataclass
class Orchestrator:
    """Starts and stops guests of one hypervisor by their stored policies."""

    hypervisor: Hypervisor
    policies: dict[str, GuestPolicy]
    concurrency: int = 8
    progress: Progress = lambda _g, _e, _d: None
    commands: Commands = field(default_factory=Commands.as_caller)
    #: Told each time a dependency's condition was found to hold: (guest, condition).
    on_holds: Callable[[str, str], None] = lambda _g, _c: None
    results: list[GuestResult] = field(default_factory=list)
    #: In a fleet: who starts and stops the guests that are not this host's.
    remote: Remote | None = None
    #: Why a guest may not start now (the daemon's admission: dependencies and
    #: placement, as libvirt's hook would ask); none: no such check here.
    admit: Callable[[str], Awaitable[list[str]]] | None = None

    def __post_init__(self) -> None:
        self._edges: Edges = {g: p.dependencies() for g, p in self.policies.items()}
        self._guests = Guests(self._is_running, self._agent_ping, self.commands)

    def start_plan(self, roots: Iterable[str] | None) -> list[list[str]]:
        """The waves (for --dry-run and to check the graph); CycleError if cyclic."""
        return start_waves(self._edges, None if roots is None else list(roots))

    def stop_plan(self, roots: Iterable[str] | None) -> list[list[str]]:
        return stop_waves(self._edges, None if roots is None else list(roots))

    # -- start --------------------------------------------------------------------

    async def start(self, roots: Iterable[str] | None = None) -> list[GuestResult]:
        waves = self.start_plan(roots)
        selected = [g for wave in waves for g in wave]
        # When more guests are ready than may start at once, the one with the
        # longest chain of dependents behind it goes first.
        behind: dict[str, list[str]] = {}
        for guest in selected:
            for dep, _kind in self._edges.get(guest, ()):
                behind.setdefault(dep, []).append(guest)
        self._urgency = _chain_lengths(waves, behind)
        self._t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        self._up: dict[str, asyncio.Future[str | None]] = {
            g: loop.create_future() for g in selected
        }
        self._waits: dict[tuple[str, str, float], asyncio.Future[str | None]] = {}
        self.results = []
        with self._workers():
            await asyncio.gather(*(self._start_one(g) for g in self._by_urgency(selected)))
        return self.results

    async def _start_one(self, guest: str) -> None:
        if await self._elsewhere(guest):
            return
        policy = self.policies.get(guest)
        deps = (
            [(d, "requires") for d in policy.requires] + [(d, "wants") for d in policy.wants]
            if policy
            else []
        )
        reasons = await asyncio.gather(*(self._dependency(guest, d, kind) for d, kind in deps))
        hard = [r for (_, kind), r in zip(deps, reasons, strict=True) if r and kind == "requires"]
        soft = [r for (_, kind), r in zip(deps, reasons, strict=True) if r and kind == "wants"]
        if hard:
            self._finish(guest, Result.HELD_BACK, hard[0])
            return
        async with self._gate.held(self._urgency.get(guest, 0)):
            refused = await self.admit(guest) if self.admit is not None else []
            if refused:
                self._finish(guest, Result.REFUSED, "; ".join(refused))
                return
            self.progress(guest, Result.STARTING, "")
            try:
                started = await self._call(self.hypervisor.start, guest)
                result = Result.STARTED if started else Result.ALREADY_RUNNING
            except HypervisorError as exc:
                self._finish(guest, Result.FAILED, str(exc))
                return
        if policy and policy.start.delay:
            await asyncio.sleep(policy.start.delay)
        self._finish(guest, result, "; ".join(f"went on: {r}" for r in soft))

    async def _dependency(self, guest: str, dep: Dependency, kind: str) -> str | None:
        future = self._up.get(dep.guest)
        failure = await asyncio.shield(future) if future else None
        if failure:
            return f"{guest} {kind} {dep.guest}: {failure}"
        # Dependents that wait for the same condition on the same guest share
        # one probe: a condition is a fact about the dependency.
        self.progress(guest, Result.WAITING, f"for {dep.guest} ({dep.when})")
        key = (dep.guest, str(dep.when), dep.timeout)
        task = self._waits.get(key)
        if task is None:
            task = self._waits[key] = asyncio.ensure_future(self._wait_for(dep))
        failure = await asyncio.shield(task)
        return f"{guest} {kind} {failure}" if failure else None

    async def _wait_for(self, dep: Dependency) -> str | None:
        """None once ``dep``'s condition holds, else why it did not."""
        label = f"{dep.guest} ({dep.when})"
        try:
            await wait_until(label, probe_for(dep.guest, dep.when, self._guests), dep.timeout)
            self.on_holds(dep.guest, str(dep.when))
        except ConditionError as exc:
            return str(exc)
        except HypervisorError as exc:
            return f"{dep.guest}: {exc}"
        return None

    # -- stop -----------------------------------------------------------------------

    async def stop(self, roots: Iterable[str] | None = None) -> list[GuestResult]:
        waves = self.stop_plan(roots)
        selected = [g for wave in waves for g in wave]
        chosen = set(selected)
        self._t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        self._down: dict[str, asyncio.Future[str | None]] = {
            g: loop.create_future() for g in selected
        }
        self._dependents: dict[str, list[tuple[str, str]]] = {}
        for guest in selected:
            for dep, kind in self._edges.get(guest, ()):
                if dep in chosen:
                    self._dependents.setdefault(dep, []).append((guest, kind))
        # The longest chain of dependencies still to stop after a guest goes first.
        below = {g: [d for d, _ in self._edges.get(g, ()) if d in chosen] for g in selected}
        self._urgency = _chain_lengths(waves, below)
        self.results = []
        with self._workers():
            await asyncio.gather(*(self._stop_one(g) for g in self._by_urgency(selected)))
        return self.results

    async def _stop_one(self, guest: str) -> None:
        if await self._elsewhere(guest, down=True):
            return
        for dependent, kind in self._dependents.get(guest, ()):
            failure = await asyncio.shield(self._down[dependent])
            if failure and kind == "requires":
                self._finish(
                    guest,
                    Result.HELD_BACK,
                    f"{dependent} requires {guest} and did not stop: {failure}",
                    down=True,
                )
                return
        stop = self.policies[guest].stop if guest in self.policies else StopPolicy()
        async with self._gate.held(self._urgency.get(guest, 0)):
            self.progress(guest, Result.STOPPING, stop.action)
            try:
                result = await self._stop_guest(guest, stop)
            except (HypervisorError, TimeoutError) as exc:
                self._finish(guest, Result.FAILED, str(exc), down=True)
                return
        self._finish(guest, result, "", down=True)

    async def _stop_guest(self, guest: str, stop: StopPolicy) -> Result:
        info = await self._call(self.hypervisor.guest, guest)
        if not info.running:
            return Result.ALREADY_STOPPED
        if stop.action == "destroy":
            await self._call(self.hypervisor.destroy, guest)
            return Result.DESTROYED
        if stop.action == "managedsave":
            await self._call(self.hypervisor.managedsave, guest)
            return Result.SAVED
        await self._call(self.hypervisor.shutdown, guest)
        deadline = time.monotonic() + stop.timeout
        while await self._call(self._is_running, guest):
            if time.monotonic() > deadline:
                if not stop.escalate:
                    raise TimeoutError(f"{guest}: did not shut down within {stop.timeout} s")
                await self._call(self.hypervisor.destroy, guest)
                return Result.DESTROYED_AFTER_TIMEOUT
            await asyncio.sleep(_STOP_POLL_S)
        return Result.STOPPED

    # -- shared ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _workers(self) -> Iterator[None]:
        """The gate and the threads of one run: ``concurrency`` of each, so that at
        most that many libvirt calls are in flight, the most urgent first."""
        self._gate = PriorityGate(self.concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="virtpolicy-orch")
        try:
            yield
        finally:
            self._pool.shutdown(wait=False)

    def _by_urgency(self, guests: list[str]) -> list[str]:
        """Most urgent first, so that of guests ready at once it is the first in."""
        return sorted(guests, key=lambda g: -self._urgency.get(g, 0))

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of this run's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _elsewhere(self, guest: str, *, down: bool = False) -> bool:
        """For a guest of another host: its outcome as that host reports it."""
        if self.remote is None or self.remote.owns(guest):
            return False
        result, detail = await self.remote.outcome(guest)
        self._finish(guest, Result(result), detail, down=down)
        return True

    def _agent_ping(self, guest: str) -> None:
        if self.remote is None or self.remote.owns(guest):
            self.hypervisor.agent_ping(guest)
        else:
            self.remote.agent_ping(guest)

    def _is_running(self, guest: str) -> bool:
        if self.remote is not None and not self.remote.owns(guest):
            return True  # asked only once its host reported it up
        try:
            return self.hypervisor.guest(guest).running
        except GuestNotFoundError:
            return False

    def _finish(self, guest: str, result: Result, detail: str, *, down: bool = False) -> None:
        """Record the result and release whoever waits on this guest."""
        outcome = GuestResult(guest, result, time.monotonic() - self._t0, detail)
        self.results.append(outcome)
        self.progress(guest, result, detail)
        futures = self._down if down else self._up
        futures[guest].set_result(None if outcome.ok else detail or result)


def _chain_lengths(waves: list[list[str]], after: dict[str, list[str]]) -> dict[str, int]:
    """For each guest, the number of guests on the longest chain that waits for it
    (itself included), ``after`` naming who waits for whom; ``waves`` are in the
    order the guests go, so the last wave is counted first."""
    length: dict[str, int] = {}
    for wave in reversed(waves):
        for guest in wave:
            length[guest] = 1 + max((length.get(g, 0) for g in after.get(guest, ())), default=0)
    return length
