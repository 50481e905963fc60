"""``virtpolicy setup``: the unit, the hook, the group, the user and the settings
file, for a host that installs virtpolicy without the package."""

from __future__ import annotations

from pathlib import Path

import click

from virtpolicy.cli.app import cli, hook_failure_option
from virtpolicy.system import setup as host


@cli.command("setup")
@click.option(
    "--root",
    default="/",
    show_default=True,
    metavar="DIR",
    type=click.Path(file_okay=False, exists=True),
    help="Put everything under DIR instead (an image, a scratch tree).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--uninstall", is_flag=True, help="Take away what setup put in place, and only that.")
@hook_failure_option
def setup(root: str, dry_run: bool, uninstall: bool, hook_failure: str) -> None:
    """Install the systemd unit (starting this virtpolicy), the hook as a drop-in
    (/etc/libvirt/hooks/qemu.d/virtpolicy: another hook stays where it is), the
    group whose members may use the read-write socket, the user that runs exec:
    conditions, and a settings file. What is there already is left as it is;
    running it again changes nothing."""
    where = Path(root).absolute()
    done = (
        host.uninstall(where, dry_run=dry_run)
        if uninstall
        else host.setup(where, dry_run=dry_run, hook_failure=hook_failure)
    )
    for line in done:
        click.echo(line)
