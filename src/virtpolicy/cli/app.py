"""The ``virtpolicy`` command group: global options, shared state, errors.

Exit statuses: 0 ok, 1 operation failed, 2 bad usage or invalid policy,
3 conflict (a stale ``--if-revision``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

import click

from virtpolicy import __version__
from virtpolicy.errors import EXIT_INVALID, VirtpolicyError
from virtpolicy.places import default_db, local_actor

if TYPE_CHECKING:
    from virtpolicy.cli.remote import RemoteService
    from virtpolicy.cli.service import Service
    from virtpolicy.store import PolicyStore

#: Each command's module, imported when the command is asked for: a command
#: pays for its own imports only (``--version`` for none, a client command
#: never for the server).
COMMANDS = {
    "policy": "commands",
    "apply": "commands",
    "export": "commands",
    "plan": "commands",
    "status": "status",
    "hosts": "status",
    "host": "placement",
    "hook": "hooks",
    "start": "lifecycle",
    "stop": "lifecycle",
    "jobs": "lifecycle",
    "serve": "serve",
    "stats": "stats",
    "top": "stats",
    "tuners": "stats",
    "decisions": "stats",
    "token": "tokens",
}


class App:
    """What every command shares: the store (opened on first use) and the actor."""

    def __init__(self, db: str, server: str | None = None, token: str | None = None) -> None:
        self.db = db
        self.server = server
        self.token = token
        self.actor = local_actor()

    @cached_property
    def store(self) -> PolicyStore:
        from virtpolicy.store import open_store  # noqa: PLC0415  (see COMMANDS)

        return open_store(self.db)

    @cached_property
    def service(self) -> Service:
        """The daemon's API with --server, else the store in-process."""
        if self.server:
            from virtpolicy.cli.remote import RemoteService  # noqa: PLC0415

            return RemoteService(self.server, self.token)
        from virtpolicy.cli.service import LocalService  # noqa: PLC0415

        return LocalService(self.store, self.actor)

    def daemon(self, what: str) -> RemoteService:
        """The daemon's API: --server, else the local daemon's read-only socket."""
        from virtpolicy.cli.remote import RemoteService, local_daemon  # noqa: PLC0415

        if self.server:
            return RemoteService(self.server, self.token)
        return local_daemon(what)


pass_app = click.make_pass_decorator(App)


class CommandError(click.ClickException):
    """A virtpolicy error on its way out: one line on stderr and its exit status."""

    def __init__(self, error: VirtpolicyError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class Group(click.Group):
    """A command group that loads its commands when asked for them (:data:`COMMANDS`)
    and reports :class:`VirtpolicyError` as a one-line error."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"virtpolicy.cli.{COMMANDS[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VirtpolicyError as exc:
            raise CommandError(exc) from exc


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--db",
    metavar="URL",
    help="Policy store: a SQLAlchemy URL or a SQLite file path "
    "[default: $VIRTPOLICY_DB, else /var/lib/virtpolicy/policies.db for root, "
    "else $XDG_DATA_HOME/virtpolicy/policies.db]",
)
@click.option(
    "--server",
    metavar="URL|SOCKET",
    envvar="VIRTPOLICY_SERVER",
    help="Go through the daemon's API: a Unix socket path or an https:// URL.",
)
@click.option(
    "--token",
    envvar="VIRTPOLICY_TOKEN",
    metavar="TOKEN",
    help="Bearer token for an https:// server.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what is done to standard error.")
@click.version_option(__version__, prog_name="virtpolicy")
@click.pass_context
def cli(
    ctx: click.Context, db: str | None, server: str | None, token: str | None, verbose: bool
) -> None:
    """Policy manager for libvirt guests: CPU pinning, weight and cap, start
    dependencies and start/stop behaviour, every change a revision."""
    import logging  # noqa: PLC0415  (not for --version, which ends before this)

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = App(db or default_db(), server, token)


def parse_labels(specs: Sequence[str], option: str = "--label") -> dict[str, str]:
    """``KEY=VALUE`` options as a mapping; a usage error (exit 2) names a bad one."""
    selected = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise fail_usage(f'{option}: "{spec}" is not KEY=VALUE')
        selected[key] = value
    return selected


def fail_usage(message: str) -> click.UsageError:
    """A usage error (exit status 2) with ``message``."""
    err = click.UsageError(message)
    err.exit_code = EXIT_INVALID  # type: ignore[misc]  # click reads it per instance
    return err
