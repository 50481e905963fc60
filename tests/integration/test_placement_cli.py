"""`virtpolicy plan placement` offline: a capabilities XML of a 2-node SMT host,
domain XML files, and the policies of the store or of -f files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NODE, Cli, Daemon, api_client, eventually, snapshot

pytestmark = pytest.mark.integration

CAPS = Path(__file__).parents[1] / "unit" / "data" / "caps-2node-smt.xml"


def domain(tmp_path: Path, name: str, vcpus: int) -> str:
    path = tmp_path / f"{name}.xml"
    path.write_text(f"<domain type='kvm'><name>{name}</name><vcpu>{vcpus}</vcpu></domain>")
    return str(path)


def test_plan_placement_from_the_store_and_from_files(tmp_path: Path, run: Cli) -> None:
    """Dedicated guests get cores of their own in one node; a shared guest floats
    over what is left; the table shows each host CPU's use; one that cannot be
    placed is refused with the reason and exit status 1."""
    run("policy", "set", "db", "--vcpus", "0")  # a policy of another kind: shared
    doc = {"guest": "web", "cpu": {"placement": "dedicated", "threads": "isolate"},
           "numa": {"nodes": 1}}  # fmt: skip
    assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    args = ["plan", "placement", "--capabilities", str(CAPS)]
    doms = ["--domain", domain(tmp_path, "web", 3), "--domain", domain(tmp_path, "db", 2)]
    answer = run(*args, *doms, "-o", "json")
    assert answer.exit_code == 0, answer.output
    got = json.loads(answer.stdout)
    assert got["refused"] == {}
    assert got["guests"]["web"]["vcpupin"] == {"0": "0", "1": "1", "2": "2"}
    assert got["guests"]["db"]["vcpupin"]["0"] == "3-7,11-15"  # all but web's cores
    table = run(*args, *doms).stdout.splitlines()
    assert table[0].split() == ["NODE", "CORE", "CPU", "USE"]
    rows = {int(line.split()[2]): line.split(None, 3)[3] for line in table[1:]}
    assert rows[0] == "web vCPU 0"
    assert rows[8] == "web (kept idle)"  # isolate: the sibling stays idle
    assert rows[3] == "shared: db"
    # From -f instead of the store: web asks for more than one node has.
    big = tmp_path / "big.yaml"
    big.write_text("guest: web\ncpu: {placement: dedicated, threads: isolate}\nnuma: {nodes: 1}\n")
    refused = run(*args, "--domain", domain(tmp_path, "web", 5), "-f", str(big))
    assert refused.exit_code == 1
    assert refused.stdout.splitlines()[-1] == (
        "refused: web: needs 5 dedicated cores with isolated siblings in 1 NUMA node; "
        "node 0 has 4 free, node 1 has 4 free"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--domain", "D"], "plan placement: give --capabilities FILE and --domain FILE"),
        (["--capabilities", "C"], "plan placement: give --capabilities FILE and --domain FILE"),
        (["--capabilities", "C", "--domain", "D", "-o", "dot"], "plan placement: guests come"),
        (["--capabilities", "NOFILE", "--domain", "D"], "error: NOFILE: cannot read"),
        (["--capabilities", "D", "--domain", "D"], "error: web.xml: not a libvirt capabilities"),
        (["--capabilities", "C", "--domain", "C"], "error: C: not a libvirt domain document"),
        (["--capabilities", "C", "--domain", "D", "--domain", "D"], "error: --domain: a guest"),
        (["--capabilities", "C", "--domain", "BAD"], "error: bad.xml: <vcpu> 'many' is not"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    tmp_path: Path, run: Cli, db: str, args: list[str], message: str
) -> None:
    run("policy", "set", "db", "--vcpus", "0")
    before = snapshot(db)
    files = {"C": str(CAPS), "D": domain(tmp_path, "web", 2)}
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><name>x</name><vcpu>many</vcpu></domain>")
    files["BAD"] = str(bad)
    answer = run("plan", "placement", *[files.get(a, a) for a in args])
    assert answer.exit_code == 2, answer.output
    shown = answer.output.splitlines()[-1]
    assert message in shown.replace(str(tmp_path) + "/", "").replace(str(CAPS), "C")
    assert snapshot(db) == before


def test_host_through_the_daemon(run: Cli, db: str, start_daemon: Callable[..., Daemon]) -> None:
    """`virtpolicy host` asks the daemon: on the test driver the topology is
    derived from the node info, and says so."""
    daemon = start_daemon(db, "--connect", f"test://{NODE}")
    answer = eventually(
        lambda: (
            (got := run("--server", str(daemon.socket), "host", "-o", "json")).exit_code == 0
            and got
        ),
        20,
    )
    shown = json.loads(answer.stdout)
    assert (shown["source"], shown["cpus"], shown["smt"]) == ("derived from node info", 4, 1)
    assert shown["nodes"]["0"]["cpus"] == "0-3"
    table = run("--server", str(daemon.socket), "host").stdout.splitlines()
    assert table[0].startswith("topology: derived from node info; 4 CPUs")


NUMA2 = Path(__file__).parent / "nodes" / "numa2smt.xml"
NUMA2_CAPS = Path(__file__).parent / "nodes" / "numa2smt-caps.xml"


def test_the_daemons_placement_matches_plan_placement(
    tmp_path: Path, run: Cli, db: str, start_daemon: Callable[..., Daemon]
) -> None:
    """On the test driver with a 2-node SMT node file, CPU 0 reserved: the daemon
    places db (dedicated, isolated, one node), web (dedicated) and api (shared)
    where `plan placement` puts them offline from the same host's capabilities,
    and the running guests' vCPUs are pinned there through libvirt."""
    db_doc = {"guest": "db", "cpu": {"placement": "dedicated", "threads": "isolate"},
              "numa": {"nodes": 1}}  # fmt: skip
    web_doc = {"guest": "web", "cpu": {"placement": "dedicated", "topology": "match"}}
    api_doc = {"guest": "api", "cpu": {"weight": 50}}
    for doc in (db_doc, web_doc, api_doc):
        assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    daemon = start_daemon(db, "--connect", f"test://{NUMA2}", "--reserved", "0")
    server = ("--server", str(daemon.socket))

    def placed() -> dict[str, Any] | None:
        answer = run(*server, "plan", "placement", "-o", "json")
        got = json.loads(answer.stdout) if answer.exit_code == 0 else None
        return got if got and len(got["guests"]) == 3 else None

    live = eventually(placed, 20)
    # The daemon places running guests by name: the same order, offline.
    doms = [
        a
        for g, n in (("api", 1), ("db", 2), ("web", 2))
        for a in ("--domain", domain(tmp_path, g, n))
    ]
    offline = run("plan", "placement", "--capabilities", str(NUMA2_CAPS), *doms, "--reserved", "0",
                  "-o", "json")  # fmt: skip
    assert offline.exit_code == 0, offline.output
    assert live["guests"] == json.loads(offline.stdout)["guests"]
    assert live["in_play"] is True
    assert live["reserved"] == "0"
    # db: two whole cores of node 1 (CPUs 2-3; siblings 6-7 kept idle); web: the
    # free core of node 0 (1 and its sibling 5); api floats over what is left: 4.
    assert live["guests"]["db"]["vcpupin"] == {"0": "2", "1": "3"}
    assert live["guests"]["web"]["vcpupin"] == {"0": "1", "1": "5"}
    assert live["guests"]["api"]["vcpupin"] == {"0": "4"}
    # ... and libvirt has them (the test driver pins running guests live).
    with api_client(daemon.socket) as api:

        def pinned() -> dict[str, Any] | None:
            rows = {s["guest"]: s for s in api.get("/v1/status").json()}
            done = all(rows.get(g, {}).get("actual", {}).get("vcpupin") == live["guests"][g]["vcpupin"]
                       for g in ("db", "web", "api"))  # fmt: skip
            return rows if done else None

        rows = eventually(pinned, 20)
        # web's two vCPUs are sibling threads of one core, and it is told so.
        topology = eventually(
            lambda: {s["guest"]: s for s in api.get("/v1/status").json()}["web"]["actual"][
                "topology"
            ],
            20,
        )
        assert topology == "1 sockets, 1 cores, 2 threads"
        assert rows["web"]["problems"] == []
    table = run(*server, "plan", "placement").stdout.splitlines()
    rows = {int(line.split()[2]): line.split(None, 3)[3] for line in table[1:] if line[0].isdigit()}
    assert (rows[0], rows[2], rows[6], rows[4]) == (
        "reserved",
        "db vCPU 0",
        "db (kept idle)",
        "shared: api",
    )


def test_host_from_a_capabilities_file(run: Cli) -> None:
    """Each node's CPUs, cores, memory and distances to the others, as the file has them."""
    table = run("host", "--capabilities", str(CAPS)).stdout.splitlines()
    assert table[0].startswith("topology: capabilities; 16 CPUs, 2 thread(s) per core")
    assert table[1].split() == ["NODE", "CPUS", "CORES", "MEMORY_KIB", "DISTANCES"]
    assert table[2].split() == ["0", "0-3,8-11", "4", "16777216", "10,21,21"]
    assert table[4].split() == ["2", "-", "0", "8388608", "21,21,10"]


def test_a_daemons_job_applies_admission_without_the_hook(
    run: Cli, db: str, start_daemon: Callable[..., Daemon]
) -> None:
    """On a host without libvirt's hook (the test driver), a start job through
    the daemon asks the same admission as the hook would: a guest the placer
    refused is not started (it was, unpinned, over others' dedicated CPUs, and
    the job said "succeeded"); the job fails naming the refusal."""
    db_doc = {"guest": "db", "cpu": {"placement": "dedicated", "threads": "isolate"},
              "numa": {"nodes": 1}}  # fmt: skip
    for doc in (db_doc, {"guest": "web"}, {"guest": "api"}):
        assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    daemon = start_daemon(db, "--connect", f"test://{NUMA2}", "--reserved", "0")
    server = ("--server", str(daemon.socket))
    eventually(lambda: run(*server, "status", "-o", "json").exit_code == 0 or None, 20)
    stopped = run(*server, "stop", "web")
    assert stopped.exit_code == 0, stopped.output
    # web now wants two whole cores in one node: node 1 is db's, node 0 has one
    # core left beside the reserved CPU 0.
    web_doc = {"guest": "web", "cpu": {"placement": "dedicated", "threads": "isolate"},
               "numa": {"nodes": 1}}  # fmt: skip
    assert run(*server, "apply", "-f", "-", input=json.dumps(web_doc)).exit_code == 0

    def refused() -> str | None:
        got = json.loads(run(*server, "plan", "placement", "-o", "json").stdout)
        return got["refused"].get("web")

    reason = eventually(refused, 20)
    started = run(*server, "start", "web")
    assert started.exit_code == 1, started.output
    [job] = json.loads(run(*server, "jobs", "-o", "json").stdout)[:1]
    assert job["state"] == "failed"
    [row] = [r for r in job["results"] if r["guest"] == "web"]
    assert row["result"] == "refused"
    assert reason in row["detail"]
    with api_client(daemon.socket) as api:
        states = {s["guest"]: s["state"] for s in api.get("/v1/status").json()}
    assert states["web"] == "shut off"
