"""``virtpolicy start`` and ``stop``: groups of guests in dependency order, as a job;
``virtpolicy migrate``: running guests to another host, as a job of the daemon's.

In-process the CLI runs the job itself (and records it in the store); with
``--server`` the daemon runs it and the CLI follows it until it ends. Either
way the same progress, the same table and the same exit status: 0 when every
guest ended well, 1 otherwise. Interrupting a followed job leaves it running
in the daemon.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from virtpolicy.cli import output, progress
from virtpolicy.cli.app import App, Whole, cli, fail_usage, parse_labels, pass_app
from virtpolicy.cli.remote import RemoteService
from virtpolicy.engine.jobs.orchestrate import GuestResult
from virtpolicy.engine.jobs.run import JobRequest, local_run, parse_job_request, result_rows
from virtpolicy.engine.runtime import aio
from virtpolicy.errors import EXIT_CONFLICT
from virtpolicy.store.jobrecords import IN_FLIGHT

_FOLLOW_S = 0.25


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
            help="libvirt URI, in-process [$LIBVIRT_DEFAULT_URI, else qemu:///system]",
        ),
        click.Option(["--concurrency"], type=Whole(1, 256), default=8, show_default=True),
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
        if sum(map(bool, (guests, everything, labels))) != 1:
            raise fail_usage(f"{verb}: name guests, or give --all or --label, one of them")
        if app.server and connect:
            raise fail_usage("--connect: the daemon has its own connection; leave it out")
        selection: dict[str, Any] = {"action": verb, "concurrency": concurrency}
        if everything:
            selection["all"] = True
        elif labels:
            selection["labels"] = parse_labels(labels)
        else:
            selection["guests"] = list(guests)
        request = parse_job_request(selection)
        if dry_run:
            roots = (
                None
                if everything
                else [s.policy.guest for s in app.service.list_policies(request.labels)]
                if labels
                else list(guests)
            )
            waves = app.service.plan(verb, roots)
            click.echo(output.plan(waves, "json" if fmt == "json" else "table"), nl=False)
            return
        live = sys.stderr.isatty() and fmt == "table"
        if app.server:
            job = _follow(RemoteService(app.server, app.token), request, live)
        else:
            job = _in_process(app, request, connect, live)
        rows = result_rows(job)
        _report(rows, fmt)
        if job["state"] != "succeeded" or not all(r.ok for r in rows):
            raise SystemExit(1)

    doc = {
        "start": "Start GUESTS and what they depend on, each as soon as its dependencies are up.",
        "stop": "Stop GUESTS and, first, the guests that require them.",
    }[verb]
    return click.Command(verb, callback=run, params=_options(verb), help=doc)


def _in_process(app: App, request: JobRequest, connect: str | None, live: bool) -> dict[str, Any]:
    uri = connect or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
    with local_run(app.store, uri, request, app.actor) as run:
        job = run.record()
        with progress.display(request.action, job.guests, live) as show:
            return aio.run(run.run(show)).to_dict()


def _follow(service: RemoteService, request: JobRequest, live: bool) -> dict[str, Any]:
    """Submit the job to the daemon and show its progress until it ends."""
    job = service.submit(request.model_dump(exclude_defaults=True))
    seen: dict[str, str] = {}
    with progress.display(request.action, job["guests"], live) as show:
        try:
            while True:
                _news(job, seen, show)
                if job["state"] != "running":
                    return job
                time.sleep(_FOLLOW_S)
                job = service.job(job["id"])
        except KeyboardInterrupt:
            click.echo(
                f"job {job['id']} goes on in the daemon: virtpolicy jobs {job['id']}", err=True
            )
            raise SystemExit(130) from None


def _news(
    job: Mapping[str, Any], seen: dict[str, str], show: Callable[[str, str, str], None]
) -> None:
    """Pass on what changed since the last look at ``job``."""
    for r in job["results"]:
        if seen.get(r["guest"]) != r["result"]:
            seen[r["guest"]] = r["result"]
            show(r["guest"], r["result"], r["detail"])


def _report(results: Sequence[GuestResult], fmt: str) -> None:
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "guest": r.guest,
                        "host": r.host,
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
    rows = [
        [r.guest, r.host or "-", r.result, f"{r.seconds:.1f}s", r.detail or "-"] for r in results
    ]
    click.echo(output.table(["GUEST", "HOST", "RESULT", "TIME", "DETAIL"], rows), nl=False)


cli.add_command(_command("start"))
cli.add_command(_command("stop"))


@cli.command("migrate")
@click.argument("guests", nargs=-1, required=True)
@click.option("--to", "to", required=True, metavar="HOST", help="The host of the fleet to go to.")
@click.option("--dry-run", is_flag=True, help="Ask the destination only; move nothing.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def migrate_cmd(app: App, guests: tuple[str, ...], to: str, dry_run: bool, fmt: str) -> None:
    """Migrate running GUESTS live to host TO, one after another, their policies
    with them. The destination is asked first, as its daemon last published
    itself; when it refuses, nothing moves (exit status 3). Then each guest's
    own host has libvirt migrate it, peer to peer; the daemon runs the job."""
    request = parse_job_request({"action": "migrate", "guests": list(guests), "to": to})
    service = app.daemon("migrate", write=not dry_run)
    if dry_run:
        answers = [service.migration(g, to) for g in request.guests]
        if fmt == "json":
            click.echo(json.dumps(answers, indent=2))
        else:
            for a in answers:
                verdict = "allowed" if a["allowed"] else "refused: " + "; ".join(a["reasons"])
                click.echo(f"{a['guest']} to {to}: {verdict}")
        if not all(a["allowed"] for a in answers):
            raise SystemExit(EXIT_CONFLICT)
        return
    job = _follow(service, request, sys.stderr.isatty() and fmt == "table")
    rows = result_rows(job)
    _report(rows, fmt)
    if job["state"] != "succeeded" or not all(r.ok for r in rows):
        raise SystemExit(1)


@cli.command("jobs")
@click.argument("job_id", metavar="[ID]", type=Whole(1, 2**62), required=False)
@click.option("--limit", type=Whole(1, 1000), default=20, show_default=True)
@click.option(
    "--state",
    type=click.Choice(["running", "succeeded", "failed", "interrupted"]),
    help="Only jobs in this state.",
)
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def jobs_cmd(app: App, job_id: int | None, limit: int, state: str | None, fmt: str) -> None:
    """Start and stop jobs, newest first; with ID, one job guest by guest."""
    if job_id is not None:
        job = app.service.job(job_id)
        if fmt == "json":
            click.echo(json.dumps(job, indent=2))
            return
        click.echo(
            f"job {job['id']}: {job['action']}, {job['state']}"
            + (f": {job['detail']}" if job["detail"] else "")
        )
        click.echo(
            f"run by {job['actor']} through the {job['runner']} "
            f"(pid {job['process'].partition(':')[0]} on {job['host']}), "
            f"from {job['created_at']} to {job['finished_at'] or '-'}\n"
        )
        _report(result_rows(job), "table")
        return
    jobs = app.service.jobs(limit, state)
    if fmt == "json":
        click.echo(json.dumps(jobs, indent=2))
        return
    rows = [
        [
            j["id"],
            j["action"],
            j["state"],
            f"{_done(j)}/{len(j['guests'])}",
            ",".join(sorted(set(j.get("hosts", {}).values()))) or j["host"],
            j["runner"],
            j["actor"],
            j["created_at"],
            j["detail"] or "-",
        ]
        for j in jobs
    ]
    click.echo(
        output.table(
            ["ID", "ACTION", "STATE", "DONE", "HOSTS", "RUNNER", "ACTOR", "CREATED", "DETAIL"],
            rows,
        ),
        nl=False,
    )


def _done(job: Mapping[str, Any]) -> int:
    return sum(r["result"] not in IN_FLIGHT for r in job["results"])
