"""``virtpolicy hook install|uninstall``."""

from __future__ import annotations

import click

from virtpolicy.cli.app import cli, hook_failure_option
from virtpolicy.hook.install import install, uninstall
from virtpolicy.places import default_run_dir


@cli.group()
def hook() -> None:
    """libvirt's hook: ask virtpolicy before a guest starts."""


@hook.command("install")
@click.option("--hooks-dir", default="/etc/libvirt/hooks", show_default=True, metavar="DIR")
@click.option("--run-dir", metavar="DIR", help="Where the daemon's sockets are [/run/virtpolicy].")
@hook_failure_option
def hook_install(hooks_dir: str, run_dir: str | None, hook_failure: str) -> None:
    """Install the hook (an existing one is kept and run first)."""
    for line in install(hooks_dir, run_dir or default_run_dir(), hook_failure):
        click.echo(line)


@hook.command("uninstall")
@click.option("--hooks-dir", default="/etc/libvirt/hooks", show_default=True, metavar="DIR")
def hook_uninstall(hooks_dir: str) -> None:
    """Remove the hook and put back the one it chained to."""
    for line in uninstall(hooks_dir):
        click.echo(line)
