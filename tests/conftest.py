"""Shared fixtures: a real SQLite store, the CLI, and a real libvirtd with QEMU."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from virtpolicy.cli.main import cli
from virtpolicy.hook.install import MARKER, RETRY_S, install, uninstall
from virtpolicy.store import SqlStore

# -- sharing the labs between test processes ------------------------------------------
#
# The suite runs in several processes (pytest-xdist). Each test holds a shared
# lock on every lab it uses (libvirtd: the ``qemu_uri`` fixture; PostgreSQL:
# ``pg_url``, or ``any_db`` in its PostgreSQL run) and on the machine; a test that stops or restarts a lab, or whose
# figures another test's load would skew, holds that one alone (an exclusive
# lock: ``@pytest.mark.alone("libvirtd")``, and the ``with_hook`` fixture, whose
# hook answers for every guest that starts). Locks are taken in one order, so
# two processes never wait on each other.

LOCKS = Path(tempfile.gettempdir()) / "virtpolicy-test-locks"
RESOURCES = ("machine", "libvirtd", "postgres", "package")


@contextlib.contextmanager
def holding(resource: str, *, alone: bool) -> Iterator[None]:
    """A lock on ``resource`` shared with other tests, or held ``alone``: a
    test that waits to be alone goes before those that come after it (the
    turnstile), so it is never starved by a stream of shared holders."""
    LOCKS.mkdir(exist_ok=True)
    with (
        open(LOCKS / f"{resource}.turnstile", "a") as turnstile,
        open(LOCKS / f"{resource}.lock", "a") as lock,
    ):
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _uses(item: pytest.Item) -> set[str]:
    """The labs ``item`` uses: libvirtd through ``qemu_uri``, PostgreSQL through
    ``pg_url`` (``any_db`` asks for it by name in its PostgreSQL run)."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    on_pg = callspec is not None and callspec.params.get("any_db") == "postgres"
    return (
        {"machine"}
        | ({"libvirtd"} if "qemu_uri" in names else set())
        | ({"postgres"} if "pg_url" in names or on_pg else set())
    )


def _alone(item: pytest.Item) -> set[str]:
    """The labs ``item`` holds alone (see above)."""
    alone = {r for mark in item.iter_markers("alone") for r in mark.args}
    hooks = "with_hook" in getattr(item, "fixturenames", ()) and not per_guest_hooks()
    return alone | ({"libvirtd"} if hooks else set())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that hold a lab alone first (those that hold the whole machine
    first of all, before anything long has started), then those that need no
    lab, then the rest: each process takes its share of the list in order, so
    the few that must be alone run while the others are busy with tests that do
    not wait for them. Within each, tests marked ``long`` first."""

    def rank(item: pytest.Item) -> tuple[int, bool]:
        alone = _alone(item)
        # A long test goes first among its kind: last, it would end the run alone.
        long = item.get_closest_marker("long") is None
        if alone:
            return (0 if "machine" in alone else 1), long
        return (3 if _uses(item) - {"machine"} else 2), long

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _labs_shared(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold this test's locks on the labs it uses (see above) for its whole run."""
    used, alone = _uses(request.node), _alone(request.node)
    asked = time.monotonic()
    with contextlib.ExitStack() as held:
        for resource in RESOURCES:
            if resource in used | alone:
                held.enter_context(holding(resource, alone=resource in alone))
        got = time.monotonic()
        yield
    timeline = os.environ.get("VIRTPOLICY_TEST_TIMELINE")
    if timeline:  # where a run's time goes: each test's wait for its locks, and its run
        with open(timeline, "a") as out:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            out.write(
                f"{worker} {asked:.3f} {got:.3f} {time.monotonic():.3f} "
                f"{','.join(sorted(alone)) or '-'} {request.node.nodeid}\n"
            )


@dataclass
class Cli:
    """Runs ``virtpolicy --db DB ...`` in-process, like a user would."""

    db: str

    def __call__(self, *args: str, input: str | bytes | None = None) -> Result:
        return CliRunner().invoke(
            cli, ["--db", self.db, *args], input=input, catch_exceptions=False
        )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "policies.db")


@pytest.fixture
def store(db: str) -> Iterator[SqlStore]:
    s = SqlStore(db)
    yield s
    s.close()


@pytest.fixture
def run(db: str) -> Cli:
    return Cli(db)


def snapshot(db: str) -> tuple[int, str, list[tuple[str, int]]]:
    """Everything a refused request must leave alone: the global revision,
    every policy, and every revision ever written."""
    s = SqlStore(db)
    try:
        policies = "\n".join(
            p.policy.canonical_json() + f"@{p.revision}" for p in s.list_policies()
        )
        revisions = [(g, len(s.history(g))) for g in s.guests()]
        return s.global_revision(), policies, revisions
    finally:
        s.close()


#: A policy as a bad write once stored it (``tcp:[[]]:80`` kept as ``tcp:[]:80``).
BROKEN_DOC = '{"guest":"x2","requires":[{"guest":"db","when":"tcp:[]:80"}]}'


def break_policy(store: SqlStore, guest: str, doc: str) -> None:
    """Store ``doc`` as ``guest``'s current policy and its latest revision, as an
    older version (or a hand-edit) could have: past every check of the writing code."""
    from sqlalchemy import select, update  # noqa: PLC0415

    from virtpolicy.store.schema import policies, revisions  # noqa: PLC0415

    with store.engine.begin() as conn:
        number = conn.execute(
            select(policies.c.revision).where(policies.c.guest == guest)
        ).scalar_one()
        conn.execute(update(policies).where(policies.c.guest == guest).values(doc=doc))
        conn.execute(
            update(revisions)
            .where(revisions.c.guest == guest, revisions.c.revision == number)
            .values(doc=doc)
        )


# -- a real libvirtd with QEMU (tests/lab/libvirtd) ------------------------------

QEMU_URI = os.environ.get("VIRTPOLICY_QEMU_URI", "qemu:///system")

GUEST_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='{boot}'/></os>
  <devices><console type='pty'/>{disk}{balloon}</devices>
</domain>"""
DISK_XML = """<disk type='file' device='disk'><driver name='qemu' type='raw'/>
  <source file='{path}'/><target dev='hda' bus='ide'/></disk>"""

#: Boot sectors (x86 real mode) for guests with a known load under TCG:
#: ``jmp $`` spins a vCPU at 100 %; ``sti; hlt; jmp hlt`` sleeps until each interrupt.
BUSY = bytes([0xEB, 0xFE])
IDLE = bytes([0xFB, 0xF4, 0xEB, 0xFD])


def try_virsh(*args: str, uri: str = QEMU_URI) -> subprocess.CompletedProcess[str]:
    """Run virsh against the lab's libvirtd (or ``uri``); the caller judges the outcome."""
    return subprocess.run(
        ["virsh", "-q", "-c", uri, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def virsh(*args: str) -> str:
    """Run virsh against the lab's libvirtd and return its output (it must succeed)."""
    proc = try_virsh(*args)
    assert proc.returncode == 0, f"virsh {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def vcpu_affinity(output: str) -> dict[str, str]:
    """``virsh -q vcpupin GUEST``'s output as {vCPU: its CPU affinity}."""
    rows = (line.split() for line in output.splitlines() if line.strip())
    return {row[0]: row[-1] for row in rows if re.fullmatch(r"\d+", row[0])}


T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll ``check`` until it returns something true, and return that; or fail
    after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout} s (last: {last!r})")


def remove_guest(name: str) -> None:
    """Destroy and undefine ``name`` if it exists, and any hook a test left for it."""
    try_virsh("destroy", name)
    try_virsh("undefine", name)
    shutil.rmtree(GUEST_HOOKS / name, ignore_errors=True)


@pytest.fixture(scope="session")
def qemu_uri() -> str:
    """The URI of a real libvirtd with QEMU, or a skip saying why there is none.

    With VIRTPOLICY_REQUIRE_LAB=1 (set by CI) the skip becomes a failure.
    """
    reason = None
    if shutil.which("virsh") is None:
        reason = "virsh is not installed"
    else:
        with holding("libvirtd", alone=False):  # not while another test restarts it
            proc = try_virsh("version")
        if proc.returncode != 0:
            reason = f"no libvirtd answers on {QEMU_URI}: {proc.stderr.strip()}"
    if reason:
        reason += " (start one with: sudo tests/lab/libvirtd up)"
        if os.environ.get("VIRTPOLICY_REQUIRE_LAB"):
            pytest.fail(reason)
        pytest.skip(reason)
    with holding("libvirtd", alone=True):
        remove_stale_test_hook()
    return QEMU_URI


PG_LAB = Path(__file__).parent / "lab" / "postgres"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The URL of the lab's PostgreSQL, or a skip saying why there is none.

    With VIRTPOLICY_REQUIRE_LAB=1 (set by CI) the skip becomes a failure.
    """
    with holding("postgres", alone=False):  # not while another test stops it
        answers = subprocess.run([str(PG_LAB), "status"], check=False).returncode == 0
    if not answers:
        reason = "no lab PostgreSQL answers (start one with: sudo tests/lab/postgres up)"
        if os.environ.get("VIRTPOLICY_REQUIRE_LAB"):
            pytest.fail(reason)
        pytest.skip(reason)
    url = subprocess.run([str(PG_LAB), "url"], capture_output=True, text=True, check=True)
    return url.stdout.strip()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[str]:
    """A store URL on the lab's PostgreSQL whose tables live in a schema of this
    test's own (through ``search_path``), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"

    def admin(sql: str) -> None:  # a connection of its own (a test may restart the server)
        engine = create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
        engine.dispose()

    admin(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_url}&options=-csearch_path%3D{schema}"
    finally:
        admin(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on SQLite (a file) and, as a second run of the test, on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "policies.db")
    return str(request.getfixturevalue("pg_db"))


LAB_PIDFILE = Path("/run/virtpolicy-lab/libvirtd.pid")
HOOK = Path("/etc/libvirt/hooks/qemu")


def remove_stale_test_hook() -> None:
    """Take out a hook that an interrupted test run left behind.

    The hook tests install virtpolicy's hook pointing at a pytest temporary
    directory and remove it afterwards; a run killed in between leaves it, and
    with ``hook_failure=closed`` it refuses every start. Only such a hook, on a
    libvirtd that tests/lab/libvirtd runs, is removed (and libvirtd restarted
    so that it forgets it); any other hook is someone else's and stays.
    """
    if not LAB_PIDFILE.exists():
        return
    try:
        text = HOOK.read_text(errors="replace")
    except OSError:
        return
    match = re.search(r"^RUN_DIR='?([^'\n]*)'?$", text, flags=re.M)
    tmp_roots = tuple(str(Path(tempfile.gettempdir()) / p) for p in ("pytest-of-", RUN_DIRS))
    if MARKER not in text or match is None or not match.group(1).startswith(tmp_roots):
        return
    uninstall(str(HOOK.parent))
    subprocess.run(
        [str(Path(__file__).parent / "lab" / "libvirtd"), "restart"], check=True, timeout=60
    )


#: The lab's own hook (tests/lab/libvirtd) runs GUEST_HOOKS/GUEST/qemu for a
#: guest when there is one, and nothing otherwise.
GUEST_HOOKS = Path("/run/virtpolicy-lab/hooks")
DISPATCHER = "virtpolicy-lab-dispatcher"


def per_guest_hooks() -> bool:
    """Whether the lab's libvirtd runs the lab's own hook (each test's hook then
    answers for its own guests only, and nothing restarts)."""
    try:
        return DISPATCHER in HOOK.read_text(errors="replace")
    except OSError:
        return False


class GuestHooks:
    """The hook a test put in place (its daemon's sockets, its failure mode) for
    every guest it makes, those made before and after alike."""

    def __init__(self) -> None:
        self.guests: list[str] = []
        self.hook: tuple[str, str, float] | None = None

    def made(self, name: str) -> None:
        self.guests.append(name)
        if self.hook is not None:
            run_dir, failure, retry = self.hook
            install(str(GUEST_HOOKS / name), run_dir, failure, retry=retry)

    def put(self, run_dir: str, failure: str, retry: float = RETRY_S) -> None:
        self.hook = (run_dir, failure, retry)
        for name in self.guests:
            install(str(GUEST_HOOKS / name), run_dir, failure, retry=retry)


@pytest.fixture
def guest_hooks() -> GuestHooks:
    return GuestHooks()


@pytest.fixture
def make_guest(qemu_uri: str, guest_hooks: GuestHooks) -> Iterator[Callable[[str], str]]:
    """Define diskless QEMU guests named vp-test-*; destroyed and undefined after."""
    made: list[str] = []

    images = Path(tempfile.mkdtemp(prefix="vp-test-images-"))

    def define(
        suffix: str, *, vcpus: int = 2, boot: bytes | None = None, balloon: bool = True
    ) -> str:
        """A guest ``vp-test-SUFFIX``; with ``boot``, it boots that code from a disk;
        without ``balloon``, it has no balloon device (else libvirt's default one)."""
        name = f"vp-test-{suffix}"
        remove_guest(name)
        disk = ""
        if boot is not None:
            image = images / f"{name}.img"
            sector = boot.ljust(510, b"\0") + b"\x55\xaa"
            image.write_bytes(sector.ljust(1024 * 1024, b"\0"))
            disk = DISK_XML.format(path=image)
        xml = GUEST_XML.format(
            name=name,
            vcpus=vcpus,
            boot="hd" if boot else "network",
            disk=disk,
            balloon="" if balloon else "<memballoon model='none'/>",
        )
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(xml)
            f.flush()
            virsh("define", f.name)
        made.append(name)
        guest_hooks.made(name)
        return name

    yield define
    for name in made:
        remove_guest(name)
    shutil.rmtree(images, ignore_errors=True)


# -- `virtpolicy serve` as a real process ------------------------------------------

VIRTPOLICY = Path(sys.executable).parent / "virtpolicy"
BLOCKING = "BLOCKING CALL"  # what virtpolicy.loopguard logs
NODE = Path(__file__).parent / "integration" / "nodes" / "host4.xml"


@dataclass
class Daemon:
    """A running `virtpolicy serve` and where its sockets are."""

    proc: subprocess.Popen[str]
    run_dir: Path
    log: Path
    killed: bool = False  # a test killed it on purpose

    @property
    def socket(self) -> Path:
        return self.run_dir / "virtpolicy.sock"


#: Where daemons' sockets go: a Unix socket's path has at most 107 bytes, and
#: pytest's temporary directories (a worker's, a long test name) come close.
RUN_DIRS = "vp-run-"


@pytest.fixture
def short_dir() -> Iterator[Callable[[], Path]]:
    """``short_dir()``: a new directory with a short path (for a daemon's sockets),
    removed after the test."""
    made: list[str] = []

    def make() -> Path:
        made.append(tempfile.mkdtemp(prefix=RUN_DIRS))
        return Path(made[-1])

    yield make
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start_daemon(tmp_path: Path, short_dir: Callable[[], Path]) -> Iterator[Callable[..., Daemon]]:
    """Start `virtpolicy --db DB serve ARGS...`; waits for its sockets; stopped after
    the test with SIGTERM, which must end it cleanly (exit status 0).

    Every daemon runs with the loop guard on (VIRTPOLICY_LOOP_GUARD=1): a store or
    libvirt call made on its event loop's thread fails and is logged, and the
    test fails when its log shows one."""
    started: list[Daemon] = []

    def start(
        db: str,
        *args: str,
        ready: Callable[[Daemon], bool] | None = None,
        run_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        run_dir = run_dir or short_dir()
        log_path = tmp_path / f"serve{len(started)}.log"
        proc = subprocess.Popen(
            [str(VIRTPOLICY), "--db", db, "serve", "--run-dir", str(run_dir), *args],
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "VIRTPOLICY_LOOP_GUARD": "1", **(env or {})},
        )
        daemon = Daemon(proc, run_dir, log_path)
        started.append(daemon)
        deadline = time.monotonic() + 20
        while not (ready or (lambda d: d.socket.exists()))(daemon):
            assert proc.poll() is None, (tmp_path / f"serve{len(started) - 1}.log").read_text()
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.05)
        return daemon

    yield start
    for daemon in started:
        if not daemon.killed:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                assert daemon.proc.wait(timeout=15) == 0
            finally:
                daemon.proc.kill()
        blocking = [line for line in daemon.log.read_text().splitlines() if BLOCKING in line]
        assert blocking == [], f"blocking calls on the daemon's event loop: {blocking[:3]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https(db: str, tls: tuple[Path, Path], start_daemon: Callable[..., Daemon]) -> str:
    """A daemon on the test driver serving TCP with TLS on a free port; its URL."""
    url = f"https://127.0.0.1:{free_port()}"
    context = ssl.create_default_context(cafile=str(tls[0]))

    def answers(_daemon: Daemon) -> bool:
        try:
            httpx.get(url + "/v1/openapi.json", verify=context, timeout=1)
        except httpx.TransportError:
            return False
        return True

    start_daemon(
        db,
        "--connect",
        f"test://{NODE}",
        "--listen",
        url.removeprefix("https://"),
        "--tls-cert",
        str(tls[0]),
        "--tls-key",
        str(tls[1]),
        ready=answers,
    )
    return url


def api_client(socket: Path, timeout: float = 30.0) -> httpx.Client:
    """An HTTP client of a daemon's Unix socket."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://vp", timeout=timeout
    )


@pytest.fixture
def exec_dir() -> Iterator[str]:
    """A directory for the daemon's ``conditions.exec_dir`` holding ``sleep``, ``true``
    and ``false`` scripts, readable by the unprivileged user that runs them."""
    directory = Path(tempfile.mkdtemp(prefix="vp-exec-"))
    directory.chmod(0o755)
    for name in ("sleep", "true", "false"):
        script = directory / name
        script.write_text(f'#!/bin/sh\nexec {name} "$@"\n')
        script.chmod(0o755)
    yield str(directory)
    shutil.rmtree(directory, ignore_errors=True)


def wait_connected(daemon: Daemon) -> None:
    """Until the daemon has reconnected to the restarted libvirtd and made a pass."""
    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    deadline = time.monotonic() + 30
    with httpx.Client(transport=transport, base_url="http://vp") as client:
        while True:
            host = client.get("/v1/host").json()
            if host["connected"] and host["passes"] > 0:
                return
            assert time.monotonic() < deadline, host
            time.sleep(0.1)


LIBVIRTD_LAB = Path(__file__).parent / "lab" / "libvirtd"
HOOKS = "/etc/libvirt/hooks"


@pytest.fixture
def with_hook(qemu_uri: str, guest_hooks: GuestHooks) -> Iterator[Callable[..., None]]:
    """``with_hook(run_dir, failure[, retry])``: virtpolicy's hook, installed for the guests
    this test makes (through the lab's own hook: other tests' guests never see
    it). Where the lab's libvirtd has no hook of the lab's, the hook is installed
    for every guest and libvirtd restarted to load it (the test holds libvirtd
    alone), then removed and libvirtd restarted again."""
    if not LAB_PIDFILE.exists():
        pytest.skip("libvirtd was not started by tests/lab/libvirtd; not touching its hooks")
    if per_guest_hooks():
        yield guest_hooks.put
        for name in guest_hooks.guests:
            shutil.rmtree(GUEST_HOOKS / name, ignore_errors=True)
        return
    installed = False

    def put(run_dir: str, failure: str, retry: float = RETRY_S) -> None:
        nonlocal installed
        install(HOOKS, run_dir, failure, retry=retry)
        if not installed:
            subprocess.run([str(LIBVIRTD_LAB), "restart"], check=True, timeout=60)
        installed = True

    yield put
    if installed:
        uninstall(HOOKS)
        subprocess.run([str(LIBVIRTD_LAB), "restart"], check=True, timeout=60)
