"""The ``virtpolicy`` command group: global options, shared state, errors.

Exit statuses: 0 ok, 1 operation failed, 2 bad usage or invalid policy,
3 conflict (a stale ``--if-revision``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

import click

from virtpolicy import __version__
from virtpolicy.errors import EXIT_INVALID, VirtpolicyError
from virtpolicy.places import default_db, local_actor
from virtpolicy.policy.numbers import ascii_int
from virtpolicy.policy.text import bad_text, quoted

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
    "migrate": "lifecycle",
    "serve": "serve",
    "setup": "setup",
    "doctor": "doctor",
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

    def daemon(self, what: str, *, write: bool = False) -> RemoteService:
        """The daemon's API: --server, else the local daemon's read-only socket
        (``write``: its read-write one)."""
        from virtpolicy.cli.remote import RemoteService, local_daemon  # noqa: PLC0415

        if self.server:
            return RemoteService(self.server, self.token)
        return local_daemon(what, write=write)


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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Python reads an argument that is not UTF-8 with its bytes as lone
        # surrogates ("\udcff"), which nothing can store or send: refuse it here,
        # for every command, before any of them sees it.
        if ctx.parent is None:
            for number, arg in enumerate(args, start=1):
                if bad_text(arg) is not None:
                    shown = _as_read(arg)
                    raise fail_usage(f"argument {number} ({quoted(shown)}) is not UTF-8 text")
        return super().parse_args(ctx, args)


def _as_read(arg: str) -> str:
    """An argument that is not text as a terminal shows it (U+FFFD for bad bytes)."""
    try:
        raw = arg.encode("utf-8", "surrogateescape")  # bytes that were not UTF-8
    except UnicodeEncodeError:
        raw = arg.encode("utf-8", "surrogatepass")  # a surrogate given as one
    return raw.decode("utf-8", "replace")


class Whole(click.ParamType[int, Any]):
    """A whole number in ASCII digits, optionally within [``low``, ``high``]: the
    model's own rule (``int()`` also takes "٣٠٠", " 7 " and "1_000")."""

    name = "integer"

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number: int | None = value
        else:
            number = ascii_int(str(value).removeprefix("-"))
            if number is not None and str(value).startswith("-"):
                number = -number
        if number is None:
            self.fail(f"{quoted(str(value))} is not a whole number in digits 0-9", param, ctx)
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            bounds = f"{self.low if self.low is not None else ''}-{self.high or ''}"
            self.fail(f"{number} is not in the range {bounds}", param, ctx)
        return number


class Seconds(click.ParamType[float, Any]):
    """A number of seconds in ASCII digits, with a fraction if need be (``0.5``)."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        if not _SECONDS.fullmatch(str(value)):
            self.fail(
                f"{quoted(str(value))} is not a number of seconds (e.g. 30 or 0.5)", param, ctx
            )
        return float(value)


_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?", re.ASCII)


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


#: ``--hook-failure``, for every command that writes the hook.
hook_failure_option = click.option(
    "--hook-failure",
    type=click.Choice(["open", "closed"]),
    default="open",
    show_default=True,
    help="When the daemon does not answer the hook: allow the start (open) or refuse it.",
)
