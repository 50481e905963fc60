"""A running guest's balloon, as libvirt's status of the domain records it.

libvirt keeps ``/run/libvirt/qemu/NAME.xml`` (the status of each running
domain) current from QEMU's balloon events: the same figures its bulk call
gives as ``balloon.current`` and ``balloon.maximum``. A local sampler reads
them from there, on the balloon's cadence, and only when libvirt rewrote the
file, instead of asking libvirtd.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Balloon:
    """The balloon as libvirt's status of the running guest records it (libvirt
    keeps it current from QEMU's balloon events: the figures its bulk call gives
    as ``balloon.current`` and ``balloon.maximum``), and the balloon driver's
    statistics period: with none set, QEMU has no figures of the guest's own."""

    current_kib: int | None
    maximum_kib: int | None
    period: int
    #: libvirt's long job on the guest ("migration out", "save", ...; "" none)
    #: and whether huge pages back its memory (a balloon frees none of them).
    job: str = ""
    hugepages: bool = False


_UNITS = {b"b": 1, b"bytes": 1, b"KiB": 1024, b"k": 1024, b"MiB": 1 << 20, b"M": 1 << 20}
_UNITS |= {b"GiB": 1 << 30, b"G": 1 << 30}
_MAXIMUM = re.compile(rb"<memory unit='(\w+)'>(\d+)</memory>")
_CURRENT = re.compile(rb"<currentMemory unit='(\w+)'>(\d+)</currentMemory>")
_PERIOD = re.compile(rb"<stats period='(\d+)'")
_JOB = re.compile(rb"<job [^>]*async='([^']+)'")


def read_balloon(path: str | Path, known: tuple[int, Balloon] | None) -> tuple[int, Balloon] | None:
    """(the file's mtime, the balloon) from libvirt's status at ``path``, read
    again only when libvirt rewrote it (``known`` otherwise); None when it cannot
    be read."""
    try:
        mtime = os.stat(path).st_mtime_ns
        if known is not None and known[0] == mtime:
            return known
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:  # in one read (about 10 KB), not through a file object
            text = os.read(fd, os.fstat(fd).st_size + 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    return mtime, _balloon(text)


def _balloon(text: bytes) -> Balloon:
    """The balloon from a status's text. The domain's own XML ends the status,
    after libvirt's records of it: QEMU's capabilities (most of the file), then
    the job. Each is found from the end, and each figure looked for where it is
    (the job between the two), not in the whole file."""
    domain = max(0, text.rfind(b"<domain"))
    start = text.find(b"<memballoon", domain)
    end = text.find(b"</memballoon>", start)
    period = _PERIOD.search(text, start, end) if start >= 0 and end >= 0 else None
    at = text.find(b"<job ", max(0, text.rfind(b"</qemuCaps>", 0, domain)), domain)
    job = _JOB.match(text, at, domain) if at >= 0 else None
    return Balloon(
        current_kib=_kib(_CURRENT.search(text, domain)),
        maximum_kib=_kib(_MAXIMUM.search(text, domain)),
        period=int(period.group(1)) if period else 0,
        job=job.group(1).decode(errors="replace") if job else "",
        hugepages=text.find(b"<hugepages", domain) >= 0,
    )


def _kib(found: re.Match[bytes] | None) -> int | None:
    if found is None or found.group(1) not in _UNITS:
        return None
    return int(found.group(2)) * _UNITS[found.group(1)] // 1024
