"""``virtpolicy host`` (a host's CPU topology) and ``virtpolicy plan placement``
(where the placer puts the guests, offline).

From a libvirt capabilities XML (``--capabilities``, e.g. ``virsh
capabilities`` of another host) and domain XML files (``--domain``, their
names and vCPU counts, placed in the order given), with the policies of the
store or of ``-f`` files. Shows per NUMA node, core and thread which guest's
vCPU or emulator sits there, what is reserved and what is free; JSON
``{"guests": {...}, "refused": {...}}``. Exit status 1 when a guest is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from virtpolicy.cli import output
from virtpolicy.cli.app import App, cli, pass_app
from virtpolicy.errors import PolicyError
from virtpolicy.hypervisor.capabilities import domain_vcpus, topology_from_capabilities
from virtpolicy.policy.cpuset import format_cpuset
from virtpolicy.policy.document import MAX_FILE_BYTES
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.placement import cpu_uses, place, request_for


@cli.command("host")
@click.option("--capabilities", metavar="FILE", help="A libvirt capabilities XML instead.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_app
def host_cmd(app: App, capabilities: str | None, fmt: str) -> None:
    """The host's CPU topology: NUMA nodes with their CPUs, cores and memory,
    threads per core, the kernel's isolated CPUs, and where it was learnt. The
    daemon's host, or the host a --capabilities file describes."""
    shown: dict[str, Any]
    if capabilities:
        topology = topology_from_capabilities(_read(capabilities), capabilities)
        if topology is None:
            raise PolicyError(f"{capabilities}: no NUMA cell with CPUs")
        shown = dict(topology.to_dict())
    else:
        shown = app.daemon("host").host().get("topology") or {}
        if not shown:
            raise PolicyError("the daemon is not connected to libvirt yet: no topology to show")
    if fmt == "json":
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(
        f"topology: {shown['source']}; {shown['cpus']} CPUs, {shown['smt']} thread(s) per core;"
        f" isolated by the kernel: {shown['isolated'] or 'none'}"
    )
    rows = [
        [
            node,
            n["cpus"] or "-",
            n["cores"],
            n["memory_kib"] if n["memory_kib"] is not None else "-",
            ",".join(str(d) for d in n.get("distances", {}).values()) or "-",
        ]
        for node, n in shown["nodes"].items()
    ]
    headers = ["NODE", "CPUS", "CORES", "MEMORY_KIB", "DISTANCES"]
    click.echo(output.table(headers, rows), nl=False)


def plan_placement(
    policies: dict[str, GuestPolicy],
    capabilities: str,
    domains: Sequence[str],
    reserved: frozenset[int],
    fmt: str,
) -> int:
    """Print the placement; the exit status (1 when a guest was refused)."""
    topology = topology_from_capabilities(_read(capabilities), capabilities)
    if topology is None:
        raise PolicyError(f"{capabilities}: no NUMA cell with CPUs: nothing to place on")
    requests = []
    for name in domains:
        guest, vcpus = domain_vcpus(_read(name), name)
        requests.append(request_for(guest, vcpus, policies.get(guest)))
    if len({r.guest for r in requests}) != len(requests):
        raise PolicyError("--domain: a guest is named twice")
    unknown = reserved - {c.id for c in topology.cpus}
    if unknown:
        raise PolicyError(f"--reserved: CPU {format_cpuset(unknown)} is not on this host")
    placement = place(topology, reserved, requests)
    return show({**placement.to_dict(), "cpus": cpu_uses(topology, placement, reserved)}, fmt)


def show(answer: dict[str, Any], fmt: str) -> int:
    """Print a placement (``guests``, ``refused`` and the ``cpus`` rows of
    :func:`~virtpolicy.policy.placement.cpu_uses`); 1 when a guest was refused."""
    if fmt == "json":
        click.echo(json.dumps({k: v for k, v in answer.items() if k != "cpus"}, indent=2))
    else:
        rows = [[r["node"], r["core"], r["cpu"], r["use"]] for r in answer["cpus"]]
        click.echo(output.table(["NODE", "CORE", "CPU", "USE"], rows), nl=False)
        for guest in sorted(answer["refused"]):
            click.echo(f"refused: {answer['refused'][guest]}")
    return 1 if answer["refused"] else 0


def _read(name: str) -> str:
    path = Path(name)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PolicyError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PolicyError(f"{name}: cannot read: {exc.strerror}") from None
