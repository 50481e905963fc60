"""Several daemons on one PostgreSQL store: the hosts of a fleet.

Daemons run on libvirt's test driver with node files of our own
(``nodes/fleet-a.xml``, ``nodes/fleet-b.xml``) and, for the fleet with a real
host in it, on the lab's libvirtd with QEMU guests and the hook installed;
the store is the lab's real PostgreSQL (``tests/lab/postgres``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    PG_LAB,
    Cli,
    Daemon,
    api_client,
    eventually,
    try_virsh,
    virsh,
    wait_connected,
)
from virtpolicy.hook.install import hook_text

pytestmark = pytest.mark.integration

NODES = Path(__file__).parent / "nodes"


@pytest.fixture
def fleet_host(pg_db: str, start_daemon: Callable[..., Daemon]) -> Callable[..., Daemon]:
    """A daemon on the lab's PostgreSQL for the test-driver host ``nodes/fleet-X.xml``,
    named ``host-X``, beating every half second."""

    def start(x: str, heartbeat: str = "0.5") -> Daemon:
        node = f"test://{NODES / f'fleet-{x}.xml'}"
        return start_daemon(
            pg_db, "--connect", node, "--host", f"host-{x}", "--heartbeat", heartbeat
        )

    return start


def test_hosts_register_beat_and_a_killed_one_is_lost(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """Two daemons register with their guests; `hosts -o json` (in-process and
    through a daemon) shows both up; one killed with SIGKILL is lost within three
    heartbeats, one stopped cleanly is left."""
    a = fleet_host("a")
    b = fleet_host("b")
    run = Cli(pg_db)

    def hosts(*via: str) -> dict[str, dict[str, object]]:
        answer = run(*via, "hosts", "-o", "json")
        assert answer.exit_code == 0, answer.output
        return {h["name"]: h for h in json.loads(answer.stdout)}

    def both_up() -> dict[str, dict[str, object]] | None:
        seen = hosts()
        ok = {n: (h["state"], h["guests"], h["running"]) for n, h in seen.items()} == {
            "host-a": ("up", 3, 2),
            "host-b": ("up", 2, 2),
        }
        return seen if ok else None

    seen = eventually(both_up, 20)
    assert set(seen["host-a"]) >= {"name", "state", "uri", "guests", "running", "heartbeat"}
    assert seen["host-a"]["uri"] == f"test://{NODES / 'fleet-a.xml'}"
    assert hosts("--server", str(b.socket)).keys() == {"host-a", "host-b"}
    table = run("hosts").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "URI", "GUESTS", "RUNNING", "HEARTBEAT"]

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a.killed = True
    # Lost after three missed beats (1.5 s): looked for within ten.
    eventually(lambda: hosts()["host-a"]["state"] == "lost", 10)
    assert hosts()["host-b"]["state"] == "up"

    b.proc.send_signal(signal.SIGTERM)
    assert b.proc.wait(15) == 0
    b.killed = True
    final = hosts()
    assert (final["host-b"]["state"], final["host-b"]["guests"]) == ("left", 0)
    assert final["host-a"]["state"] == "lost"


def test_a_policy_written_anywhere_is_live_on_its_guests_host(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """A policy for `db` (on host A) written through host B's API is enforced by host
    A's daemon; `status` through either daemon, and on the store directly, shows the
    whole fleet with each guest's host; `--host` filters; a policy for a guest no
    host has is one row on no host; plans group the guests by host."""
    a, b = fleet_host("a"), fleet_host("b")
    run = Cli(pg_db)
    via_b = ("--server", str(b.socket))
    assert run(*via_b, "policy", "set", "db", "--vcpus", "3").exit_code == 0
    assert run(*via_b, "policy", "set", "web", "--vcpus", "1").exit_code == 0
    assert run("policy", "set", "ghost", "--vcpus", "0").exit_code == 0  # the CLI, no daemon

    def pinned(via: tuple[str, ...]) -> dict[str, tuple[object, object]] | None:
        answer = run(*via, "status", "-o", "json")
        assert answer.exit_code == 0, answer.output
        rows = {s["guest"]: s for s in json.loads(answer.stdout)}
        got = {
            g: (s["host"], (s.get("actual") or {}).get("vcpupin", {}).get("0"))
            for g, s in rows.items()
        }
        # ghost's policy was written by the CLI: each daemon hears of it within a beat.
        ok = got.get("db") == ("host-a", "3") and got.get("web") == ("host-b", "1")
        return got if ok and "ghost" in got else None

    for via in (("--server", str(a.socket)), via_b, ()):
        got = eventually(lambda via=via: pinned(via), 20)
        assert got["ghost"] == (None, None)
        assert "cache" not in got  # no policy: not ours to report
    only_a = json.loads(run(*via_b, "status", "--host", "host-a", "-o", "json").stdout)
    assert {s["guest"] for s in only_a} == {"db"}
    table = run("status").stdout.splitlines()
    assert [line.split()[:2] for line in table[1:]] == [
        ["db", "host-a"],
        ["ghost", "-"],
        ["web", "host-b"],
    ]
    # Plans group the guests by host.
    plan = run("plan", "start", "--all").stdout.splitlines()
    assert plan[0].split() == ["WAVE", "HOST", "GUESTS"]
    assert ["1", "host-a", "db"] in [line.split() for line in plan[1:]]
    dot = run("plan", "start", "--all", "-o", "dot").stdout
    assert 'label="host-a";' in dot
    assert 'label="host-b";' in dot
    assert "subgraph h" in run("plan", "start", "--all", "-o", "mermaid").stdout


def test_cross_host_requires_answers_from_the_fleet_state(
    pg_db: str, fleet_host: Callable[[str], Daemon], tmp_path: Path
) -> None:
    """`web` on host B requires `db` on host A, and `api` on host B requires
    `archive`, shut off on host A. Host B's admission (what its hook asks) allows
    web while db runs there, refuses api naming host A, and cannot tell about web
    once host A is lost: the JSON answer is 503 naming the lost host, and the hook
    program follows hook_failure (closed refuses, open allows)."""
    a = fleet_host("a")
    b = fleet_host("b")
    run = Cli(pg_db)
    assert run("policy", "set", "web", "--requires", "db").exit_code == 0
    assert run("policy", "set", "api", "--requires", "archive").exit_code == 0
    assert run("policy", "set", "db", "--weight", "200").exit_code == 0
    hook = b.run_dir / "virtpolicy-hook.sock"

    def answer(guest: str = "web") -> dict[str, object]:
        with api_client(hook) as c:
            got = c.get(f"/v1/guests/{guest}/admission")
        return {"status": got.status_code, **got.json()}

    eventually(lambda: answer().get("allowed") is True, 20)
    refused = answer("api")
    assert refused["reasons"] == ["api requires archive (running): archive is shut off on host-a"]

    published = lambda: json.loads(run("status", "db", "-o", "json").stdout)[0]["host"]  # noqa: E731
    eventually(lambda: published() == "host-a", 20)  # host A has checked db's policy
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a.killed = True
    unknown = eventually(lambda: (got := answer())["status"] == 503 and got, 20)
    message = str(unknown["error"]["message"])  # type: ignore[index]
    assert message.startswith("web requires db (running): db's host host-a is lost (last heartbeat")

    # web goes on (a lost host is not a stopped guest), with a notice; db is unknown.
    def status(guest: str) -> dict[str, object]:
        with api_client(b.socket) as c:
            found: dict[str, object] = c.get(f"/v1/guests/{guest}/status").json()
        return found

    web = eventually(lambda: (w := status("web"))["notices"] and w, 10)
    assert web["state"] == "running"
    assert any("db's host host-a is lost" in n for n in web["notices"])  # type: ignore[attr-defined]
    assert (status("db")["host"], status("db")["state"]) == ("host-a", "unknown")

    program = tmp_path / "qemu"
    for failure, status in (("closed", 1), ("open", 0)):
        program.write_text(hook_text(str(b.run_dir), failure, str(tmp_path / "none"), retry=0.3))
        program.chmod(0o755)
        argv = [str(program), "web", "prepare", "begin", "-"]
        done = subprocess.run(argv, input="<domain/>", capture_output=True, text=True, check=False)
        assert done.returncode == status, done.stderr
        assert "cannot tell (web requires db (running): db's host host-a is lost" in done.stderr


def test_two_guests_of_one_name_are_reported_not_enforced(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """`db` runs on host A and on host C with different UUIDs: both hosts report a
    problem naming both hosts, and neither enforces db's policy."""
    daemons = [fleet_host("a"), fleet_host("c")]

    def knows_the_other(d: Daemon) -> bool:
        with api_client(d.socket) as c:
            fleet = c.get("/v1/host").json()["fleet"]
        return len(fleet["hosts"]) == 1 and fleet["guests"] >= 1

    for d in daemons:
        eventually(lambda d=d: knows_the_other(d), 20)
    run = Cli(pg_db)
    assert run("policy", "set", "db", "--vcpus", "1").exit_code == 0

    def clashes() -> list[dict[str, object]] | None:
        rows = json.loads(run("status", "db", "-o", "json").stdout)
        both = len(rows) == 2 and all(r["problems"] for r in rows)
        return rows if both else None

    rows = eventually(clashes, 20)
    assert {r["host"] for r in rows} == {"host-a", "host-c"}
    for r in rows:
        [problem] = r["problems"]  # type: ignore[misc]
        assert "host-a" in problem
        assert "host-c" in problem
        assert "neither is enforced" in problem
        assert r["applied"] == {}
    for d in daemons:
        assert "enforce guest=db" not in d.log.read_text()


@pytest.mark.alone("postgres")
def test_postgresql_down_and_back_loses_no_write(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """PostgreSQL stopped under two running daemons: a write fails with exit status 1
    and changes nothing, the daemons say the store is unreachable and go on (the
    guests keep their pins), admission of a cross-host dependency cannot tell once
    the fleet's state is stale; started again, a write goes through and reaches
    the guest's host, and every acknowledged write is there."""
    a = fleet_host("a")
    b = fleet_host("b")
    run = Cli(pg_db)
    assert run("policy", "set", "web", "--requires", "db").exit_code == 0
    assert run("policy", "set", "db", "--vcpus", "1").exit_code == 0

    def db_pin() -> object:
        with api_client(a.socket) as c:
            return c.get("/v1/guests/db/status").json()["actual"]["vcpupin"].get("0")

    def fleet(d: Daemon) -> dict[str, object]:
        with api_client(d.socket) as c:
            found: dict[str, object] = c.get("/v1/host").json()["fleet"]
        return found

    eventually(lambda: db_pin() == "1", 20)
    with api_client(b.run_dir / "virtpolicy-hook.sock") as hook:
        eventually(lambda: hook.get("/v1/guests/web/admission").json().get("allowed"), 20)
    lab = [str(PG_LAB)]
    subprocess.run([*lab, "stop"], check=True, timeout=60)
    try:
        refused = run("policy", "set", "db", "--vcpus", "2")
        assert refused.exit_code == 1
        assert refused.output.startswith("error: store postgresql+psycopg://")
        for d in (a, b):
            eventually(lambda d=d: fleet(d)["store"] == "unreachable", 20)
        assert db_pin() == "1"  # enforced as last read
        shown = run("--server", str(a.socket), "status", "-o", "json")
        assert shown.exit_code == 0, shown.output
        [db] = [s for s in json.loads(shown.stdout) if s["guest"] == "db"]
        assert db["problems"][-1].startswith("store: unreachable")
        with api_client(b.run_dir / "virtpolicy-hook.sock") as hook:
            stale = eventually(
                lambda: (got := hook.get("/v1/guests/web/admission")).status_code == 503 and got,
                20,
            )
        assert "store unreachable" in stale.json()["error"]["message"]
    finally:
        subprocess.run([*lab, "start"], check=True, timeout=60)
    for d in (a, b):
        eventually(lambda d=d: fleet(d)["store"] == "ok", 20)
    shown = json.loads(run("--server", str(a.socket), "status", "-o", "json").stdout)
    assert not any("store: unreachable" in p for s in shown for p in s["problems"])
    assert run("policy", "set", "db", "--vcpus", "0").exit_code == 0
    eventually(lambda: db_pin() == "0", 20)
    history = json.loads(run("policy", "history", "db", "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]


def test_a_fleet_wide_job_runs_each_guest_on_its_own_host_in_order(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """A chain that crosses hosts twice: cache (A) requires api (B) requires web (B)
    requires db (A). `stop --all` through host B and `start --all` through host A
    are each one job: every guest is stopped or started by its own host's daemon,
    in dependency order, and the CLI's table has each guest's host."""
    a, b = fleet_host("a"), fleet_host("b")
    run = Cli(pg_db)
    for guest, deps in [("db", []), ("web", ["db"]), ("api", ["web"]), ("cache", ["api"])]:
        requires = [arg for d in deps for arg in ("--requires", d)]
        assert run("policy", "set", guest, "--vcpus", "0", *requires).exit_code == 0
    assert run("policy", "set", "archive", "--vcpus", "0").exit_code == 0
    eventually(lambda: len(json.loads(run("hosts", "-o", "json").stdout)) == 2, 20)

    def job(via: Daemon, verb: str) -> list[dict[str, object]]:
        answer = run("--server", str(via.socket), verb, "--all", "-o", "json")
        assert answer.exit_code == 0, answer.output
        rows: list[dict[str, object]] = json.loads(answer.stdout)
        return rows

    def in_order(rows: list[dict[str, object]]) -> list[tuple[object, object, object]]:
        return [(r["guest"], r["host"], r["result"]) for r in rows]

    stopped = job(b, "stop")
    # archive may finish anywhere among them: nothing waits for it, nor it for any.
    assert ("archive", "host-a", "already stopped") in in_order(stopped)
    assert [r for r in in_order(stopped) if r[0] != "archive"] == [
        ("cache", "host-a", "stopped"),
        ("api", "host-b", "stopped"),
        ("web", "host-b", "stopped"),
        ("db", "host-a", "stopped"),
    ]
    started = [r for r in job(a, "start") if r["guest"] != "archive"]
    assert in_order(started) == [
        ("db", "host-a", "started"),
        ("web", "host-b", "started"),
        ("api", "host-b", "started"),
        ("cache", "host-a", "started"),
    ]
    # One record per job, with every guest's host, finished once.
    jobs = json.loads(run("jobs", "-o", "json").stdout)
    assert [(j["action"], j["state"], j["host"]) for j in jobs[:2]] == [
        ("start", "succeeded", "host-a"),
        ("stop", "succeeded", "host-b"),
    ]
    assert jobs[0]["hosts"] == {
        "archive": "host-a",
        "db": "host-a",
        "cache": "host-a",
        "web": "host-b",
        "api": "host-b",
    }
    assert jobs[0]["detail"] == "5 started"
    table = run("jobs", str(jobs[0]["id"])).stdout.splitlines()
    assert table[3].split()[:3] == ["GUEST", "HOST", "RESULT"]

    def running() -> dict[str, int]:
        return {h["name"]: h["running"] for h in json.loads(run("hosts", "-o", "json").stdout)}

    # Each host publishes what it started a moment after (changes are gathered).
    eventually(lambda: running() == {"host-a": 3, "host-b": 2}, 10)
    # A step of a host that is lost fails, naming it; nothing else waits for it.
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a.killed = True
    eventually(lambda: "lost" in run("hosts").stdout, 10)
    lost = run("--server", str(b.socket), "stop", "cache", "-o", "json")
    assert lost.exit_code == 1
    [row] = json.loads(lost.stdout)
    assert (row["guest"], row["host"], row["result"]) == ("cache", "host-a", "failed")
    assert row["detail"] == "its host host-a is lost: no daemon finished its step"


@pytest.mark.long
def test_three_hosts_one_of_them_real(
    pg_db: str,
    fleet_host: Callable[[str], Daemon],
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
    with_hook: Callable[[str, str], None],
    qemu_uri: str,
) -> None:
    """Hosts A and B on the test driver, host Q on the lab's libvirtd with two QEMU
    guests: qa requires archive (shut off on A), qb requires web (on B). A policy
    written through A's API is live on Q; a real `virsh start qa` is refused naming
    host A, and allowed once archive runs there; `stop --all` and `start --all`
    through other hosts run every guest on its own host in dependency order."""
    a, b = fleet_host("a"), fleet_host("b")
    q = start_daemon(pg_db, "--connect", qemu_uri, "--host", "host-q", "--heartbeat", "0.5")
    with_hook(str(q.run_dir), "closed")
    wait_connected(q)
    qa, qb = make_guest("fleet-qa"), make_guest("fleet-qb")
    run = Cli(pg_db)
    via_a, via_b = ("--server", str(a.socket)), ("--server", str(b.socket))
    for guest, deps in [("db", []), ("archive", []), ("web", ["db"])]:
        requires = [arg for d in deps for arg in ("--requires", d)]
        assert run(*via_b, "policy", "set", guest, "--vcpus", "0", *requires).exit_code == 0
    for guest, dep, pin in [(qa, "archive", "1"), (qb, "web", "0")]:
        answer = run(*via_a, "policy", "set", guest, "--requires", dep, "--vcpus", pin,
                     "--stop-action", "destroy")  # fmt: skip
        assert answer.exit_code == 0, answer.output
    hosts = lambda: {h["name"]: h["state"] for h in json.loads(run("hosts", "-o", "json").stdout)}  # noqa: E731
    eventually(lambda: hosts() == {"host-a": "up", "host-b": "up", "host-q": "up"}, 20)

    refused = try_virsh("start", qa)
    assert refused.returncode != 0
    assert f"{qa} requires archive (running): archive is shut off on host-a" in refused.stderr
    assert try_virsh("domstate", qa).stdout.strip() == "shut off"
    assert run(*via_a, "start", "archive").exit_code == 0
    eventually(lambda: try_virsh("start", qa).returncode == 0, 10)

    def pins(guest: str) -> dict[str, str]:
        rows = [line.split() for line in virsh("vcpupin", guest, "--live").splitlines()]
        return {r[0]: r[1] for r in rows if r}

    eventually(lambda: pins(qa) == {"0": "1", "1": "1"}, 10)  # written through A, live on Q

    def job(via: tuple[str, str], verb: str) -> dict[str, tuple[str, str, float]]:
        answer = run(*via, verb, "--all", "-o", "json")
        assert answer.exit_code == 0, answer.output
        return {
            r["guest"]: (r["host"], r["result"], r["seconds"]) for r in json.loads(answer.stdout)
        }

    stopped = job(("--server", str(q.socket)), "stop")
    assert {g: r[:2] for g, r in stopped.items()} == {
        "db": ("host-a", "stopped"),
        "archive": ("host-a", "stopped"),
        "web": ("host-b", "stopped"),
        qa: ("host-q", "destroyed"),
        qb: ("host-q", "already stopped"),
    }
    assert stopped[qb][2] <= stopped["web"][2] <= stopped["db"][2]
    assert stopped[qa][2] <= stopped["archive"][2]
    started = job(via_b, "start")
    assert {g: r[:2] for g, r in started.items()} == {
        "db": ("host-a", "started"),
        "archive": ("host-a", "started"),
        "web": ("host-b", "started"),
        qa: ("host-q", "started"),
        qb: ("host-q", "started"),
    }
    assert started["db"][2] <= started["web"][2] <= started[qb][2]
    assert started["archive"][2] <= started[qa][2]
    assert {try_virsh("domstate", g).stdout.strip() for g in (qa, qb)} == {"running"}
    eventually(lambda: pins(qb) == {"0": "0", "1": "0"}, 10)


def knows_the_fleet(run: Cli, daemon: Daemon) -> None:
    """Wait until ``daemon`` has read host B's guests (its fleet read, every beat)."""

    def there() -> bool:
        with api_client(daemon.socket) as api:
            return bool(api.get("/v1/host").json()["fleet"]["guests"] >= 2)

    eventually(lambda: there() or None, 20)


@pytest.mark.long
def test_a_fleet_job_ends_though_a_daemon_is_killed_and_restarted_mid_way(
    pg_db: str, fleet_host: Callable[..., Daemon]
) -> None:
    """db (A) <- web (B, start.delay 4) <- api (B) <- cache (A), one start job
    through A. B's daemon is killed while web waits out its delay, and a new one
    starts at once under the same name: it takes up B's unfinished steps, and
    the job ends (it stayed running for 23 minutes, web "starting", until A's
    daemon was stopped). Host B beats every 4 s, so that it looks lost only 12 s
    after its last beat: the new daemon must be up before then, and a daemon's
    start takes seconds on this machine while the rest of the suite runs (with
    beats every 2 s, 4 s at most, the job failed once in a run of the suite)."""
    a, b = fleet_host("a", "2"), fleet_host("b", "4")
    run = Cli(pg_db)
    for guest, deps in [("db", []), ("web", ["db"]), ("api", ["web"]), ("cache", ["api"])]:
        requires = [arg for d in deps for arg in ("--requires", d)]
        assert run("policy", "set", guest, "--vcpus", "0", *requires).exit_code == 0
    assert run("policy", "set", "web", "--start-delay", "4").exit_code == 0
    knows_the_fleet(run, a)
    stopped = run("--server", str(a.socket), "stop", "--all", "-o", "json")
    assert stopped.exit_code == 0, stopped.output
    with api_client(a.socket) as api:
        job = api.post("/v1/jobs", json={"action": "start", "all": True}).json()

    def step(guest: str) -> str:
        rows = json.loads(run("jobs", str(job["id"]), "-o", "json").stdout)["results"]
        return next((r["result"] for r in rows if r["guest"] == guest), "")

    eventually(lambda: step("web") == "starting" or None, 20)
    with api_client(b.socket) as api:  # started: its delay runs now
        eventually(lambda: api.get("/v1/guests/web/status").json().get("state") == "running")
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    b.killed = True
    fleet_host("b", "4")  # at once: host-b never looks lost

    def ended() -> dict[str, object] | None:
        found: dict[str, object] = json.loads(run("jobs", str(job["id"]), "-o", "json").stdout)
        return found if found["state"] != "running" else None

    final = eventually(ended, 30)
    results = {r["guest"]: r["result"] for r in final["results"]}  # type: ignore[attr-defined]
    assert final["state"] == "succeeded", final["results"]  # type: ignore[index]
    # The new daemon's test driver has its guests running again: they are found so.
    assert results == {
        "db": "started",
        "web": "already running",
        "api": "already running",
        "cache": "started",
    }


def test_a_guests_new_state_reaches_the_fleet_within_a_heartbeat(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """web stopped on host B: host A's status, `status --db` and the fleet rows
    say "shut off" within a few heartbeats, not at the next periodic pass (the
    status was as of the last pass, 300 s apart)."""
    a, b = fleet_host("a"), fleet_host("b")
    run = Cli(pg_db)
    assert run("policy", "set", "web", "--vcpus", "0").exit_code == 0
    knows_the_fleet(run, a)

    def seen(*via: str) -> str:
        rows = json.loads(run(*via, "status", "-o", "json").stdout)
        return next((r["state"] for r in rows if r["guest"] == "web"), "")

    eventually(lambda: seen("--server", str(a.socket)) == "running" or None, 20)
    stopped = run("--server", str(b.socket), "stop", "web")
    assert stopped.exit_code == 0, stopped.output
    eventually(lambda: seen("--server", str(a.socket)) == "shut off" or None, 5)
    eventually(lambda: seen() == "shut off" or None, 5)
    assert seen("--server", str(b.socket)) == "shut off"


@pytest.mark.alone("postgres")
def test_the_store_down_and_back_makes_no_host_lost(
    pg_db: str, fleet_host: Callable[[str], Daemon]
) -> None:
    """PostgreSQL stopped for longer than three heartbeats and started again: no
    daemon calls the other lost (no host beat while the store was down; each
    saw the other "lost (last heartbeat 24 s ago)", which failed job steps in
    flight), and each logs the outage once, not at every retry."""
    a, b = fleet_host("a"), fleet_host("b")
    run = Cli(pg_db)
    eventually(lambda: len(json.loads(run("hosts", "-o", "json").stdout)) == 2, 20)
    lab = [str(PG_LAB)]
    subprocess.run([*lab, "stop"], check=True, timeout=60)
    try:
        with api_client(a.socket) as api:
            eventually(lambda: api.get("/v1/host").json()["fleet"]["store"] == "unreachable", 20)
            refused = api.put("/v1/policies/web", json={"cpu": {"weight": 5}})
            assert refused.status_code == 503
            assert refused.headers["retry-after"]
            assert "\n" not in refused.json()["error"]["message"]
        cli = run("policy", "set", "web", "--weight", "5")
        assert (cli.exit_code, cli.output.count("\n")) == (1, 1)
        time.sleep(3 * 0.5 + 1.0)  # longer than three heartbeats: the outage itself
    finally:
        subprocess.run([*lab, "start"], check=True, timeout=60)
    back = time.time()
    for d in (a, b):  # four beats read since: a host taken for lost would show by now
        with api_client(d.socket) as api:
            eventually(lambda api=api: api.get("/v1/host").json()["fleet"]["store"] == "ok", 20)
            eventually(lambda api=api: api.get("/v1/host").json()["fleet"]["read_at"] > back + 2)
    for d in (a, b):
        log = d.log.read_text()
        assert " is lost " not in log, log
        assert log.count("store: store postgresql") <= 2  # the cache's and the passes' first line
    hosts = {h["name"]: h["state"] for h in json.loads(run("hosts", "-o", "json").stdout)}
    assert hosts == {"host-a": "up", "host-b": "up"}
