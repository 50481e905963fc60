"""``virtpolicy stats`` and ``top`` (utilization from the daemon's sampler),
``tuners`` and ``decisions`` (tuners)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from virtpolicy.cli import output
from virtpolicy.cli.app import App, Whole, cli, pass_app
from virtpolicy.cli.remote import RemoteService
from virtpolicy.engine.tuners import available, load
from virtpolicy.errors import NotFoundError, VirtpolicyError
from virtpolicy.policy.cpuset import parse_cpuset


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def guests_table(stats: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            g["guest"],
            "running" if g["running"] else "-",
            _pct(g["cpu_percent"]),
            " ".join(f"{v['vcpu']}:{_pct(v['percent'])}" for v in g["vcpus"]) or "-",
            _pct(max((v["steal_percent"] or 0.0 for v in g["vcpus"]), default=None)),
            _mib(g["rss_kib"]),
            _mib(g.get("memory_kib")),
            _mib(g.get("memory_usable_kib")),
        ]
        for g in stats
    ]
    return output.table(
        ["GUEST", "STATE", "CPU%", "VCPU%", "STEAL%", "RSS_MIB", "BALLOON_MIB", "USABLE_MIB"], rows
    )


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def vcpus_table(g: dict[str, Any]) -> str:
    rows = [
        [v["vcpu"], _pct(v["percent"]), _pct(v["steal_percent"]), _pct(v["wait_percent"])]
        for v in g["vcpus"]
    ]
    head = f"{g['guest']}: CPU {_pct(g['cpu_percent'])}%"
    if g["rss_kib"] is not None:
        head += f", resident {g['rss_kib'] / 1024:.0f} MiB of {g['memory_max_kib'] / 1024:.0f}"
    if g.get("memory_kib") is not None:
        head += f", balloon {_mib(g['memory_kib'])} MiB, usable {_mib(g.get('memory_usable_kib'))}"
        swap, faults = (
            g.get("memory_guest_swap_in_kib_per_second"),
            g.get("memory_guest_major_faults_per_second"),
        )
        head += f", swap-in {_pct(swap)} KiB/s, major faults {_pct(faults)}/s"
    return head + "\n" + output.table(["VCPU", "CPU%", "STEAL%", "WAIT%"], rows)


def top_table(
    host: dict[str, Any],
    stats: Sequence[dict[str, Any]],
    statuses: Sequence[dict[str, Any]],
    layout: Sequence[dict[str, Any]] = (),
) -> str:
    """Per host CPU, by NUMA node and core (``layout``: the ``cpus`` rows of
    ``GET /v1/placement``): how busy, and which pinned vCPUs may run there (with
    their %)."""
    busy_vcpu = {(g["guest"], str(v["vcpu"])): v["percent"] for g in stats for v in g["vcpus"]}
    ncpus = len(host["cpus"])
    sitting: dict[int, list[str]] = {cpu: [] for cpu in range(ncpus)}
    floating = 0
    for status in statuses:
        for vcpu, cpuset in (status.get("actual") or {}).get("vcpupin", {}).items():
            cpus = parse_cpuset(str(cpuset))
            if len(cpus) >= ncpus:
                floating += 1
                continue
            pct = busy_vcpu.get((status["guest"], vcpu))
            for cpu in cpus:
                if cpu in sitting:
                    sitting[cpu].append(f"{status['guest']}/{vcpu}({_pct(pct)})")
    where = {row["cpu"]: (row["node"], row["core"]) for row in layout}
    ordered = sorted(host["cpus"], key=lambda c: (*_order(where.get(c["cpu"])), c["cpu"]))
    rows = [
        [
            *where.get(c["cpu"], ("-", "-")),
            c["cpu"],
            _pct(c["busy_percent"]),
            " ".join(sitting.get(c["cpu"], [])) or "-",
        ]
        for c in ordered
    ]
    text = output.table(["NODE", "CORE", "CPU", "BUSY%", "PINNED VCPUS (CPU%)"], rows)
    if floating:
        text += f"({floating} vCPUs of guests with policies may run on every host CPU)\n"
    return text


def _order(place: tuple[int, str] | None) -> tuple[int, int]:
    """Node, then the core's first thread; CPUs of no known place last."""
    if place is None:
        return (1 << 30, 0)
    return (place[0], min(parse_cpuset(place[1])))


def _show(render: Callable[[], str], watch: bool, interval: float) -> None:
    if not watch:
        click.echo(render(), nl=False)
        return
    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415
        from rich.live import Live  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        with Live(Text(render()), console=Console(), auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(Text(render()), refresh=True)
            except KeyboardInterrupt:
                return
    try:
        while True:  # off a terminal: a new table each interval, blank-line separated
            click.echo(render())
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@cli.command("stats")
@click.argument("guest", required=False)
@click.option("--watch", "-w", is_flag=True, help="Refresh at each sample until interrupted.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def stats_cmd(app: App, guest: str | None, watch: bool, fmt: str) -> None:
    """Guest CPU %, per-vCPU % and steal, memory, over the last sample interval."""
    api = app.daemon("stats")

    def current() -> list[dict[str, Any]]:
        stats = api.stats_guests()
        if guest is None:
            return stats
        found = [g for g in stats if g["guest"] == guest]
        if not found:
            raise NotFoundError(f"{guest}: no statistics (no such guest, or not sampled yet)")
        return found

    if fmt == "json":
        click.echo(json.dumps(current() if guest is None else current()[0], indent=2))
        return
    render = (
        (lambda: guests_table(current())) if guest is None else (lambda: vcpus_table(current()[0]))
    )
    _show(render, watch, _interval(api))


@cli.command("top")
@click.option("--watch", "-w", is_flag=True, help="Refresh at each sample until interrupted.")
@pass_app
def top_cmd(app: App, watch: bool) -> None:
    """Per host CPU, by NUMA node and core: how busy it is, and which pinned vCPUs
    sit on it."""
    api = app.daemon("top")
    layout = api.placement()["cpus"]  # the host's cores do not change while it runs
    _show(
        lambda: top_table(api.stats_host(), api.stats_guests(), api.status(None), layout),
        watch,
        _interval(api),
    )


def _interval(api: RemoteService) -> float:
    return float(api.stats_host()["sampler"]["interval"])


@cli.command("tuners")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def tuners_cmd(app: App, fmt: str) -> None:
    """Tuners installed here (built-in and from other packages), and
    which the daemon runs, when one answers."""
    installed = available()
    running: list[str] = []
    dry_run = False
    try:
        answer = app.daemon("tuners").tuners()
        running, dry_run = answer["running"], answer["dry_run"]
    except VirtpolicyError:
        pass  # no daemon: what is installed is still worth showing
    rows = []
    for name, source in sorted(installed.items()):
        try:
            description = load([name])[0].description
        except (VirtpolicyError, ImportError, AttributeError) as exc:
            description = f"(cannot load: {exc})"
        state = ("dry run" if dry_run else "running") if name in running else "-"
        rows.append({"name": name, "daemon": state, "source": source, "description": description})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        output.table(
            ["NAME", "DAEMON", "SOURCE", "DESCRIPTION"],
            [[r["name"], r["daemon"], r["source"], r["description"]] for r in rows],
        ),
        nl=False,
    )


@cli.command("decisions")
@click.argument("guest", required=False)
@click.option("--limit", type=Whole(1, 10000), default=50, show_default=True)
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def decisions_cmd(app: App, guest: str | None, limit: int, fmt: str) -> None:
    """The tuners' decision log, newest first."""
    found = app.daemon("decisions").decisions(guest, limit)
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    rows = [
        [
            time.strftime("%H:%M:%S", time.localtime(d["time"])),
            d["tuner"],
            d["guest"],
            d["action"] + ("" if d["vcpu"] is None else f".{d['vcpu']}"),
            "-" if d["value"] is None else d["value"],
            d["outcome"],
            d["reason"],
        ]
        for d in found
    ]
    click.echo(
        output.table(["TIME", "ENGINE", "GUEST", "WHAT", "VALUE", "OUTCOME", "REASON"], rows),
        nl=False,
    )
