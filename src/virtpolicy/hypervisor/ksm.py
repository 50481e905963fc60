"""The kernel's same-page merging (KSM), run while the host needs memory.

KSM merges identical pages of guests' memory; it costs CPU to scan, so it
runs only while the host needs memory back: ``run`` on, and ``pages_to_scan``
raised by a step each round of need (up to a ceiling) and lowered each round
without, until at the floor KSM stops. The values found at start are put back
when the daemon exits: a host that ran KSM its own way is left as it was.

Blocking (sysfs writes): worker threads only.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: pages_to_scan: the floor it starts from and falls back to, its ceiling, and
#: the steps per round with need and without.
SCAN_FLOOR, SCAN_CEILING = 100, 1000
SCAN_UP, SCAN_DOWN = 200, 100


class Ksm:
    """KSM's controls under ``directory`` (``/sys/kernel/mm/ksm``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        #: (run, pages_to_scan) as found; None: KSM cannot be read here.
        self.found: tuple[int, int] | None = None
        try:
            self.found = (self._read("run"), self._read("pages_to_scan"))
        except (OSError, ValueError) as exc:
            log.warning("KSM: cannot read %s: %s; left alone", self.directory, exc)
        self._scan = SCAN_FLOOR
        self._running = False
        self._touched = False

    def adjust(self, need: bool) -> str | None:
        """One round: faster while the host needs memory, slower and then off
        without; what changed, as one line (None: nothing)."""
        if self.found is None:
            return None
        if need:
            scan = SCAN_FLOOR if not self._running else min(SCAN_CEILING, self._scan + SCAN_UP)
        elif not self._running:
            return None
        else:
            scan = self._scan - SCAN_DOWN
        running = need or scan >= SCAN_FLOOR
        scan = max(SCAN_FLOOR, scan)
        if (running, scan) == (self._running, self._scan):
            return None
        self._touched = True
        self._write("pages_to_scan", scan)
        self._write("run", 1 if running else 0)
        self._running, self._scan = running, scan
        if not running:
            return "KSM stopped: the host no longer needs memory"
        return f"KSM running, scanning {scan} pages at a time: the host needs memory"

    def restore(self) -> None:
        """Put back what was found (at exit)."""
        if self.found is None or not self._touched:
            return
        run, scan = self.found
        try:
            self._write("pages_to_scan", scan)
            self._write("run", run)
        except OSError as exc:
            log.warning("KSM: cannot restore %s: %s", self.directory, exc)

    def _read(self, name: str) -> int:
        return int((self.directory / name).read_text().strip())

    def _write(self, name: str, value: int) -> None:
        (self.directory / name).write_text(f"{value}\n")
