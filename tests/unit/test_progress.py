"""The live progress display of start and stop jobs, rendered to a string."""

from __future__ import annotations

import io

from rich.console import Console

from virtpolicy.cli.progress import LiveDisplay


def render(display: LiveDisplay) -> str:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(display.__rich__())
    return out.getvalue()


def test_live_display_counts_and_lists_guests_in_progress() -> None:
    """Live display counts and lists guests in progress."""
    out = io.StringIO()
    display = LiveDisplay("start", ["db", "api", "web"], file=out)
    with display:
        display("db", "starting", "")
        display("api", "waiting", "for db (tcp:db:5432)")
        shown = render(display)
        assert "start 0/3 done, 2 in progress" in shown
        assert [line.split() for line in shown.splitlines()[1:]] == [
            ["db", "starting", "0.0s"],
            ["api", "waiting", "0.0s", "for", "db", "(tcp:db:5432)"],
        ]
        display("db", "started", "")
        display("api", "failed", "api: no such guest")
        shown = render(display)
        assert "start 2/3 done, 1 not ok, 0 in progress" in shown
    printed = out.getvalue()
    assert "db: started (" in printed
    assert "api: failed: api: no such guest (" in printed
