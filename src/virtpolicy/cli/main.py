"""The ``virtpolicy`` command: entry point, global options, error handling.

Exit statuses: 0 ok, 1 operation failed, 2 bad usage or invalid policy,
3 conflict (a stale ``--if-revision``).
"""

from __future__ import annotations

import logging
import sys
from functools import cached_property

import click

from virtpolicy import __version__
from virtpolicy.config import default_db, local_actor
from virtpolicy.errors import EXIT_INVALID, VirtpolicyError
from virtpolicy.store import PolicyStore, open_store


class App:
    """What every command shares: the store (opened on first use) and the actor."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.actor = local_actor()

    @cached_property
    def store(self) -> PolicyStore:
        return open_store(self.db)


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    metavar="URL",
    help="Policy store: a SQLAlchemy URL or a SQLite file path "
    "[default: $VIRTPOLICY_DB, else /var/lib/virtpolicy/policies.db for root, "
    "else $XDG_DATA_HOME/virtpolicy/policies.db]",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what is done to standard error.")
@click.version_option(__version__, prog_name="virtpolicy")
@click.pass_context
def cli(ctx: click.Context, db: str | None, verbose: bool) -> None:
    """Policy manager for libvirt guests: CPU pinning, weight and cap, start
    dependencies and start/stop behaviour, every change a revision."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = App(db or default_db())


def main() -> None:
    """Run the CLI, turning virtpolicy errors into one line and an exit status."""
    from virtpolicy.cli import commands  # noqa: F401  (registers the commands)

    try:
        cli.main(standalone_mode=False, prog_name="virtpolicy")
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except VirtpolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)


def fail_usage(message: str) -> click.UsageError:
    """A usage error (exit status 2) with ``message``."""
    err = click.UsageError(message)
    err.exit_code = EXIT_INVALID
    return err
