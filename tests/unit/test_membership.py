"""The fleet membership loop ends when cancelled, whatever else happens at once.

Python 3.11's ``asyncio.wait_for`` returns the inner result, and swallows the
cancellation, when both arrive in the same loop iteration; a loop built on it
then waits for its next beat instead of ending, and the daemon's stop hangs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from virtpolicy.engine.fleet.membership import Fleet, Membership, Unpublished
from virtpolicy.engine.runtime.states import GuestStates
from virtpolicy.store import SqlStore
from virtpolicy.testing import MemoryGuest, MemoryHypervisor


@pytest.mark.parametrize("yields", range(5))
def test_a_wake_and_a_cancel_together_still_end_the_loop(tmp_path: Path, yields: int) -> None:
    async def main() -> None:
        store = SqlStore(str(tmp_path / "p.db"))
        host = MemoryHypervisor([MemoryGuest("db", running=True)], loop=asyncio.get_running_loop())
        fleet, unpublished = Fleet("h", 3600, GuestStates()), Unpublished()
        fleet.joined()  # beat and publish only: no registration
        membership = Membership(
            store, host, fleet, unpublished, asyncio.Event(),
            ready=lambda _g: {}, status=lambda _g: None, policies=dict,
            publish=lambda _kind, **_fields: None, notice=lambda _g, _t: None,
            on_clash=lambda _guests: None, on_beat=lambda: None,
        )  # fmt: skip
        task = asyncio.create_task(membership.run())
        try:
            # Settled: the first beat and publication are done, the loop waits.
            for _ in range(500):
                await asyncio.sleep(0.01)
                if not unpublished.everything and fleet.read_at is not None:
                    break
            await asyncio.sleep(0.05)
            unpublished.changed("db")
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert task in done, "the loop went on after it was cancelled"
            assert task.cancelled()
        finally:
            task.cancel()
            store.close()

    asyncio.run(main())
