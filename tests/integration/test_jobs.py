"""Jobs: starts and stops recorded as they run, in-process and in the daemon."""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli, Daemon, eventually, snapshot, try_virsh
from tests.integration.test_api import client
from virtpolicy.engine.jobs.settle import process_alive, settle, this_process
from virtpolicy.store import SqlStore

pytestmark = pytest.mark.integration

SHOP = Path(__file__).parent / "nodes" / "shop.xml"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cells(line: str) -> list[str]:
    """The columns of a table row (separated by three blanks or more)."""
    return re.split(r"\s{3,}", line.strip())


def test_cli_start_is_recorded_as_a_job(run: Cli) -> None:
    """An in-process start is a job of the CLI's; `jobs` lists it and shows it."""
    run("policy", "set", "db")
    run("policy", "set", "web", "--requires", "db")
    connect = ["--connect", f"test://{SHOP}"]  # each process: a fresh host, all running
    assert run("stop", "db", *connect).exit_code == 0
    assert run("start", "web", *connect).exit_code == 0
    jobs = json.loads(run("jobs", "-o", "json").stdout)
    assert [(j["id"], j["action"], j["state"], j["runner"]) for j in jobs] == [
        (2, "start", "succeeded", "cli"),
        (1, "stop", "succeeded", "cli"),
    ]
    assert jobs[0]["guests"] == ["db", "web"]
    assert jobs[0]["request"] == {"action": "start", "guests": ["web"]}
    assert [(r["guest"], r["result"]) for r in jobs[0]["results"]] == [
        ("db", "already running"),
        ("web", "already running"),
    ]
    assert [(r["guest"], r["result"]) for r in jobs[1]["results"]] == [
        ("web", "stopped"),
        ("db", "stopped"),
    ]
    assert jobs[0]["detail"] == "2 already running"
    shown = run("jobs", "2").stdout.splitlines()
    assert shown[0] == "job 2: start, succeeded: 2 already running"
    assert shown[1].startswith(f"run by {jobs[0]['actor']} through the cli (pid ")
    here = socket.gethostname()  # the CLI ran both guests' steps itself
    assert [line.split()[:4] for line in shown[3:]] == [
        ["GUEST", "HOST", "RESULT", "TIME"],
        ["db", here, "already", "running"],
        ["web", here, "already", "running"],
    ]
    listed = run("jobs").stdout.splitlines()
    assert listed[0].split() == [
        "ID",
        "ACTION",
        "STATE",
        "DONE",
        "HOSTS",
        "RUNNER",
        "ACTOR",
        "CREATED",
        "DETAIL",
    ]
    assert listed[1].split()[:6] == ["2", "start", "succeeded", "2/2", here, "cli"]


def test_failed_start_is_a_failed_job(run: Cli) -> None:
    """A dependency libvirt does not know fails the job, and its dependents with it."""
    run("policy", "set", "web", "--requires", "nosuch")
    result = run("start", "web", "--connect", f"test://{SHOP}")
    assert result.exit_code == 1
    job = json.loads(run("jobs", "1", "-o", "json").stdout)
    assert job["state"] == "failed"
    assert {r["guest"]: r["result"] for r in job["results"]} == {
        "nosuch": "failed",
        "web": "held back",
    }


def test_a_job_whose_process_died_is_settled(store: SqlStore, run: Cli) -> None:
    """A running job of a process that is gone becomes interrupted, saying how far
    it got; one whose process lives stays running."""
    dead = "4194303:1"  # above Linux's largest PID: no such process
    assert not process_alive(dead)
    assert process_alive(this_process())
    host = socket.gethostname()
    orphan = store.add_job(
        "start", {}, ["db", "api", "web"], runner="cli", host=host, process=dead, actor="x"
    )
    store.update_job(
        orphan.id,
        [
            {"guest": "db", "result": "started", "seconds": 0.5, "detail": ""},
            {"guest": "api", "result": "starting", "seconds": 0.6, "detail": ""},
        ],
    )
    alive = store.add_job(
        "start", {}, ["db"], runner="cli", host=host, process=this_process(), actor="x"
    )
    elsewhere = store.add_job(
        "start", {}, ["db"], runner="daemon", host="other-host", process=dead, actor="x"
    )
    job = json.loads(run("jobs", str(orphan.id), "-o", "json").stdout)
    assert job["state"] == "interrupted"
    assert job["detail"] == (
        f"the cli running this job (pid 4194303 on {host}) ended before it did; "
        "1 of 3 guests were done"
    )
    assert [(r["guest"], r["result"]) for r in job["results"]] == [
        ("db", "started"),
        ("api", "interrupted"),
    ]
    shown = run("jobs", str(orphan.id)).stdout.splitlines()
    assert [cells(line)[:3] for line in shown[4:]] == [
        ["db", host, "started"],
        ["api", host, "interrupted"],
        ["web", host, "not reached"],
    ]
    assert store.job(alive.id).state == "running"
    assert store.job(elsewhere.id).state == "running"  # another host judges its own
    assert settle(store) == []  # settled once
    # A finished job is not written again.
    assert not store.update_job(orphan.id, [], state="failed", detail="late")
    assert store.job(orphan.id).detail == job["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "reboot", "guests": ["web"]}, "action: "),
        ({"action": "start"}, "exactly one of them"),
        ({"action": "start", "guests": ["web"], "all": True}, "exactly one of them"),
        ({"action": "start", "guests": ["we b/"]}, "guests[0]: "),
        ({"action": "start", "all": True, "concurrency": 0}, "concurrency: "),
        ({"action": "start", "all": True, "colour": "red"}, "colour"),
        ([], "body: must be a JSON object"),
    ],
)
def test_bad_job_requests_are_refused(store: SqlStore, db: str, body: Any, message: str) -> None:
    """422 with one line naming the field; no job is recorded, the store is unchanged."""
    before = snapshot(db)
    with client(store, "unix") as rw:
        r = rw.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]
    assert "\n" not in r.json()["error"]["message"]
    assert store.jobs() == []
    assert snapshot(db) == before


def test_cli_refuses_bad_selection(run: Cli, store: SqlStore) -> None:
    """CLI refuses bad selection."""
    for args in (["web", "--all"], [], ["--all", "--label", "a=b"]):
        result = run("start", *args, "--connect", f"test://{SHOP}")
        assert result.exit_code == 2, result.output
    assert store.jobs() == []


def test_reading_jobs_needs_no_daemon_but_submitting_does(store: SqlStore) -> None:
    """A reader may list jobs; only an operator may submit; a reader is refused 403."""
    with client(store, "unix-ro") as ro:
        assert ro.get("/v1/jobs").json() == []
        assert ro.post("/v1/jobs", json={"action": "start", "all": True}).status_code == 403
        assert ro.get("/v1/jobs/7").status_code == 404
    assert store.jobs() == []


# -- the daemon runs jobs, on a real libvirtd -----------------------------------------


def _api(daemon: Daemon) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://vp", timeout=30
    )


def test_start_and_stop_run_in_the_daemon(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
) -> None:
    """`start --server` has the daemon run the job and follows it to the same table."""
    dbg, web = make_guest("jdb"), make_guest("jweb")
    run("policy", "set", dbg, "--stop-action", "destroy")
    run("policy", "set", web, "--requires", dbg, "--stop-action", "destroy")
    daemon = start_daemon(db, "--connect", qemu_uri, "--reconcile-interval", "3600")
    server = ["--server", str(daemon.socket)]
    started = run(*server, "start", web)
    assert started.exit_code == 0, started.output
    rows = [line.split()[:3] for line in started.stdout.splitlines()]
    assert rows == [
        ["GUEST", "HOST", "RESULT"],
        [dbg, socket.gethostname(), "started"],
        [web, socket.gethostname(), "started"],
    ]
    assert try_virsh("domstate", web).stdout.strip() == "running"
    stopped = run(*server, "stop", dbg, "-o", "json")
    assert stopped.exit_code == 0, stopped.output
    assert [(r["guest"], r["result"]) for r in json.loads(stopped.stdout)] == [
        (web, "destroyed"),
        (dbg, "destroyed"),
    ]
    jobs = json.loads(run(*server, "jobs", "-o", "json").stdout)
    assert [(j["action"], j["state"], j["runner"], j["actor"]) for j in jobs] == [
        ("stop", "succeeded", "daemon", "root"),
        ("start", "succeeded", "daemon", "root"),
    ]
    assert jobs[1]["process"].partition(":")[0] == str(daemon.proc.pid)


def test_daemon_killed_mid_start_leaves_a_job_record_that_says_so(
    qemu_uri: str,
    db: str,
    run: Cli,
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[[str], str],
) -> None:
    """SIGKILL while web waits for db's port: the record shows db started, and,
    read afterwards, that the daemon ended before the job did and web was not reached."""
    dbg, web = make_guest("kdb"), make_guest("kweb")
    port = closed_port()
    run("policy", "set", dbg)
    run("policy", "set", web, "--requires", f"{dbg}@tcp:127.0.0.1:{port}")
    daemon = start_daemon(db, "--connect", qemu_uri, "--reconcile-interval", "3600")
    with _api(daemon) as api:
        r = api.post("/v1/jobs", json={"action": "start", "guests": [web]})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.headers["location"] == f"/v1/jobs/{job_id}"
    # Wait until the store (not only the daemon's memory) has db's start.
    store = SqlStore(db)
    eventually(lambda: any(x["result"] == "started" for x in store.job(job_id).results), 30)
    assert store.job(job_id).state == "running"
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    daemon.killed = True
    job = json.loads(run("jobs", str(job_id), "-o", "json").stdout)
    assert job["state"] == "interrupted"
    assert job["detail"] == (
        f"the daemon running this job (pid {daemon.proc.pid} on {socket.gethostname()}) "
        "ended before it did; 1 of 2 guests were done"
    )
    shown = run("jobs", str(job_id)).stdout.splitlines()
    here = socket.gethostname()
    assert [cells(line)[:3] for line in shown[4:]] == [
        [dbg, here, "started"],
        [web, here, "interrupted"],
    ]
    assert cells(shown[5])[4] == ("was waiting when the job's process ended; check its state")
    assert try_virsh("domstate", web).stdout.strip() == "shut off"
    store.close()
