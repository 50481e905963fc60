"""The daemon's event bus: order, resume from an id, gaps, filters, threads."""

from __future__ import annotations

import asyncio
import threading

from virtpolicy.engine.runtime.bus import Event, EventBus


async def take(bus: EventBus, n: int, **kw: object) -> list[Event | None]:
    got: list[Event | None] = []
    async for event in bus.subscribe(**kw):  # type: ignore[arg-type]
        got.append(event)
        if len(got) == n:
            break
    return got


def test_live_events_in_order_and_filtered() -> None:
    """Live events in order and filtered."""

    async def main() -> None:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        task = asyncio.create_task(take(bus, 2, kinds={"job"}))
        await asyncio.sleep(0)  # subscribed
        bus.publish("lifecycle", guest="db", event="started")
        bus.publish("job", job=1, state="running")
        bus.publish("job", job=1, state="succeeded")
        got = await asyncio.wait_for(task, 5)
        assert [(e.kind, e.data["state"]) for e in got if e] == [
            ("job", "running"),
            ("job", "succeeded"),
        ]
        ids = [e.id for e in got if e]
        assert ids[1] == ids[0] + 1

    asyncio.run(main())


def test_resume_after_an_id_and_gap_when_too_old() -> None:
    """Resume after an id and gap when too old."""

    async def main() -> None:
        bus = EventBus(keep=3)
        for i in range(5):
            bus.publish("policy", guest=f"g{i}")
        first = bus._ring[0].id  # the oldest kept: g2
        resumed = await take(bus, 2, after=first)
        assert [e.data["guest"] for e in resumed if e] == ["g3", "g4"]
        gap = await take(bus, 4, after=first - 3)  # g0 was seen; g1 is gone
        assert gap[0] is not None
        assert (gap[0].kind, gap[0].data) == ("gap", {"after": first - 3, "resumes_at": first})
        assert [e.data["guest"] for e in gap[1:] if e] == ["g2", "g3", "g4"]

    asyncio.run(main())


def test_publish_from_another_thread_and_idle_keepalive() -> None:
    """Publish from another thread and idle keepalive."""

    async def main() -> None:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        got: list[Event | None] = []

        async def listen() -> None:
            async for event in bus.subscribe(idle=0.05):
                got.append(event)
                if event is not None:
                    return

        task = asyncio.create_task(listen())
        await asyncio.sleep(0.12)  # idle ticks first
        worker = threading.Thread(target=bus.publish, args=("enforcement",), kwargs={"guest": "w"})
        worker.start()
        worker.join()
        await asyncio.wait_for(task, 5)
        assert got[0] is None
        last = got[-1]
        assert last is not None
        assert (last.kind, last.data) == ("enforcement", {"guest": "w"})

    asyncio.run(main())


def test_close_ends_subscriptions_and_slow_ones_are_cut_off() -> None:
    """Close ends subscriptions and slow ones are cut off."""

    async def main() -> None:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        waiting = asyncio.create_task(take(bus, 10))
        await asyncio.sleep(0)
        bus.close()
        assert await asyncio.wait_for(waiting, 5) == []
        assert await take(bus, 1) == []  # closed: nothing more

        slow = EventBus()
        subscription = slow.subscribe()
        first = asyncio.ensure_future(subscription.__anext__())
        await asyncio.sleep(0)
        for i in range(2000):  # more than a subscriber's queue holds
            slow.publish("policy", guest=f"g{i}")
        received = [await first]
        received += [e async for e in subscription]
        # Cut off after as many as it could hold, none lost before that.
        assert [e.data["guest"] for e in received if e] == [f"g{i}" for i in range(1024)]

    asyncio.run(main())


def test_recent_events_newest_first_of_the_kinds_asked_kept_only() -> None:
    """A timeline's read: the kept events, newest first, of the kinds asked (by
    default all but those sent on request), at most ``limit``; the sampler's
    unkept events are not among them."""
    bus = EventBus(keep=5)
    for i in range(7):
        bus.publish("enforcement" if i % 2 else "host", n=i)
    bus.publish("stats", keep=False, guests=[])
    assert [e.data["n"] for e in bus.recent()] == [6, 5, 4, 3, 2]  # the five kept
    assert [e.data["n"] for e in bus.recent({"enforcement"})] == [5, 3]
    assert [e.data["n"] for e in bus.recent(limit=2)] == [6, 5]
    assert bus.recent({"stats"}) == []
