"""Real Linux guests (tests/lab/linux-guest): the guest agent, ACPI shutdown with its
timeout, ordered stops, and memory figures from the balloon driver.

Each guest boots Debian's cloud kernel with a busybox initramfs and
qemu-guest-agent. KVM is used where a KVM guest's agent answers on this
machine, TCG otherwise (the choice is made once per run and printed).
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    Cli,
    Daemon,
    api_client,
    eventually,
    holding,
    remove_guest,
    try_virsh,
    virsh,
)

pytestmark = pytest.mark.integration

LAB = Path(__file__).parents[1] / "lab"
XML = """<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel><initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 {flags}</cmdline></os>
  <features><acpi/></features>
  <devices>
    <serial type='file'><source path='{console}'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>"""


def agent_answers(name: str) -> bool:
    ping = '{"execute": "guest-ping"}'
    return try_virsh("qemu-agent-command", name, ping, "--timeout", "2").returncode == 0


CONSOLES = Path(tempfile.gettempdir()) / "vp-test-consoles"


def console_log(name: str) -> str:
    """What the guest printed on its serial console so far."""
    path = CONSOLES / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def define(name: str, image: tuple[str, str], kind: str, flags: str = "") -> str:
    remove_guest(name)
    CONSOLES.mkdir(exist_ok=True)
    console = CONSOLES / f"{name}.log"
    console.unlink(missing_ok=True)
    xml = XML.format(
        kind=kind, name=name, kernel=image[0], initrd=image[1], flags=flags, console=console
    )
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        virsh("define", f.name)
    return name


@pytest.fixture(scope="session")
def linux_image(qemu_uri: str) -> tuple[str, str]:
    """(kernel, initrd) of the lab's Linux guest, built once per machine."""
    out = subprocess.run(
        [str(LAB / "linux-guest"), "build"], capture_output=True, text=True, check=True, timeout=600
    )
    kernel, initrd = out.stdout.split()
    return kernel, initrd


@pytest.fixture(scope="session")
def accel(linux_image: tuple[str, str]) -> str:
    """'kvm' when a KVM guest's agent answers here within 30 s, else 'qemu' (TCG).
    Decided once per machine and kept beside the image."""
    decided = Path(linux_image[0]).parent / "accel"
    if decided.exists():
        return decided.read_text().strip()
    kind = "qemu"
    if Path("/dev/kvm").exists():
        with holding("libvirtd", alone=False):
            kind = probe_kvm(linux_image)
    decided.write_text(kind + "\n")
    return kind


def probe_kvm(linux_image: tuple[str, str]) -> str:
    """'kvm' when a KVM guest's agent answers within 30 s, else 'qemu'."""
    name = define("vp-test-kvm-probe", linux_image, "kvm")
    try:
        if try_virsh("start", name).returncode == 0:
            with contextlib.suppress(pytest.fail.Exception):
                eventually(lambda: agent_answers(name), timeout=30)
                return "kvm"
    finally:
        remove_guest(name)
    return "qemu"


@pytest.fixture
def linux_guest(linux_image: tuple[str, str], accel: str) -> Iterator[Callable[..., str]]:
    """Define real Linux guests vp-test-SUFFIX; destroyed and undefined after."""
    made: list[str] = []
    print(f"real Linux guests run under {'KVM' if accel == 'kvm' else 'TCG'}")

    def make(suffix: str, flags: str = "") -> str:
        made.append(define(f"vp-test-{suffix}", linux_image, accel, flags))
        return made[-1]

    yield make
    for name in made:
        remove_guest(name)


def results(output: str) -> dict[str, dict[str, object]]:
    return {r["guest"]: r for r in json.loads(output)}


@pytest.mark.long
def test_requires_agent_waits_for_the_agent(
    linux_guest: Callable[..., str], make_guest: Callable[..., str], run: Cli, qemu_uri: str
) -> None:
    """`start app` with app requiring db@agent: db boots, app starts only once db's agent
    answers; with an agent that never comes, app is held back when the timeout ends."""
    db = linux_guest("lx-db")
    mute = linux_guest("lx-mute", "virtpolicy.noagent")
    app, app2 = make_guest("lx-app"), make_guest("lx-app2")
    destroy = ["--stop-action", "destroy"]
    run("policy", "set", app, "--requires", f"{db}@agent", *destroy)
    out = run("start", app, "--connect", qemu_uri, "-o", "json")
    assert out.exit_code == 0, out.output
    done = results(out.stdout)
    assert (done[db]["result"], done[app]["result"]) == ("started", "started")
    assert done[app]["seconds"] > done[db]["seconds"]
    assert agent_answers(db)
    # The same with an agent that never answers (timeout 5 s).
    doc = {"guest": app2, "requires": [{"guest": mute, "when": "agent", "timeout": 5}]}
    assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    held = run("start", app2, "--connect", qemu_uri, "-o", "json")
    assert held.exit_code == 1
    assert results(held.stdout)[app2]["result"] == "held back"
    assert "guest agent of" in str(results(held.stdout)[app2]["detail"])
    assert virsh("domstate", app2).strip() == "shut off"


@pytest.mark.long
def test_shutdown_within_its_timeout_and_escalation_only_when_asked(
    linux_guest: Callable[..., str], run: Cli, qemu_uri: str
) -> None:
    """A guest that honours shutdown stops with action shutdown; one that ignores both
    the power button and has no agent (libvirt asks the agent first when there is
    one) fails at its timeout, and is destroyed only with stop.escalate."""
    good = linux_guest("lx-good")
    deaf = linux_guest("lx-deaf", "virtpolicy.noacpi virtpolicy.noagent")
    for name in (good, deaf):
        virsh("start", name)
    eventually(lambda: agent_answers(good), timeout=120)
    eventually(lambda: "virtpolicy lab guest up" in console_log(deaf), timeout=120)
    run("policy", "set", good, "--stop-action", "shutdown", "--stop-timeout", "60")
    run("policy", "set", deaf, "--stop-action", "shutdown", "--stop-timeout", "2")
    stopped = run("stop", good, "--connect", qemu_uri, "-o", "json")
    assert results(stopped.stdout)[good]["result"] == "stopped", stopped.output
    refused = run("stop", deaf, "--connect", qemu_uri, "-o", "json")
    assert refused.exit_code == 1
    assert "did not shut down within 2 s" in str(results(refused.stdout)[deaf]["detail"])
    assert virsh("domstate", deaf).strip() == "running"
    escalate = {"guest": deaf, "stop": {"action": "shutdown", "timeout": 2, "escalate": True}}
    assert run("apply", "-f", "-", input=json.dumps(escalate)).exit_code == 0
    forced = run("stop", deaf, "--connect", qemu_uri, "-o", "json")
    assert results(forced.stdout)[deaf]["result"] == "destroyed after shutdown timed out"
    assert virsh("domstate", deaf).strip() == "shut off"


@pytest.mark.long
def test_ordered_stop_of_a_chain(linux_guest: Callable[..., str], run: Cli, qemu_uri: str) -> None:
    """c requires b requires a, all real: `stop a` shuts down c, then b, then a, each
    through its OS."""
    a, b, c = (linux_guest(f"lx-chain{n}") for n in "abc")
    run("policy", "set", b, "--requires", a)
    run("policy", "set", c, "--requires", b)
    started = run("start", c, "--connect", qemu_uri, "-o", "json")
    assert started.exit_code == 0, started.output
    eventually(lambda: all(agent_answers(g) for g in (a, b, c)), timeout=120)
    out = run("stop", a, "--connect", qemu_uri, "-o", "json")
    assert out.exit_code == 0, out.output
    done = results(out.stdout)
    assert {g: r["result"] for g, r in done.items()} == {a: "stopped", b: "stopped", c: "stopped"}
    finished = sorted(done, key=lambda g: float(done[g]["seconds"]))  # type: ignore[arg-type]
    assert finished == [c, b, a]


def agent_exec(name: str, script: str) -> int:
    """Start ``script`` in the guest (``/bin/sh -c``) through its agent: its pid."""
    command = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
    sent = {"execute": "guest-exec", "arguments": command}
    return int(json.loads(virsh("qemu-agent-command", name, json.dumps(sent)))["return"]["pid"])


def agent_exec_status(name: str, pid: int) -> dict[str, object]:
    """How a command started by :func:`agent_exec` is doing (``exited``, ``exitcode``)."""
    asked = {"execute": "guest-exec-status", "arguments": {"pid": pid}}
    answer: dict[str, object] = json.loads(virsh("qemu-agent-command", name, json.dumps(asked)))[
        "return"
    ]
    return answer


def balloon_kib(name: str) -> int:
    """The balloon's size now (`virsh dommemstat`'s actual)."""
    rows = dict(line.split() for line in virsh("dommemstat", name).splitlines() if line.strip())
    return int(rows["actual"])


@pytest.mark.long
def test_the_memory_tuner_takes_down_to_the_floor_and_gives_back_to_a_guest_in_need(
    linux_guest: Callable[..., str],
    start_daemon: Callable[..., Daemon],
    run: Cli,
    db: str,
    qemu_uri: str,
) -> None:
    """The sampler reports the guest's own view of its memory (its balloon
    driver's available and unused). With a target the host is always over, an
    idle guest's balloon goes down to its floor and never below; then the guest fills 60 % of what it has, more
    than it has unused, and gets memory back in time, within two rounds of
    being short (a guest nearly out of memory is in distress: it has no swap to
    show it otherwise). Each move is in the decision log."""
    guest = linux_guest("lx-balloon")
    virsh("start", guest)
    eventually(lambda: agent_answers(guest), timeout=120)
    assert run("policy", "set", guest, "--memory-balloon", "auto", "--memory-floor", "160M")
    daemon = start_daemon(
        db, "--connect", qemu_uri, "--sample-interval", "1", "--tuner", "static,memory",
        "--memory-target", "1", "--set", "dwell=1", "--set", "memory.step=20",
        *(("--memory-ksm", "auto") if KSM_FOUND else ()),
    )  # fmt: skip
    seen: list[int] = []

    def at_floor() -> bool:
        seen.append(balloon_kib(guest))
        return abs(seen[-1] - 160 * 1024) <= 1024  # the driver's rounding

    eventually(at_floor, timeout=60)
    assert min(seen) >= 159 * 1024, seen
    ksm_seen = ksm_now()
    with api_client(daemon.socket) as c:
        readings: list[int] = []

        def unused_at_floor() -> int | None:
            """What it has unused at its floor, once its balloon driver has told
            (two readings a second apart that agree: the first may be of before)."""
            rows = {r["guest"]: r for r in c.get("/v1/stats/guests").json()}
            row = rows.get(guest) or {}
            at = abs(int(row.get("memory_kib") or 0) - 160 * 1024) <= 1024
            if not at or row.get("memory_unused_kib") is None:
                return None
            # The guest's own view, from its balloon driver, beside the host's.
            assert 0 < int(row["memory_unused_kib"]) < int(row["memory_available_kib"])
            assert int(row["memory_available_kib"]) <= 160 * 1024
            readings.append(int(row["memory_unused_kib"]))
            time.sleep(1)
            agree = len(readings) > 1 and abs(readings[-1] - readings[-2]) < 2048
            return min(readings[-2:]) if agree else None

        free_mib = eventually(unused_at_floor, timeout=30) // 1024
    # It fills 60 % of its memory (152 MiB of its 256; it has 160) into a tmpfs
    # of its own (its root's is smaller), 2 MiB every 0.25 s: more than it has
    # unused, so the writing ends well only if memory comes back in time.
    fill_mib = 152
    assert fill_mib > free_mib, free_mib
    fill = (
        "set -e; mkdir -p /fill; mount -t tmpfs -o size=200M fill /fill; "
        f"i=0; while [ $i -lt {fill_mib // 2} ]; do "
        "dd if=/dev/zero of=/fill/$i bs=1M count=2 status=none; i=$((i+1)); sleep 0.25; done"
    )
    pid = agent_exec(guest, fill)
    short: set[float] = set()  # the samples that showed it short of memory
    with api_client(daemon.socket) as c:

        def filled() -> dict[str, object] | None:
            rows = {r["guest"]: r for r in c.get("/v1/stats/guests").json()}
            row = rows.get(guest) or {}
            usable = row.get("memory_usable_kib") or row.get("memory_unused_kib")
            has = row.get("memory_kib")
            if usable is not None and has and usable < max(has * 0.05, 16 * 1024):
                short.add(float(row["time"]))
            done = agent_exec_status(guest, pid)
            return done if done.get("exited") else None

        done = eventually(filled, timeout=90)
        log = c.get("/v1/decisions", params={"guest": guest}).json()
        interval = c.get("/v1/stats/host").json()["sampler"]["interval"]
    shown = {
        k: base64.b64decode(str(v)).decode() if k.endswith("-data") else v for k, v in done.items()
    }
    assert done.get("exitcode") == 0, shown  # every 2 MiB written: it never ran out
    assert balloon_kib(guest) >= 160 * 1024 + (fill_mib - free_mib) * 1024
    assert agent_answers(guest)
    moves = [d for d in log if d["tuner"] == "memory" and d["verdict"] == "applied"]
    served = [d["time"] for d in moves if "in distress" in d["reason"]]
    assert served, log
    # Short of memory (under 5 %, or 16 MiB, usable) in two samples at most, and
    # served within two rounds of the first (or before it was short at all: a
    # guest filling fast is served on the pace it falls at).
    assert len(short) <= 2, (sorted(short), served)
    if short:
        assert min(served) <= min(short) + 2 * interval + 0.5, (sorted(short), served)
    assert any(d["reason"].startswith("256 MiB -> ") for d in moves), log
    if KSM_FOUND:  # the host's KSM ran while the host needed memory, and is as it was
        assert ksm_seen is not None
        assert ksm_seen[0] == "1"
        assert 100 <= int(ksm_seen[1]) <= 1000
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=15) == 0
        assert ksm_now() == KSM_FOUND


KSM = Path("/sys/kernel/mm/ksm")


def ksm_now() -> tuple[str, str] | None:
    """The host's KSM (run, pages_to_scan), or None without KSM."""
    try:
        return tuple(  # type: ignore[return-value]
            (KSM / name).read_text().strip() for name in ("run", "pages_to_scan")
        )
    except OSError:
        return None


KSM_FOUND = ksm_now()
