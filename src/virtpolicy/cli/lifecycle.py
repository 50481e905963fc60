"""``virtpolicy start`` and ``stop``: groups of guests in dependency order."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import click

from virtpolicy.cli import output
from virtpolicy.cli.app import App, cli, fail_usage, parse_labels, pass_app
from virtpolicy.engine import aio
from virtpolicy.engine.orchestrate import GuestResult, Orchestrator, Progress
from virtpolicy.hypervisor.connection import Hypervisor


def _options(verb: str) -> list[click.Parameter]:
    return [
        click.Argument(["guests"], nargs=-1),
        click.Option(
            ["--all", "everything"],
            is_flag=True,
            help=f"{verb.capitalize()} every guest with a policy.",
        ),
        click.Option(
            ["--label", "-l", "labels"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Guests with this label.",
        ),
        click.Option(
            ["--connect"],
            metavar="URI",
            help="libvirt URI [$LIBVIRT_DEFAULT_URI, else qemu:///system]",
        ),
        click.Option(["--concurrency"], type=click.IntRange(1, 256), default=8, show_default=True),
        click.Option(["--dry-run"], is_flag=True, help="Print the plan; change nothing."),
        click.Option(
            ["-o", "--output", "fmt"], type=click.Choice(["table", "json"]), default="table"
        ),
    ]


def _command(verb: str) -> click.Command:
    @pass_app
    def run(
        app: App,
        guests: tuple[str, ...],
        everything: bool,
        labels: tuple[str, ...],
        connect: str | None,
        concurrency: int,
        dry_run: bool,
        fmt: str,
    ) -> None:
        if app.server:
            raise fail_usage(f"{verb} runs in-process for now: leave out --server")
        if sum(map(bool, (guests, everything, labels))) != 1:
            raise fail_usage(f"{verb}: name guests, or give --all or --label, one of them")
        policies = {s.policy.guest: s.policy for s in app.store.list_policies()}
        roots = None if everything else list(guests)
        if labels:  # the store selects by label
            roots = [s.policy.guest for s in app.store.list_policies(parse_labels(labels))]
        uri = connect or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
        hypervisor = Hypervisor(uri)
        hypervisor.open()
        live = sys.stdout.isatty() and fmt == "table"
        orchestrator = Orchestrator(hypervisor, policies, concurrency, progress=_printer(live))
        try:
            if dry_run:
                waves = (
                    orchestrator.start_plan(roots)
                    if verb == "start"
                    else orchestrator.stop_plan(roots)
                )
                click.echo(output.plan(waves, "json" if fmt == "json" else "table"), nl=False)
                return
            action = orchestrator.start if verb == "start" else orchestrator.stop
            results = aio.run(action(roots))
        finally:
            hypervisor.close()
        _report(results, fmt)
        if not all(r.ok for r in results):
            raise SystemExit(1)

    doc = {
        "start": "Start GUESTS and what they depend on, each as soon as its dependencies are up.",
        "stop": "Stop GUESTS and, first, the guests that require them.",
    }[verb]
    return click.Command(verb, callback=run, params=_options(verb), help=doc)


def _printer(live: bool) -> Progress:
    def show(guest: str, event: str, detail: str) -> None:
        if live or event not in ("starting", "stopping"):
            click.echo(f"{guest}: {event}" + (f": {detail}" if detail else ""), err=True)

    return show


def _report(results: Sequence[GuestResult], fmt: str) -> None:
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "guest": r.guest,
                        "result": r.result,
                        "seconds": round(r.seconds, 3),
                        "detail": r.detail,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
        return
    rows = [[r.guest, r.result, f"{r.seconds:.1f}s", r.detail or "-"] for r in results]
    click.echo(output.table(["GUEST", "RESULT", "TIME", "DETAIL"], rows), nl=False)


cli.add_command(_command("start"))
cli.add_command(_command("stop"))
