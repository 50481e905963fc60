"""Dependency conditions: what it means for a guest to be "up".

``running`` (libvirt says the domain runs, the default), ``tcp:HOST:PORT``
(a TCP connection to HOST:PORT succeeds; HOST is a DNS name in ASCII, an IPv4
address, or an IPv6 address in brackets), ``exec:COMMAND`` (COMMAND exits 0;
split like a shell would, but run without one) and ``agent`` (the guest agent
answers ``guest-ping``).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Literal

from virtpolicy.errors import PolicyError
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.policy.text import quoted

Kind = Literal["running", "tcp", "exec", "agent"]
KINDS: tuple[Kind, ...] = ("running", "tcp", "exec", "agent")

#: One label of a DNS name (RFC 1035, with RFC 2181's underscore): no dot, no
#: outer hyphen, 1-63 ASCII characters.
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)", re.ASCII)
_DNS_NAME_MAX = 253
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
            raise _refused(text, f"{kind} takes no argument")
        return Condition(kind)  # type: ignore[arg-type]  # narrowed by the test above
    if kind == "tcp":
        return _parse_tcp(text, rest)
    if kind == "exec":
        try:
            argv = tuple(shlex.split(rest))
        except ValueError as exc:
            raise _refused(text, str(exc)) from exc
        if not argv:
            raise _refused(text, "exec needs a command")
        if any(_CONTROL.search(arg) for arg in argv):
            raise _refused(text, "control characters in the command")
        return Condition("exec", argv=argv)
    raise _refused(
        text, f"unknown kind {quoted(kind)} (running, tcp:HOST:PORT, exec:COMMAND, agent)"
    )


def normalize_condition(text: str) -> str:
    """The canonical spelling of a condition."""
    return str(parse_condition(text))


def _parse_tcp(text: str, rest: str) -> Condition:
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise _refused(text, "tcp needs HOST:PORT")
    port = ascii_int(port_text, max_digits=5)
    if port is None or not 1 <= port <= 65535:
        raise _refused(text, f"port {quoted(port_text)} is not 1-65535")
    return Condition("tcp", host=_host(text, host), port=port)


def _host(text: str, host: str) -> str:
    """A DNS name as written, or an IP address in its canonical spelling; whatever
    is refused here would fail (or worse, raise) when the daemon resolves it."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise _refused(text, f"{quoted(host)} in brackets is not an IPv6 address") from None
    if ":" in host:
        raise _refused(text, "write an IPv6 host in brackets")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    name = host.removesuffix(".")
    labels = name.split(".")
    if (
        not name
        or len(name) > _DNS_NAME_MAX
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()  # 1.2.3.999 is a bad address, not a name
    ):
        raise _refused(
            text,
            f"{quoted(host)} is neither a DNS name (ASCII letters, digits, '-' and '_' "
            "in dot-separated labels of 1-63) nor an IP address",
        )
    return host


def _refused(text: str, why: str) -> PolicyError:
    return PolicyError(f"{quoted(text, 200)} is not a condition: {why}")
