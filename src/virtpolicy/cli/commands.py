"""The commands: ``policy ...``, ``apply``, ``export`` and ``plan``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from virtpolicy.cli import output
from virtpolicy.cli.app import App, Whole, cli, fail_usage, parse_labels, pass_app
from virtpolicy.errors import EXIT_FAILED, NotFoundError

if TYPE_CHECKING:
    from virtpolicy.engine.changes import Result
    from virtpolicy.store.base import BrokenPolicy

# The policy model (pydantic) and YAML are imported by the commands that use
# them: `policy get` through the daemon needs neither (see bench/README.md).

_OUTPUT = click.Choice(output.FORMATS)
ACTIONS = ("create", "update", "delete", "unchanged")


@cli.group()
def policy() -> None:
    """Read and change the policy of one guest."""


@policy.command("set")
@click.argument("guest")
@click.option("--vcpupin", multiple=True, metavar="VCPU:CPUSET", help="Pin one vCPU, e.g. 0:2-3.")
@click.option(
    "--vcpus",
    metavar="CPUSET|auto",
    help="Where every vCPU not pinned alone may run; auto: placed by a tuner.",
)
@click.option("--allowed", metavar="CPUSET", help="With --vcpus auto: the CPUs to place on.")
@click.option("--emulatorpin", metavar="CPUSET", help="Where the emulator threads may run.")
@click.option("--weight", type=Whole(), help="Relative CPU weight, 1-10000 (100 is normal).")
@click.option("--cap", type=Whole(), metavar="PCT", help="Most CPU, in percent of one host CPU.")
@click.option("--requires", multiple=True, metavar="GUEST[@WHEN]", help="Hard dependency.")
@click.option("--wants", multiple=True, metavar="GUEST[@WHEN]", help="Soft dependency.")
@click.option("--autostart/--no-autostart", default=None, help="Start with the host.")
@click.option("--start-delay", type=Whole(), metavar="SECONDS", help="Wait after the guest is up.")
@click.option(
    "--stop-timeout", type=Whole(), metavar="SECONDS", help="Wait for shutdown this long."
)
@click.option(
    "--stop-action", type=click.Choice(["shutdown", "destroy", "managedsave"]), help="How to stop."
)
@click.option(
    "--stop-escalate/--no-stop-escalate",
    default=None,
    help="Destroy after a shutdown that times out.",
)
@click.option(
    "--on-dependency-stop",
    type=click.Choice(["none", "stop"]),
    help="When a required guest stops: note it, or stop this one too.",
)
@click.option(
    "--placement",
    type=click.Choice(["shared", "dedicated"]),
    help="Host CPUs of its own (dedicated) or the shared pool.",
)
@click.option(
    "--threads",
    type=click.Choice(["prefer", "isolate", "require"]),
    help="Dedicated: sibling threads, a whole core per vCPU, or vCPU pairs on sibling pairs.",
)
@click.option(
    "--emulator",
    type=click.Choice(["share", "isolate"]),
    help="Dedicated: the emulator on the shared pool, or on a CPU of its own.",
)
@click.option(
    "--topology",
    type=click.Choice(["match"]),
    help="Dedicated: the guest sees its vCPUs as the threads and cores they run on.",
)
@click.option("--numa-nodes", type=Whole(1, 64), metavar="N", help="Within this many nodes.")
@click.option(
    "--numa-memory",
    type=click.Choice(["strict", "preferred", "interleave"]),
    help="With --numa-nodes: bind the memory to those nodes.",
)
@click.option(
    "--memory-balloon",
    type=click.Choice(["off", "auto"]),
    help="auto: the memory tuner moves the balloon between the floor and the defined memory.",
)
@click.option("--memory-floor", metavar="SIZE", help="Never below this (512M, 1G, ...).")
@click.option(
    "--memory-weight", type=Whole(), help="Share of host memory under pressure, 1-10000 (100)."
)
@click.option(
    "--free-page-reporting/--no-free-page-reporting",
    default=None,
    help="Return freed guest pages to the host (in the definition: next start).",
)
@click.option("--memory-soft-limit", metavar="SIZE", help="The memtune soft limit.")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Set a label.")
@click.option(
    "--clear",
    multiple=True,
    metavar="FIELD",
    help="Remove a field first (cpu.cap, labels.tier, ...).",
)
@click.option(
    "--if-revision", type=Whole(), metavar="N", help="Only if the policy is at revision N."
)
@pass_app
def policy_set(
    app: App,
    guest: str,
    vcpupin: tuple[str, ...],
    vcpus: str | None,
    allowed: str | None,
    emulatorpin: str | None,
    weight: int | None,
    cap: int | None,
    requires: tuple[str, ...],
    wants: tuple[str, ...],
    autostart: bool | None,
    start_delay: int | None,
    stop_timeout: int | None,
    stop_action: str | None,
    stop_escalate: bool | None,
    on_dependency_stop: str | None,
    placement: str | None,
    threads: str | None,
    emulator: str | None,
    topology: str | None,
    numa_nodes: int | None,
    numa_memory: str | None,
    memory_balloon: str | None,
    memory_floor: str | None,
    memory_weight: int | None,
    free_page_reporting: bool | None,
    memory_soft_limit: str | None,
    label: tuple[str, ...],
    clear: tuple[str, ...],
    if_revision: int | None,
) -> None:
    """Create or change GUEST's policy; fields not given stay as they are."""
    from virtpolicy.policy.edit import (  # noqa: PLC0415
        clear_path,
        dependency_patch,
        merge_patches,
        vcpupin_patch,
    )

    cpu: dict[str, Any] = {
        "vcpus": vcpus,
        "allowed": allowed,
        "emulatorpin": emulatorpin,
        "weight": weight,
        "cap": cap,
        "placement": placement,
        "threads": threads,
        "emulator": emulator,
        "topology": topology,
    }
    for spec in vcpupin:
        cpu.setdefault("vcpupin", {}).update(vcpupin_patch(spec))
    given = {
        "cpu": cpu,
        "numa": {"nodes": numa_nodes, "memory": numa_memory},
        "memory": {
            "balloon": memory_balloon,
            "floor": memory_floor,
            "weight": memory_weight,
            "free_page_reporting": free_page_reporting,
            "soft_limit": memory_soft_limit,
        },
        "start": {"autostart": autostart, "delay": start_delay},
        "stop": {
            "timeout": stop_timeout,
            "action": stop_action,
            "escalate": stop_escalate,
            "on_dependency_stop": on_dependency_stop,
        },
    }
    patch: dict[str, Any] = {
        **{
            part: {k: v for k, v in fields.items() if v is not None}
            for part, fields in given.items()
        },
    }
    # Only the maps given: an empty one would undo a --clear of the whole map.
    for kind, specs in (("requires", requires), ("wants", wants)):
        for spec in specs:
            patch.setdefault(kind, {}).update(dependency_patch(spec, f"--{kind}"))
    if label:
        patch["labels"] = parse_labels(label)
    merged = merge_patches(*(clear_path(path) for path in clear), patch)
    click.echo(_describe(app.service.set(guest, merged, if_revision)))


@policy.command("get")
@click.argument("guest")
@click.option("-o", "--output", "fmt", type=_OUTPUT, default="yaml", show_default=True)
@pass_app
def policy_get(app: App, guest: str, fmt: str) -> None:
    """Show GUEST's policy."""
    if app.server and fmt == "yaml":  # the daemon renders it: no model needed here
        click.echo(app.daemon("policy get").get_yaml(guest), nl=False)
        return
    stored = app.service.get(guest)
    if fmt == "json":
        click.echo(output.dump_json_one(stored.policy), nl=False)
    else:
        click.echo(output.policies([stored], fmt), nl=False)


@policy.command("list")
@click.option("--label", "-l", multiple=True, metavar="KEY=VALUE", help="Only guests with it.")
@click.option("-o", "--output", "fmt", type=_OUTPUT, default="table", show_default=True)
@pass_app
def policy_list(app: App, label: tuple[str, ...], fmt: str) -> None:
    """List policies, optionally only those with all the given labels. A stored
    policy that no longer loads is named on standard error."""
    stored, broken = app.service.listing(parse_labels(label))
    click.echo(output.policies(stored, fmt), nl=False)
    _warn_broken(broken)


@policy.command("delete")
@click.argument("guest")
@click.option(
    "--if-revision", type=Whole(), metavar="N", help="Only if the policy is at revision N."
)
@pass_app
def policy_delete(app: App, guest: str, if_revision: int | None) -> None:
    """Delete GUEST's policy (its history stays)."""
    click.echo(_describe(app.service.delete(guest, if_revision)))


@policy.command("history")
@click.argument("guest")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def policy_history(app: App, guest: str, fmt: str) -> None:
    """Every revision of GUEST's policy: when, who, what changed."""
    entries = app.service.history(guest)
    if fmt == "json":
        click.echo(output.history_json(entries), nl=False)
        return
    rows = [
        [e.revision.revision, e.revision.created_at, e.revision.actor, e.revision.action, e.change]
        for e in entries
    ]
    click.echo(output.table(["REV", "TIME", "ACTOR", "ACTION", "CHANGE"], rows), nl=False)


@policy.command("diff")
@click.argument("guest")
@click.argument("rev1", type=Whole(low=1))
@click.argument("rev2", type=Whole(low=1), required=False)
@pass_app
def policy_diff(app: App, guest: str, rev1: int, rev2: int | None) -> None:
    """Show what changed from REV1 to REV2 (default: the latest) as a unified diff."""
    from virtpolicy.policy.diff import unified_diff  # noqa: PLC0415

    revisions = {e.revision.revision: e.revision for e in app.service.history(guest)}
    last = max(revisions)
    for wanted in (rev1, rev2):
        if wanted is not None and wanted not in revisions:
            raise NotFoundError(f"{guest}: no revision {wanted}")
    old, new = revisions[rev1], revisions[rev2 or last]
    click.echo(
        unified_diff(old.policy, new.policy, f"{guest}@{old.revision}", f"{guest}@{new.revision}"),
        nl=False,
    )


@cli.command("apply")
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    metavar="FILE",
    help="Policy file (YAML or JSON), directory, or - for standard input; repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--prune", is_flag=True, help="Delete the policies of guests not in the files.")
@pass_app
def apply_cmd(app: App, files: tuple[str, ...], dry_run: bool, prune: bool) -> None:
    """Make the store hold the policies in the files: all of them or, on any error, none."""
    from virtpolicy.cli.files import read_documents  # noqa: PLC0415

    docs = read_documents(files)
    results = app.service.apply([d.policy for d in docs], prune, dry_run)
    for r in results:
        if r.action != "unchanged":
            click.echo(r.diff if dry_run else _describe(r), nl=not dry_run)
    counts = {a: sum(r.action == a for r in results) for a in ACTIONS}
    click.echo(
        ("dry run, nothing written: " if dry_run else "")
        + f"{counts['create']} created, {counts['update']} updated, "
        f"{counts['delete']} deleted, {counts['unchanged']} unchanged"
    )


@cli.command("export")
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@pass_app
def export_cmd(app: App, fmt: str) -> None:
    """Print every policy (desired state only), ready for ``apply -f``. A stored
    policy that no longer loads is named on standard error and left out: then
    the exit status is 1."""
    stored, broken = app.service.listing({})
    click.echo(output.policies(stored, fmt), nl=False)
    _warn_broken(broken)
    if broken:
        raise click.exceptions.Exit(EXIT_FAILED)


def _warn_broken(broken: list[BrokenPolicy]) -> None:
    """Name each stored policy that no longer loads, on standard error."""
    for b in broken:
        click.echo(
            f"warning: {b.guest}: the stored policy (revision {b.revision}) no longer loads: "
            f"{b.reason}; replace it whole (apply -f) or delete it",
            err=True,
        )


@cli.command("plan")
@click.argument("operation", type=click.Choice(["start", "stop", "placement"]))
@click.argument("guests", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every guest in the graph.")
@click.option(
    "-o", "--output", "fmt", type=click.Choice(["table", "json", "dot", "mermaid"]), default="table"
)
@click.option(
    "--capabilities", metavar="FILE", help="placement: a host's libvirt capabilities XML."
)
@click.option(
    "--domain", "domains", multiple=True, metavar="FILE",
    help="placement: a guest's domain XML, placed in the order given; repeatable.",
)  # fmt: skip
@click.option(
    "-f", "--filename", "files", multiple=True, metavar="FILE",
    help="placement: policies from these files instead of the store; repeatable.",
)  # fmt: skip
@click.option("--reserved", metavar="CPUSET", help="placement: host CPUs kept from every guest.")
@pass_app
def plan_cmd(
    app: App,
    operation: str,
    guests: tuple[str, ...],
    everything: bool,
    fmt: str,
    capabilities: str | None,
    domains: tuple[str, ...],
    files: tuple[str, ...],
    reserved: str | None,
) -> None:
    """Print the waves in which to start or stop GUESTS (and what they depend on),
    or, with placement, where the placer puts the guests: those of the daemon's
    host, or those of --domain files on the host of a --capabilities file."""
    if operation == "placement":
        offline = (capabilities, domains, files, reserved)
        _plan_placement(app, offline, fmt, bool(guests or everything))
        return
    if capabilities or domains or files or reserved:
        raise fail_usage("plan: --capabilities, --domain, -f and --reserved are for plan placement")
    if everything == bool(guests):
        raise fail_usage("plan: name guests or give --all, not both or neither")
    waves = app.service.plan(operation, guests or None)
    edges = None
    if fmt in ("dot", "mermaid"):
        edges = {p.policy.guest: p.policy.dependencies() for p in app.service.list_policies({})}
    # In a fleet, where each guest runs (as its host last published it).
    hosts = {s["guest"]: s["host"] for s in app.service.status(None, None) if s.get("host")}
    if len(set(hosts.values())) < 2:
        hosts = {}  # one host: nothing to group
    click.echo(output.plan(waves, fmt, edges, hosts), nl=False)


def _plan_placement(
    app: App,
    offline: tuple[str | None, tuple[str, ...], tuple[str, ...], str | None],
    fmt: str,
    named: bool,
) -> None:
    from virtpolicy.cli.files import read_documents  # noqa: PLC0415
    from virtpolicy.cli.placement import plan_placement, show  # noqa: PLC0415
    from virtpolicy.policy.cpuset import parse_cpuset  # noqa: PLC0415

    capabilities, domains, files, reserved = offline
    if named or fmt not in ("table", "json"):
        raise fail_usage("plan placement: guests come from --domain files; -o table or json")
    if not (capabilities or domains or files or reserved):  # the daemon's host, as placed now
        raise SystemExit(show(app.daemon("plan placement").placement(), fmt))
    if not capabilities or not domains:
        raise fail_usage(
            "plan placement: give --capabilities FILE and --domain FILE... together, or"
            " neither (the guests on the daemon's host)"
        )
    if files:
        policies = {d.policy.guest: d.policy for d in read_documents(files)}
    else:
        policies = {s.policy.guest: s.policy for s in app.service.list_policies({})}
    cpus = parse_cpuset(reserved) if reserved else frozenset()
    raise SystemExit(plan_placement(policies, capabilities, domains, cpus, fmt))


def _describe(r: Result) -> str:
    if r.action == "unchanged":
        return f"{r.guest}: unchanged (revision {r.revision})"
    if r.action == "delete":
        return f"{r.guest}: deleted (revision {r.revision})"
    verb = "created" if r.action == "create" else "updated"
    what = ", ".join(r.changes)
    return f"{r.guest}: {verb} (revision {r.revision})" + (f": {what}" if what else "")
