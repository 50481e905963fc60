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
        [h["name"], h["state"], h["uri"], h["guests"], h["running"], f"{h['heartbeat_age_s']}s ago"]
        for h in rows
    ]
    click.echo(
        output.table(["NAME", "STATE", "URI", "GUESTS", "RUNNING", "HEARTBEAT"], table), nl=False
    )
