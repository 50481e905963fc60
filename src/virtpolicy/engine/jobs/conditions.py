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
import pwd
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from virtpolicy.errors import ConditionError, HypervisorError
from virtpolicy.policy.condition import Condition, parse_condition

#: One probe: None when the condition holds, else what was observed.
Probe = Callable[[], Awaitable[str | None]]

PROBE_TIMEOUT_S = 5.0
_FIRST_PAUSE_S = 0.05
_MAX_PAUSE_S = 2.0


class Commands:
    """Who runs ``exec:`` conditions, from where, and how often.

    In the daemon (:meth:`confined`) a command runs only if it is a file in
    ``directory`` (``conditions.exec_dir``, unset by default: ``exec:`` is
    refused until a host opts in), as the unprivileged ``user``, and the same
    command at most once per ``min_interval_s`` (a sooner probe gets the last
    answer). The CLI runs them as whoever runs the CLI (:meth:`as_caller`).
    """

    def __init__(
        self,
        *,
        enabled: bool,
        directory: str | None = None,
        user: str | None = None,
        min_interval_s: float = 0.0,
    ) -> None:
        self.enabled = enabled
        self.directory = directory
        self.user = user
        self.min_interval_s = min_interval_s
        self._last: dict[tuple[str, ...], tuple[float, str | None]] = {}

    @classmethod
    def as_caller(cls) -> Commands:
        return cls(enabled=True)

    @classmethod
    def confined(cls, directory: str | None, user: str, min_interval_s: float = 1.0) -> Commands:
        return cls(
            enabled=directory is not None,
            directory=directory,
            user=user,
            min_interval_s=min_interval_s,
        )

    def resolve(self, argv: tuple[str, ...]) -> tuple[str, ...] | str:
        """The argv to run, or why it may not run here."""
        if not self.enabled:
            return "exec: conditions are off on this host (set conditions.exec_dir to allow them)"
        if self.directory is None:
            return argv
        name = os.path.basename(argv[0])
        path = os.path.realpath(os.path.join(self.directory, name))
        inside = os.path.dirname(path) == os.path.realpath(self.directory)
        if argv[0] not in (name, os.path.join(self.directory, name)) or not inside:
            return f"{argv[0]} is not a command in {self.directory} (conditions.exec_dir)"
        if not os.access(path, os.X_OK):
            return f"{name}: no such command in {self.directory} (conditions.exec_dir)"
        return (path, *argv[1:])

    async def run(self, argv: tuple[str, ...]) -> str | None:
        """Run ``argv`` once, bounded in time: None if it exits 0, else what happened."""
        resolved = self.resolve(argv)
        if isinstance(resolved, str):
            return resolved
        last = self._last.get(argv)
        if last is not None and time.monotonic() - last[0] < self.min_interval_s:
            return last[1]
        observed = await _run(resolved, self.user)
        self._last[argv] = (time.monotonic(), observed)
        return observed


@dataclass(frozen=True, slots=True)
class Guests:
    """What probes need: blocking hypervisor calls (run off the loop) and who runs
    ``exec:`` commands."""

    is_running: Callable[[str], bool]
    agent_ping: Callable[[str], None]
    commands: Commands = field(default_factory=Commands.as_caller)


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
        argv = cond.argv

        async def command() -> str | None:
            return await guests.commands.run(argv)

        return command

    async def agent() -> str | None:
        try:
            await asyncio.to_thread(guests.agent_ping, guest)
        except HypervisorError as exc:
            return f"guest agent of {guest} does not answer: {exc}"
        return None

    return agent


async def wait_until(label: str, probe: Probe, timeout: float) -> None:
    """Repeat ``probe`` until it holds; ConditionError after ``timeout`` seconds."""
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
            raise ConditionError(f"{label}: {observed}, {attempts} over {elapsed:.0f} s")
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, _MAX_PAUSE_S)


def _tcp(host: str, port: int) -> Probe:
    async def tcp() -> str | None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                _reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        except socket.gaierror as exc:
            return f"cannot resolve {host}: {exc.strerror}"
        except (UnicodeError, ValueError) as exc:  # a name the resolver cannot encode
            return f"cannot resolve {host}: {exc}"
        except OSError as exc:
            # asyncio's "Connect call failed" carries only the errno.
            return os.strerror(exc.errno).lower() if exc.errno else str(exc)
        writer.close()
        with contextlib.suppress(OSError):  # the peer hung up first; the connect counted
            await writer.wait_closed()
        return None

    return tcp


async def _run(argv: tuple[str, ...], user: str | None) -> str | None:
    name = os.path.basename(argv[0])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd="/",
            user=user,
            group=_group_of(user),
            extra_groups=[] if user is not None else None,
        )
    except (OSError, KeyError, ValueError) as exc:
        return f"cannot run {name}: {getattr(exc, 'strerror', None) or exc}"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"{name} ran over {PROBE_TIMEOUT_S:.0f} s"
    if proc.returncode == 0:
        return None
    tail = out.decode(errors="replace").strip().splitlines()[-1:] if out else []
    return f"{name} exited {proc.returncode}" + (f": {tail[0][:200]}" if tail else "")


def _group_of(user: str | None) -> int | None:
    if user is None:
        return None
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        return None  # the spawn then fails naming the user
