"""Progress of a start or stop job while it runs.

On a terminal: a live display (rich) with a spinner, how many guests are
done, and each guest in progress with its time so far; every guest that
finishes is printed above it. Otherwise: one plain line per finished guest.
Both go to standard error; the result table goes to standard output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from virtpolicy.store.jobrecords import FAILED, IN_FLIGHT, Result

_STYLE: dict[str, str] = {
    Result.STARTED: "green",
    Result.STOPPED: "green",
    Result.MIGRATED: "green",
    Result.ALREADY_RUNNING: "green",
    Result.ALREADY_STOPPED: "green",
    Result.FAILED: "red",
    Result.HELD_BACK: "yellow",
    Result.REFUSED: "red",
    Result.DESTROYED_AFTER_TIMEOUT: "yellow",
}


class Plain:
    """One line per finished guest on standard error."""

    def __init__(self, verb: str, guests: Sequence[str]) -> None:
        self.verb = verb

    def __call__(self, guest: str, event: str, detail: str) -> None:
        if event not in IN_FLIGHT:
            click.echo(f"{guest}: {event}" + (f": {detail}" if detail else ""), err=True)

    def __enter__(self) -> Plain:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


class LiveDisplay:
    """A live display of a job's guests on a terminal."""

    def __init__(self, verb: str, guests: Sequence[str], file: TextIO | None = None) -> None:
        self.verb = verb
        self.total = len(guests)
        self.done = 0
        self.failed = 0
        self.moving: dict[str, tuple[float, str, str]] = {}  # guest -> (since, event, detail)
        self._t0 = time.monotonic()
        self.console = Console(file=file, stderr=file is None)
        self._spinner = Spinner("dots")
        self._live = Live(
            self,  # rendered through __rich__ on every refresh
            console=self.console,
            refresh_per_second=8,
            transient=True,
        )

    def __call__(self, guest: str, event: str, detail: str) -> None:
        now = time.monotonic()
        if event in IN_FLIGHT:
            self.moving[guest] = (now, event, detail)
            return
        began = self.moving.pop(guest, (None,))[0]
        self.done += 1
        self.failed += event in FAILED
        line = Text(f"{guest}: ")
        line.append(event, style=_STYLE.get(event, ""))
        if detail:
            line.append(f": {detail}")
        if began is not None:
            line.append(f" ({now - began:.1f}s)", style="dim")
        self._live.console.print(line)

    def __rich__(self) -> RenderableType:
        now = time.monotonic()
        head = Text.assemble(
            f" {self.verb} ",
            (f"{self.done}/{self.total}", "bold"),
            " done",
            (f", {self.failed} not ok" if self.failed else "", "red"),
            f", {len(self.moving)} in progress",
            (f"  {now - self._t0:.1f}s", "dim"),
        )
        self._spinner.text = head
        rows = Table.grid(padding=(0, 2))
        for guest, (since, event, detail) in sorted(self.moving.items(), key=lambda kv: kv[1]):
            rows.add_row(f"  {guest}", event, f"{now - since:.1f}s", detail)
        return Group(self._spinner, rows)

    def __enter__(self) -> LiveDisplay:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()


def display(verb: str, guests: Sequence[str], live: bool) -> Plain | LiveDisplay:
    return LiveDisplay(verb, guests) if live else Plain(verb, guests)
