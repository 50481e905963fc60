"""``virtpolicy doctor``: what is off on this host, with the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from virtpolicy.cli.app import cli
from virtpolicy.config import load_serve_settings
from virtpolicy.system.doctor import Where, run

SETTINGS = "/etc/virtpolicy/virtpolicy.toml"


@cli.command("doctor")
@click.option(
    "--config", "config_file", metavar="FILE",
    help=f"The daemon's settings [default: {SETTINGS} where it exists].",
)  # fmt: skip
@click.option("--connect", metavar="URI", help="libvirt URI [default: the settings'].")
@click.option("--db", "db", metavar="URL", help="The store [default: the settings'].")
@click.option("--run-dir", metavar="DIR", help="The daemon's sockets [default: the settings'].")
@click.option("--host", metavar="NAME", help="This host in the fleet [default: the settings'].")
@click.option(
    "--hooks-dir", default="/etc/libvirt/hooks", show_default=True, metavar="DIR",
    help="libvirt's hooks folder.",
)  # fmt: skip
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
def doctor(
    config_file: str | None,
    connect: str | None,
    db: str | None,
    run_dir: str | None,
    host: str | None,
    hooks_dir: str,
    fmt: str,
) -> None:
    """Check this host, one line each, with the fix where something needs doing:
    libvirtd and its version, the hook and whether libvirtd has heard it, the
    daemon and its sockets, the store and its schema, cgroups, the fleet
    (heartbeats, clocks, hosts lost) and placement. Reads only. Exit status 0
    when all is well, 1 when something needs doing."""
    if config_file is None and os.path.exists(SETTINGS):
        config_file = SETTINGS
    flags = {"connect": connect, "db": db, "run_dir": run_dir, "host": host}
    settings = load_serve_settings(config_file, flags)
    checks = run(Where(settings, Path(hooks_dir)))
    if fmt == "json":
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for check in checks:
            click.echo(check.line())
    if not all(c.ok for c in checks):
        raise SystemExit(1)
