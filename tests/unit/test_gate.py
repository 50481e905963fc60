"""The orchestrator's concurrency gate: the most urgent waiter goes first."""

from __future__ import annotations

import asyncio

import pytest

from virtpolicy.engine.jobs.orchestrate import Orchestrator
from virtpolicy.engine.runtime.gate import PriorityGate
from virtpolicy.policy.model import parse_policy
from virtpolicy.testing import MemoryHypervisor
from virtpolicy.testing.memory import MemoryGuest


def test_waiters_get_in_by_priority_then_arrival() -> None:
    """With the gate full, waiters of priority 1, 5, 3, 5 get in as 5, 5, 3, 1,
    the two fives in the order they came."""
    order: list[str] = []

    async def main() -> None:
        gate = PriorityGate(1)
        await gate.acquire()

        async def wait(name: str, priority: float) -> None:
            async with gate.held(priority):
                order.append(name)

        tasks = []
        for name, priority in (("low", 1), ("first5", 5), ("mid", 3), ("second5", 5)):
            tasks.append(asyncio.create_task(wait(name, priority)))
            await asyncio.sleep(0)
        gate.release()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == ["first5", "second5", "mid", "low"]


def test_a_cancelled_waiter_does_not_keep_a_place() -> None:
    """A waiter cancelled before its turn, or just as its turn came, leaves the
    gate as wide as before."""

    async def main() -> int:
        gate = PriorityGate(1)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire(1))
        await asyncio.sleep(0)
        waiter.cancel()
        gate.release()  # its turn comes as it is cancelled: passed on, not lost
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(gate.acquire(), 1)  # the place is free again
        return gate._free

    assert asyncio.run(main()) == 0


def test_orchestrated_start_goes_critical_chain_first() -> None:
    """One start at a time, four guests ready at once: the one with the longest
    chain of dependents behind it (m, then n and o wait for it) starts first,
    though a, b and c come before it by name; a stop takes the reverse view (o,
    with n and m still to stop after it)."""
    host = MemoryHypervisor([MemoryGuest(n) for n in ("a", "b", "c", "m", "n", "o")])
    host.open()
    calls: list[tuple[str, str]] = []
    host.before = lambda method, guest: calls.append((method, str(guest)))
    policies = {g: parse_policy({"guest": g}) for g in ("a", "b", "c", "m")}
    policies["n"] = parse_policy({"guest": "n", "requires": [{"guest": "m"}]})
    policies["o"] = parse_policy({"guest": "o", "requires": [{"guest": "n"}]})
    results = asyncio.run(Orchestrator(host, policies, concurrency=1).start())
    assert {r.result for r in results} == {"started"}
    started = [g for method, g in calls if method == "start"]
    assert started[0] == "m"
    assert started.index("m") < started.index("n") < started.index("o")
    calls.clear()
    asyncio.run(Orchestrator(host, policies, concurrency=1).stop())
    stopped = [g for method, g in calls if method == "destroy"]
    assert stopped[0] == "o"
    assert stopped.index("o") < stopped.index("n") < stopped.index("m")
