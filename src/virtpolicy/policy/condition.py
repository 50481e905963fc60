"""Dependency conditions: what it means for a guest to be "up".

``running`` (libvirt says the domain runs, the default), ``tcp:HOST:PORT``
(a TCP connection to HOST:PORT succeeds; an IPv6 HOST is written in brackets),
``exec:COMMAND`` (COMMAND exits 0; split like a shell would, but run without
one) and ``agent`` (the guest agent answers ``guest-ping``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from virtpolicy.errors import PolicyError
from virtpolicy.policy.numbers import ascii_int

Kind = Literal["running", "tcp", "exec", "agent"]
KINDS: tuple[Kind, ...] = ("running", "tcp", "exec", "agent")


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition. ``host``/``port`` for tcp, ``argv`` for exec."""

    kind: Kind
    host: str = ""
    port: int = 0
    argv: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"tcp:{host}:{self.port}"
        if self.kind == "exec":
            return "exec:" + shlex.join(self.argv)
        return self.kind


def parse_condition(text: str) -> Condition:
    """Parse a condition, raising :class:`PolicyError` that names the text."""
    kind, sep, rest = text.partition(":")
    if kind in ("running", "agent"):
        if sep:
            raise PolicyError(f'"{text}" is not a condition: {kind} takes no argument')
        return Condition(kind)  # type: ignore[arg-type]  # narrowed by the test above
    if kind == "tcp":
        return _parse_tcp(text, rest)
    if kind == "exec":
        try:
            argv = tuple(shlex.split(rest))
        except ValueError as exc:
            raise PolicyError(f'"{text}" is not a condition: {exc}') from exc
        if not argv:
            raise PolicyError(f'"{text}" is not a condition: exec needs a command')
        return Condition("exec", argv=argv)
    raise PolicyError(
        f'"{text}" is not a condition: unknown kind "{kind}" '
        "(running, tcp:HOST:PORT, exec:COMMAND, agent)"
    )


def normalize_condition(text: str) -> str:
    """The canonical spelling of a condition."""
    return str(parse_condition(text))


def _parse_tcp(text: str, rest: str) -> Condition:
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise PolicyError(f'"{text}" is not a condition: tcp needs HOST:PORT')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise PolicyError(f'"{text}" is not a condition: write an IPv6 host in brackets')
    if not host or any(c.isspace() for c in host):
        raise PolicyError(f'"{text}" is not a condition: "{host}" is not a host')
    port = ascii_int(port_text, max_digits=5)
    if port is None or not 1 <= port <= 65535:
        raise PolicyError(f'"{text}" is not a condition: port "{port_text}" is not 1-65535')
    return Condition("tcp", host=host, port=port)
