"""The loop guard: blocking calls on an event loop's thread fail, elsewhere they run."""

import asyncio

import pytest

from virtpolicy.errors import BlockingCallError
from virtpolicy.loopguard import guarded


class Store:
    def get(self, guest: str) -> str:
        return f"policy of {guest}"


def test_call_on_the_loop_fails() -> None:
    """A guarded method called inside a coroutine raises BlockingCallError naming it."""
    store = guarded(Store(), "store")

    async def on_loop() -> str:
        return store.get("web")

    with pytest.raises(BlockingCallError, match=r"store\.get\(\) called on the event loop"):
        asyncio.run(on_loop())


def test_call_in_a_worker_thread_runs() -> None:
    """The same call through asyncio.to_thread, and outside any loop, returns its value."""
    store = guarded(Store(), "store")

    async def off_loop() -> str:
        return await asyncio.to_thread(store.get, "web")

    assert asyncio.run(off_loop()) == "policy of web"
    assert store.get("db") == "policy of db"
