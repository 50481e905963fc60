"""libvirt's cpuset syntax: ``0-3,^2,8``.

A cpuset is a comma-separated list of items, read left to right: ``N`` adds a
CPU, ``N-M`` adds a range, ``^N`` (or ``^N-M``) removes what earlier items
added. This follows libvirt's own bitmap parser, which also applies items in
order, so ``^2,0-3`` selects 2 again. Blanks around items are allowed.

:func:`format_cpuset` writes the canonical form (ascending, ranges merged, no
exclusions), and ``format_cpuset(parse_cpuset(s))`` is what virtpolicy stores,
so a policy has exactly one spelling of each set.
"""

from __future__ import annotations

from collections.abc import Iterable

from virtpolicy.errors import CpusetError

#: CPU numbers must be below this: libvirt's ``VIR_DOMAIN_CPUMASK_LEN``.
MAX_CPUS = 16384
#: The longest cpuset text read: room for a list of a few hundred CPUs one by
#: one, while a request cannot make the parser work for long.
MAX_CPUSET_CHARS = 4096


def parse_cpuset(text: str) -> frozenset[int]:
    """Parse ``text`` into the set of CPU numbers it selects.

    Raises :class:`CpusetError` naming the text, the reason and the position
    (0-based character offset) of the first problem. A set that selects no CPU
    at all is an error: libvirt rejects an empty pinning.

    The set is kept as a bitmap (an int), so each item costs the same whatever
    its range, and the text is at most :data:`MAX_CPUSET_CHARS` long.
    """
    mask = 0
    pos = 0
    end = len(text)
    if end > MAX_CPUSET_CHARS:
        raise CpusetError(
            text[:40] + "...", f"{end} characters is over the limit of {MAX_CPUSET_CHARS}", 0
        )
    if not text.strip():
        raise CpusetError(text, "it is empty", 0)
    while True:
        pos = _skip_blanks(text, pos)
        negate = pos < end and text[pos] == "^"
        if negate:
            pos += 1
        first, pos = _read_number(text, pos)
        last = first
        pos = _skip_blanks(text, pos)
        if pos < end and text[pos] == "-":
            dash = pos
            pos = _skip_blanks(text, pos + 1)
            if pos >= end or not "0" <= text[pos] <= "9":
                raise CpusetError(text, "range has no end", pos if pos < end else dash + 1)
            last, pos = _read_number(text, pos)
            if last < first:
                raise CpusetError(text, f"range {first}-{last} runs backwards", dash)
        span = ((1 << (last - first + 1)) - 1) << first
        mask = mask & ~span if negate else mask | span
        pos = _skip_blanks(text, pos)
        if pos >= end:
            break
        if text[pos] != ",":
            raise CpusetError(text, f"unexpected {text[pos]!r}", pos)
        pos += 1
    if not mask:
        raise CpusetError(text, "it selects no CPU", 0)
    return frozenset(_bits(mask))


def _bits(mask: int) -> Iterable[int]:
    cpu = 0
    while mask:
        low = (mask & -mask).bit_length() - 1  # the lowest CPU left
        mask >>= low
        cpu += low
        run = (~mask & (mask + 1)).bit_length() - 1  # how many CPUs in a row from there
        yield from range(cpu, cpu + run)
        mask >>= run
        cpu += run


def format_cpuset(cpus: Iterable[int]) -> str:
    """Write ``cpus`` in canonical form: ascending, consecutive CPUs as ranges."""
    ordered = sorted(set(cpus))
    if not ordered:
        raise ValueError("an empty set of CPUs has no cpuset spelling")
    parts: list[str] = []
    start = prev = ordered[0]
    for cpu in ordered[1:]:
        if cpu == prev + 1:
            prev = cpu
            continue
        parts.append(_span(start, prev))
        start = prev = cpu
    parts.append(_span(start, prev))
    return ",".join(parts)


class CpuSet(str):
    """A cpuset read once: its canonical text (stored, shown, and libvirt's own
    syntax) is the string itself, and its host CPUs are :attr:`cpus`, parsed when
    the policy was validated, never again on each pass."""

    cpus: frozenset[int]

    def __new__(cls, text: str) -> CpuSet:
        cpus = parse_cpuset(text)
        made = super().__new__(cls, format_cpuset(cpus))
        made.cpus = cpus
        return made


def cpus_in(text: str) -> frozenset[int]:
    """The host CPUs of a cpuset: as read once (a :class:`CpuSet`), else parsed."""
    return text.cpus if isinstance(text, CpuSet) else parse_cpuset(text)


def normalize_cpuset(text: str) -> str:
    """Return the canonical spelling of ``text`` (parse, then format)."""
    return format_cpuset(parse_cpuset(text))


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _read_number(text: str, pos: int) -> tuple[int, int]:
    start = pos
    while pos < len(text) and "0" <= text[pos] <= "9":
        pos += 1
    if pos == start:
        if start >= len(text):
            raise CpusetError(text, "expected a CPU number, found the end", start)
        raise CpusetError(text, f"expected a CPU number, found {text[start]!r}", start)
    if pos - start > 6 or int(text[start:pos]) >= MAX_CPUS:
        raise CpusetError(
            text, f"CPU {text[start:pos]} is beyond libvirt's limit of {MAX_CPUS} CPUs", start
        )
    return int(text[start:pos]), pos
