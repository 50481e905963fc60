"""``virtpolicy status``: what the daemon sees, without importing the policy model."""

from __future__ import annotations

import json

import click

from virtpolicy.cli import output
from virtpolicy.cli.app import App, cli, pass_app


@cli.command("status")
@click.argument("guest", required=False)
@click.option("--host", "host", metavar="NAME", help="Only the guests of this host.")
@click.option(
    "-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table"
)
@pass_app
def status_cmd(app: App, guest: str | None, host: str | None, fmt: str) -> None:
    """Desired vs actual tuning, drift and problems of every guest in the fleet, as
    each host's daemon last checked them."""
    statuses = app.service.status(guest, host)
    if fmt == "json":
        click.echo(json.dumps(statuses, indent=2))
    elif fmt == "yaml":
        import yaml  # noqa: PLC0415

        click.echo(yaml.safe_dump(statuses, sort_keys=False), nl=False)
    else:
        click.echo(output.status(statuses), nl=False)
        for h in app.service.hosts():
            note = _clock_note(h.get("clock_offset_s", 0.0))
            if note:
                click.echo(f"note: host {h['name']}: {note}", err=True)


def _clock_note(offset: float) -> str:
    """How far a host's clock is from the store's, where that is over a second."""
    if abs(offset) <= CLOCK_NOTE_S:
        return ""
    return f"clock {abs(offset):.1f}s {'ahead of' if offset > 0 else 'behind'} the store's"


#: A host's clock further than this from the store's is pointed out.
CLOCK_NOTE_S = 1.0


@cli.command("hosts")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def hosts_cmd(app: App, fmt: str) -> None:
    """The hosts sharing the store: up, lost (three heartbeats missed) or left."""
    rows = app.service.hosts()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = [
        [
            h["name"],
            h["state"],
            h["uri"],
            h["guests"],
            h["running"],
            " ".join(
                [f"{h['heartbeat_age_s']}s ago"]
                + [f"({n})" for n in [_clock_note(h.get("clock_offset_s", 0.0))] if n]
            ),
        ]
        for h in rows
    ]
    click.echo(
        output.table(["NAME", "STATE", "URI", "GUESTS", "RUNNING", "HEARTBEAT"], table), nl=False
    )
