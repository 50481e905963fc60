"""libvirt's hook on a real libvirtd: `virsh start` asks virtpolicy first."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    NODE,
    Cli,
    Daemon,
    eventually,
    try_virsh,
    virsh,
    wait_connected,
)
from virtpolicy.hook.install import hook_text

pytestmark = pytest.mark.integration


def test_start_is_refused_until_the_dependency_runs(
    with_hook: Callable[[str, str], None],
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
    qemu_uri: str,
    db: str,
    run: Cli,
) -> None:
    """`virsh start web` with db shut off fails with the reason; with db up it works."""
    dbg, web = make_guest("hdb"), make_guest("hweb")
    run("policy", "set", web, "--requires", dbg)
    daemon = start_daemon(db, "--connect", qemu_uri)
    with_hook(str(daemon.run_dir), "open")
    wait_connected(daemon)
    refused = try_virsh("start", web)
    assert refused.returncode != 0
    assert f"{web} requires {dbg} (running): {dbg} is shut off" in refused.stderr
    assert "Hook script execution failed" in refused.stderr
    assert try_virsh("domstate", web).stdout.strip() == "shut off"
    virsh("start", dbg)
    virsh("start", web)
    assert try_virsh("domstate", web).stdout.strip() == "running"
    # A stop is reported in the background: libvirtd did not wait for it.
    virsh("destroy", web)
    log = daemon.log
    eventually(lambda: f"hook guest={web} release end" in log.read_text(), 10)


def test_daemon_down_follows_hook_failure(
    with_hook: Callable[[str, str], None],
    make_guest: Callable[[str], str],
    tmp_path: Path,
    run: Cli,
) -> None:
    """With no daemon answering, hook_failure=closed refuses and open allows (once
    the hook has tried the socket again for its ``retry``, short here)."""
    dbg, web = make_guest("fdb"), make_guest("fweb")
    run("policy", "set", web, "--requires", dbg)
    nowhere = str(tmp_path / "no-daemon")
    with_hook(nowhere, "closed", 0.3)
    refused = try_virsh("start", web)
    assert refused.returncode != 0
    assert f"hook_failure=closed refuses {web}" in refused.stderr
    with_hook(nowhere, "open", 0.3)
    virsh("start", web)
    assert try_virsh("domstate", web).stdout.strip() == "running"


def test_daemon_autostarts_in_order_through_its_own_hook(
    with_hook: Callable[[str, str], None],
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
    qemu_uri: str,
    db: str,
    run: Cli,
    short_dir: Callable[[], Path],
) -> None:
    """At daemon start, autostart guests start in dependency order; the hook asks
    the daemon about each start while the daemon's own start call is in flight."""
    dbg, web = make_guest("adb"), make_guest("aweb")
    run("policy", "set", dbg, "--autostart")
    run("policy", "set", web, "--autostart", "--requires", dbg)
    run_dir = short_dir()
    with_hook(str(run_dir), "closed")  # a hook that cannot reach us would refuse
    virsh("autostart", web)  # libvirt's own flag too: the status must warn
    daemon = start_daemon(db, "--connect", qemu_uri, run_dir=run_dir)
    eventually(lambda: try_virsh("domstate", web).stdout.strip() == "running", 30)
    assert daemon.proc.poll() is None
    assert try_virsh("domstate", dbg).stdout.strip() == "running"
    wait_connected(daemon)
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://vp"
    ) as c:
        problems = c.get(f"/v1/guests/{web}/status").json()["problems"]
        # The autostart is a job of the daemon's, recorded guest by guest.
        job = eventually(lambda: (j := c.get("/v1/jobs").json()[0])["state"] != "running" and j)
    assert any("libvirt's own autostart is on too" in p for p in problems)
    assert (job["actor"], job["runner"], job["state"]) == (
        "virtpolicy (autostart)",
        "daemon",
        "succeeded",
    )
    in_order = [r["guest"] for r in sorted(job["results"], key=lambda r: r["seconds"])]
    assert in_order == [dbg, web]
    assert [r["result"] for r in job["results"]] == ["started", "started"]
    virsh("autostart", web, "--disable")


def test_diamond_through_the_daemon_with_the_hook(
    with_hook: Callable[[str, str], None],
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
    qemu_uri: str,
    db: str,
    run: Cli,
    short_dir: Callable[[], Path],
    exec_dir: str,
) -> None:
    """db <- api <- web, db <- cache <- web on QEMU, run as a job of the daemon while
    the hook (closed) asks it about every start: db first, api and cache starting at
    the same time (both in flight before either is up), web last; `stop db` then
    stops web, then api and cache, then db."""
    g = {n: make_guest(f"d{n}") for n in ("db", "api", "cache", "web")}
    destroy = ["--stop-action", "destroy"]  # diskless guests have no OS to shut down
    run("policy", "set", g["db"], *destroy)
    for middle in ("api", "cache"):
        run("policy", "set", g[middle], "--requires", f"{g['db']}@exec:sleep 1", *destroy)
    run("policy", "set", g["web"], "--requires", g["api"], "--requires", g["cache"], *destroy)
    run_dir = short_dir()
    with_hook(str(run_dir), "closed")
    daemon = start_daemon(db, "--connect", qemu_uri, "--exec-dir", exec_dir, run_dir=run_dir)
    wait_connected(daemon)
    server = ["--server", str(daemon.socket)]
    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    with (
        httpx.Client(transport=transport, base_url="http://vp", timeout=30) as api,
        api.stream("GET", "/v1/events", params={"kind": "job"}) as stream,
    ):
        result = run(*server, "start", g["web"], "-o", "json")
        assert result.exit_code == 0, result.output
        moves = []  # (guest, event) in the order the daemon published them
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if "guest" in event:
                    moves.append((event["guest"], event["result"]))
                elif event["state"] != "running":
                    break
    assert {r["guest"]: r["result"] for r in json.loads(result.stdout)} == dict.fromkeys(
        g.values(), "started"
    )
    at = {move: i for i, move in enumerate(moves)}
    assert at[g["db"], "started"] < at[g["api"], "starting"]
    assert at[g["db"], "started"] < at[g["cache"], "starting"]
    both_in_flight = max(at[g["api"], "starting"], at[g["cache"], "starting"])
    assert both_in_flight < min(at[g["api"], "started"], at[g["cache"], "started"]), moves
    assert max(at[g["api"], "started"], at[g["cache"], "started"]) < at[g["web"], "starting"]
    stopped = run(*server, "stop", g["db"], "-o", "json")
    assert stopped.exit_code == 0, stopped.output
    t = {r["guest"]: r["seconds"] for r in json.loads(stopped.stdout)}
    assert t[g["web"]] < min(t[g["api"]], t[g["cache"]])
    assert max(t[g["api"]], t[g["cache"]]) < t[g["db"]]
    assert {try_virsh("domstate", x).stdout.strip() for x in g.values()} == {"shut off"}


@pytest.mark.parametrize("client", ["perl", "python"])
def test_hook_program_asks_the_daemon_with_either_client(
    client: str, start_daemon: Callable[..., Daemon], db: str, run: Cli, tmp_path: Path
) -> None:
    """The hook program, run as libvirtd runs it (domain XML on standard input),
    gets the same answers through its Perl client and its Python fallback: a
    refusal with the daemon's reason and status 1, an allowed start (a name that
    needs quoting included), and hook_failure when the daemon is gone."""
    run("policy", "set", "api", "--requires", "ghost")
    run("policy", "set", "web", "--requires", "db", "--vcpus", "1")
    run("policy", "set", "big", "--vcpupin", "1:6")
    wide = {"guest": "wide", "cpu": {"placement": "dedicated"}}
    assert run("apply", "-f", "-", input=json.dumps(wide)).exit_code == 0
    daemon = start_daemon(db, "--connect", f"test://{NODE}")
    wait_connected(daemon)
    program = tmp_path / f"qemu-{client}"

    def hook(
        guest: str,
        run_dir: Path,
        failure: str = "open",
        operation: str = "prepare",
        xml: str = "<domain/>",
    ) -> subprocess.CompletedProcess[str]:
        text = hook_text(str(run_dir), failure, str(tmp_path / "none"), client, retry=0.3)
        program.write_text(text)
        program.chmod(0o755)
        argv = [str(program), guest, operation, "begin", "-"]
        done = subprocess.run(
            argv, check=False, input=xml, capture_output=True, text=True, timeout=30
        )
        return done

    refused = hook("api", daemon.run_dir)
    assert (refused.returncode, refused.stderr.strip()) == (
        1,
        "api requires ghost (running): ghost is not defined on this host or any other",
    )
    allowed = hook("web", daemon.run_dir)
    assert (allowed.returncode, allowed.stderr) == (0, "")
    odd = hook("we b é%", daemon.run_dir)
    assert (odd.returncode, odd.stderr) == (0, "")
    # On the destination of a migration (the domain XML on standard input): fixed
    # pins onto CPUs this host lacks refuse it; nothing on standard output keeps
    # the XML as it is.
    moving = hook("big", daemon.run_dir, operation="migrate")
    assert (moving.returncode, moving.stdout) == (1, "")
    assert moving.stderr.strip() == (
        "big: cpu.vcpupin.1 = 6 names host CPUs this host lacks (it has 4: 0-3);"
        " pin it for this host, or use cpu.vcpus: auto"
    )
    fits = hook("web", daemon.run_dir, operation="migrate")
    assert (fits.returncode, fits.stdout, fits.stderr) == (0, "", "")
    # wide asks for dedicated CPUs: the placer counts its vCPUs from the XML (the
    # ones it runs with) against this host's 4 CPUs.
    xml = "<domain><name>wide</name><vcpu placement='static' current='5'>8</vcpu></domain>"
    too_wide = hook("wide", daemon.run_dir, operation="migrate", xml=xml)
    assert (too_wide.returncode, too_wide.stderr.strip()) == (
        1,
        "wide: needs 5 dedicated host CPUs; node 0 has 4 free",
    )
    narrow = hook("wide", daemon.run_dir, operation="migrate", xml=xml.replace("'5'", "'3'"))
    assert (narrow.returncode, narrow.stdout, narrow.stderr) == (0, "", "")
    gone = tmp_path / "gone"
    closed = hook("api", gone, "closed")
    assert closed.returncode == 1
    assert "hook_failure=closed refuses api" in closed.stderr
    assert hook("api", gone, "open").returncode == 0


@pytest.mark.parametrize("client", ["perl", "python"])
def test_a_daemon_that_comes_back_within_the_retry_answers(
    client: str, short_dir: Callable[[], Path]
) -> None:
    """The daemon away (a restart during an upgrade) is tried again: a start
    asked meanwhile gets the daemon's answer once it is back, not hook_failure
    (closed here). Away is a socket that is not there, then one that lets the
    connection go unanswered (a daemon stopping resets those it had not yet
    accepted), then one that answers 503 (a daemon not yet connected to
    libvirtd), then the answer."""
    where = short_dir()
    program = where / "qemu"
    program.write_text(hook_text(str(where), "closed", str(where / "none"), client))
    program.chmod(0o755)
    path = where / "virtpolicy-hook.sock"
    hook = subprocess.Popen(
        [str(program), "web", "prepare", "begin", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    answers = [
        None,  # closed unread, unanswered
        b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n"
        b'{"error": {"message": "not connected to qemu:///system yet"}}',
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        b"refused\nweb requires db (running): db is shut off\n",
    ]
    requests = []
    try:
        # No socket yet: the hook's client has tried for half a second (five tries)
        # when the daemon comes back. Without the retry it would have refused.
        eventually(lambda: _client_age(hook.pid) >= 0.5, 10)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen(1)
            server.settimeout(10)
            for answer in answers:
                conn, _ = server.accept()
                with conn:
                    if answer is None:
                        continue
                    requests.append(conn.recv(65536).decode())
                    conn.sendall(answer)
        _, err = hook.communicate(timeout=10)
    finally:
        hook.kill()
    assert [r.split("\r\n")[0] for r in requests] == ["GET /v1/guests/web/admission HTTP/1.0"] * 2
    assert (hook.returncode, err.strip()) == (1, "web requires db (running): db is shut off")


def _client_age(pid: int) -> float:
    """How long the hook's client (the shell's child, perl or python) has run (s);
    0 before it starts."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = children.read_text().split() if children.exists() else []
    if not found:
        return 0.0
    try:
        stat = Path(f"/proc/{found[0]}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    started = int(stat.rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")
    return float(Path("/proc/uptime").read_text().split()[0]) - started
