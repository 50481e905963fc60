"""Waiting for a dependency to be "up": running, tcp, exec, agent.

Each probe is cheap and bounded in time; :func:`wait_until` repeats one with
a growing pause (50 ms up to 2 s) until it holds or the timeout passes, and
then fails with the last observation and how hard it tried:
``tcp:10.0.0.5:5432: connection refused, 41 tries over 120 s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from virtpolicy.errors import HypervisorError, VirtpolicyError
from virtpolicy.policy.condition import Condition, parse_condition

#: One probe: None when the condition holds, else what was observed.
Probe = Callable[[], Awaitable[str | None]]

PROBE_TIMEOUT_S = 5.0
_FIRST_PAUSE_S = 0.05
_MAX_PAUSE_S = 2.0


class ConditionFailed(VirtpolicyError):
    """A condition did not hold within its timeout."""


@dataclass(frozen=True, slots=True)
class Guests:
    """What probes need of the hypervisor, as blocking calls run off the loop."""

    is_running: Callable[[str], bool]
    agent_ping: Callable[[str], None]


def probe_for(guest: str, condition: Condition | str, guests: Guests) -> Probe:
    """The probe that tells whether ``guest`` meets ``condition``."""
    cond = parse_condition(condition) if isinstance(condition, str) else condition
    if cond.kind == "running":

        async def running() -> str | None:
            return (
                None
                if await asyncio.to_thread(guests.is_running, guest)
                else f"{guest} is not running"
            )

        return running
    if cond.kind == "tcp":
        return _tcp(cond.host, cond.port)
    if cond.kind == "exec":
        return _exec(cond.argv)

    async def agent() -> str | None:
        try:
            await asyncio.to_thread(guests.agent_ping, guest)
        except HypervisorError as exc:
            return f"guest agent of {guest} does not answer: {exc}"
        return None

    return agent


async def wait_until(label: str, probe: Probe, timeout: float) -> None:
    """Repeat ``probe`` until it holds; ConditionFailed after ``timeout`` seconds."""
    start = time.monotonic()
    pause = _FIRST_PAUSE_S
    tries = 0
    while True:
        tries += 1
        observed = await probe()
        if observed is None:
            return
        elapsed = time.monotonic() - start
        if elapsed + pause > timeout:
            attempts = f"{tries} {'try' if tries == 1 else 'tries'}"
            raise ConditionFailed(f"{label}: {observed}, {attempts} over {elapsed:.0f} s")
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, _MAX_PAUSE_S)


def _tcp(host: str, port: int) -> Probe:
    async def tcp() -> str | None:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), PROBE_TIMEOUT_S
            )
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        except socket.gaierror as exc:
            return f"cannot resolve {host}: {exc.strerror}"
        except OSError as exc:
            # asyncio's "Connect call failed" carries only the errno.
            return os.strerror(exc.errno).lower() if exc.errno else str(exc)
        writer.close()
        with contextlib.suppress(OSError):  # the peer hung up first; the connect counted
            await writer.wait_closed()
        return None

    return tcp


def _exec(argv: tuple[str, ...]) -> Probe:
    async def run() -> str | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            return f"cannot run {argv[0]}: {exc.strerror}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"{argv[0]} ran over {PROBE_TIMEOUT_S:.0f} s"
        if proc.returncode == 0:
            return None
        tail = out.decode(errors="replace").strip().splitlines()[-1:] if out else []
        return f"{argv[0]} exited {proc.returncode}" + (f": {tail[0][:200]}" if tail else "")

    return run
