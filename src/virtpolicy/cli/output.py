"""Rendering for the terminal: tables, documents and plans.

Tables follow kubectl's plain style (upper-case headers, columns separated by
blanks, no borders) so they read well and ``grep``/``awk`` well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from virtpolicy.policy.graph import Edges, Waves, critical_path

if TYPE_CHECKING:  # imported where used: `status` and `stats` need neither pydantic nor YAML
    from virtpolicy.engine.changes import HistoryEntry
    from virtpolicy.policy.model import GuestPolicy
    from virtpolicy.store.base import StoredPolicy

FORMATS = ("yaml", "json", "table")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("   ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def policies(stored: Sequence[StoredPolicy], fmt: str) -> str:
    """Policies as YAML documents, a JSON array, or a one-line-per-guest table."""
    from virtpolicy.policy.document import dump_json, dump_yaml  # noqa: PLC0415

    plain = [s.policy for s in stored]
    if fmt == "yaml":
        return dump_yaml(plain)
    if fmt == "json":
        return dump_json(plain)
    return table(
        ["GUEST", "REV", "PINNING", "WEIGHT", "CAP", "REQUIRES", "WANTS", "LABELS"],
        [
            [
                s.policy.guest,
                s.revision,
                pinning(s.policy),
                s.policy.cpu.weight or "-",
                f"{s.policy.cpu.cap}%" if s.policy.cpu.cap else "-",
                ",".join(d.guest for d in s.policy.requires) or "-",
                ",".join(d.guest for d in s.policy.wants) or "-",
                ",".join(f"{k}={v}" for k, v in s.policy.labels.items()) or "-",
            ]
            for s in stored
        ],
    )


def dump_json_one(policy: GuestPolicy) -> str:
    """One policy as an indented JSON object."""
    return json.dumps(policy.to_document(), indent=2, ensure_ascii=False) + "\n"


def history_json(entries: Sequence[HistoryEntry]) -> str:
    """History as a JSON array of revisions, each with its change summary."""
    return json.dumps([e.to_dict() for e in entries], indent=2) + "\n"


def pinning(policy: GuestPolicy) -> str:
    """Compact pinning summary: ``0:2 1:3 *:0-7 emu:0``."""
    cpu = policy.cpu
    parts = [f"{vcpu}:{cpus}" for vcpu, cpus in sorted(cpu.vcpupin.items())]
    if cpu.vcpus:
        parts.append(f"*:{cpu.vcpus}")
    if cpu.emulatorpin:
        parts.append(f"emu:{cpu.emulatorpin}")
    return " ".join(parts) or "-"


def plan(
    waves: Waves,
    fmt: str,
    edges: Edges | None = None,
    hosts: Mapping[str, str] | None = None,
) -> str:
    """A plan: a table of waves, ``{"waves": [...]}``, or a graph (dot, mermaid)
    of the planned guests with the critical path marked. With ``hosts`` (guest ->
    its host in a fleet) the guests are grouped by host: a HOST column, a
    ``hosts`` map, a box per host in the graph."""
    hosts = hosts or {}
    if fmt == "json":
        return json.dumps({"waves": waves, **({"hosts": dict(hosts)} if hosts else {})}) + "\n"
    if fmt in ("dot", "mermaid"):
        return graph(waves, edges or {}, fmt, hosts)
    if not hosts:
        return table(["WAVE", "GUESTS"], [[i, " ".join(w)] for i, w in enumerate(waves, start=1)])
    rows = []
    for i, wave in enumerate(waves, start=1):
        by_host: dict[str, list[str]] = {}
        for g in wave:
            by_host.setdefault(hosts.get(g, "-"), []).append(g)
        rows += [[i, h, " ".join(gs)] for h, gs in sorted(by_host.items())]
    return table(["WAVE", "HOST", "GUESTS"], rows)


def status(statuses: Sequence[dict[str, Any]]) -> str:
    """Guest status as a table: state, pinning and scheduler values, drift, problems."""
    rows = []
    for st in statuses:
        actual = st.get("actual") or {}
        pins = " ".join(f"{v}:{c}" for v, c in (actual.get("vcpupin") or {}).items())
        if actual.get("emulatorpin") is not None:
            pins += f" emu:{actual['emulatorpin']}"
        # The scheduler values the policy manages (weight and cap, in the driver's
        # units); the driver's full set is in `status -o json|yaml`.
        managed = (st.get("desired") or {}).get("sched") or {}
        sched = " ".join(f"{k}={v}" for k, v in (actual.get("sched") or {}).items() if k in managed)
        drift = ",".join(st.get("drift") or {}) or "-"
        trouble = list(st.get("problems") or []) + ([st["error"]] if st.get("error") else [])
        rows.append(
            [
                st["guest"],
                st.get("host") or "-",
                st.get("state", "?"),
                st.get("policy_revision") or "-",
                pins.strip() or "-",
                sched or "-",
                drift,
                "; ".join(trouble) or "-",
            ]
        )
    return table(["GUEST", "HOST", "STATE", "REV", "PINNING", "SCHED", "DRIFT", "PROBLEMS"], rows)


def graph(waves: Waves, edges: Edges, fmt: str, hosts: Mapping[str, str] | None = None) -> str:
    """Graphviz or Mermaid text: an arrow from each guest to what it depends on
    (dashed for ``wants``), the critical path in bold red, guests in a box per
    host when ``hosts`` says where they run."""
    planned = [g for wave in waves for g in wave]
    chosen = set(planned)
    path = critical_path(edges, waves)
    on_path = set(zip(path[1:], path, strict=False))  # (dependent, dependency)
    arrows = [(g, d, kind) for g in planned for d, kind in edges.get(g, ()) if d in chosen]
    groups = _by_host(planned, hosts or {})
    if fmt == "dot":
        return _dot(groups, path, on_path, arrows)
    return _mermaid(planned, groups, path, on_path, arrows)


Arrow = tuple[str, str, str]  # (dependent, dependency, kind)
Groups = list[tuple[str | None, list[str]]]


def _dot(
    groups: Groups, path: list[str], on_path: set[tuple[str, str]], arrows: list[Arrow]
) -> str:
    lines = ["digraph plan {", "  rankdir=BT;", "  node [shape=box];"]
    for n, (host, members) in enumerate(groups):
        indent = "  " if host is None else "    "
        if host is not None:
            lines += [f"  subgraph cluster_{n} {{", f"    label={json.dumps(host)};"]
        for g in members:
            style = " [color=red, penwidth=2]" if g in path else ""
            lines.append(f"{indent}{json.dumps(g)}{style};")
        if host is not None:
            lines.append("  }")
    for g, d, kind in arrows:
        attrs = []
        if kind == "wants":
            attrs.append("style=dashed")
        if (g, d) in on_path:
            attrs += ["color=red", "penwidth=2"]
        lines.append(
            f"  {json.dumps(g)} -> {json.dumps(d)}"
            + (f" [{', '.join(attrs)}]" if attrs else "")
            + ";"
        )
    return "\n".join([*lines, "}"]) + "\n"


def _mermaid(
    planned: list[str],
    groups: Groups,
    path: list[str],
    on_path: set[tuple[str, str]],
    arrows: list[Arrow],
) -> str:
    ids = {g: f"n{i}" for i, g in enumerate(planned)}
    lines = ["flowchart BT"]
    for n, (host, members) in enumerate(groups):
        if host is not None:
            lines.append(f'  subgraph h{n}["{host}"]')
        lines += [f'  {ids[g]}["{g}"]' for g in members]
        if host is not None:
            lines.append("  end")
    links = []
    for g, d, kind in arrows:
        lines.append(f"  {ids[g]} {'-.->' if kind == 'wants' else '-->'} {ids[d]}")
        links.append((g, d))
    for i, link in enumerate(links):
        if link in on_path:
            lines.append(f"  linkStyle {i} stroke:red,stroke-width:3px")
    if path:
        lines.append("  classDef critical stroke:red,stroke-width:3px")
        lines.append("  class " + ",".join(ids[g] for g in path) + " critical")
    return "\n".join(lines) + "\n"


def _by_host(guests: Sequence[str], hosts: Mapping[str, str]) -> list[tuple[str | None, list[str]]]:
    """Guests grouped by their host (None: where none is known), in plan order."""
    groups: dict[str | None, list[str]] = {}
    for g in guests:
        groups.setdefault(hosts.get(g), []).append(g)
    return sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or ""))
