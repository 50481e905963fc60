"""Dependency conditions probed on the daemon's own schedule.

Admission ("may ``web`` start now?") is asked by libvirt's hook and by any
reader of the read-only socket. A reader's request must never start a
process or open a connection on its behalf, so admission answers from the
results kept here: every ``requires`` edge whose dependency runs and whose
condition is more than ``running`` (``tcp:``, ``exec:``, ``agent``) is
probed every :data:`INTERVAL_S`, and at once when a guest's state or the
policies change. A job that saw a condition hold reports it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from virtpolicy.engine.jobs.conditions import PROBE_TIMEOUT_S, Commands, Guests, probe_for
from virtpolicy.engine.runtime.states import GuestStates
from virtpolicy.errors import HypervisorError, PolicyError
from virtpolicy.hypervisor.base import Hypervisor
from virtpolicy.policy.condition import Kind, parse_condition
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.store.base import Revision

INTERVAL_S = 2.0
#: A result older than this is not used; admission waits for the next round.
FRESH_S = 3 * INTERVAL_S

log = logging.getLogger(__name__)

Edge = tuple[str, str]  # (dependency, condition)


def _kind(condition: str) -> Kind | None:
    """The condition's kind; None for one that does not parse (a policy stored by
    an older version): it is probed, and the probe reports why it cannot be."""
    try:
        return parse_condition(condition).kind
    except PolicyError:
        return None


class Prober:
    """Probes, and the latest result of each (None: it holds; else what was seen)."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        states: GuestStates,
        policies: Callable[[], Mapping[str, GuestPolicy]],
        commands: Commands | None = None,
        elsewhere: Callable[[str], bool] = lambda _guest: False,
    ) -> None:
        self.states = states
        self.policies = policies
        self._guests = Guests(
            is_running=states.running,
            agent_ping=hypervisor.agent_ping,
            commands=commands or Commands.confined(None, "nobody"),
        )
        self._results: dict[Edge, tuple[float, str | None]] = {}
        #: Whether a guest runs on another host of the fleet (as last read).
        self.elsewhere = elsewhere
        self._wake = asyncio.Event()
        self._round = asyncio.Event()  # set after each round

    def wake(self) -> None:
        """Probe soon: a state or a policy changed."""
        self._wake.set()

    def written(self, revisions: list[Revision] | None) -> None:
        """Policies were written (None: read anew): probe soon if one may change
        what is probed here (a guest here, or one that requires a guest here).
        Most writes in a fleet are about other hosts' guests and cost nothing."""
        if revisions is None or any(
            r.policy is None
            or r.guest in self.states
            or any(d.guest in self.states for d in r.policy.requires)
            for r in revisions
        ):
            self.wake()

    def holds(self, guest: str, condition: str) -> None:
        """A job saw ``condition`` hold on ``guest`` just now."""
        self._results[(guest, condition)] = (time.monotonic(), None)

    def latest(self, guest: str, condition: str) -> tuple[float, str | None] | None:
        """(When, what) the last probe of the edge saw; None if never probed."""
        return self._results.get((guest, condition))

    async def observed(self, guest: str, condition: str) -> str | None:
        """The latest fresh result for the edge (None: it holds). Waits for the
        probes' next round when there is none yet, and never probes itself."""
        for _ in range(2):
            result = self.latest(guest, condition)
            if result is not None and time.monotonic() - result[0] < FRESH_S:
                return result[1]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL_S + PROBE_TIMEOUT_S):
                    await self._round.wait()
        return f"{condition} not probed yet"

    def edges(self) -> set[Edge]:
        """The edges worth probing now: required, beyond running, dependency running.
        In a fleet, ``agent`` only where the dependency runs (only its host can ask
        its agent); ``tcp:`` and ``exec:`` also where a dependent is, when the
        dependency runs on another host (what the dependent will see)."""
        wanted = set()
        for guest, policy in self.policies().items():
            for dep in policy.requires:
                kind = _kind(dep.when)
                if kind == "running":
                    continue
                here = self.states.running(dep.guest)
                if kind == "agent":
                    probe = here
                else:  # from here too when a guest here depends on one elsewhere
                    probe = here or (guest in self.states and self.elsewhere(dep.guest))
                if probe:
                    wanted.add((dep.guest, dep.when))
        return wanted

    def ready(self, guest: str) -> dict[str, bool]:
        """Which ``agent`` conditions on ``guest`` hold, as last probed here: what
        this host tells the fleet (the others cannot ask this guest's agent)."""
        now = time.monotonic()
        return {
            condition: result is None
            for (g, condition), (at, result) in self._results.items()
            if g == guest and now - at < FRESH_S and _kind(condition) == "agent"
        }

    async def run(self) -> None:
        while True:
            edges = self.edges()
            if edges:
                await asyncio.gather(*(self._probe(e) for e in edges))
            for gone in set(self._results) - edges:
                del self._results[gone]
            self._round.set()
            self._round = asyncio.Event()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL_S if edges else None):
                    await self._wake.wait()

    async def _probe(self, edge: Edge) -> None:
        """Probe one edge. Whatever goes wrong is that edge's result, shown to
        admission and status as the reason its dependents wait: one condition
        that cannot be probed never stops the others, or the daemon."""
        guest, condition = edge
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                observed = await probe_for(guest, condition, self._guests)()
        except TimeoutError:
            observed = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        except (HypervisorError, PolicyError) as exc:
            observed = str(exc)
        except Exception as exc:  # the boundary of one probe: see the docstring
            if self._results.get(edge, (0.0, ""))[1] != f"cannot probe: {exc}":
                log.warning("probe of %s on %s failed", condition, guest, exc_info=True)
            observed = f"cannot probe: {exc}"
        self._results[edge] = (time.monotonic(), observed)
