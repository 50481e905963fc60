"""A guest's counters from procfs and cgroups, on fixture trees shaped like a
real host's: cgroup v2 (Debian 12's default) and v1 (this lab's hosts)."""

from __future__ import annotations

import os
import time
import types
from pathlib import Path

import pytest

from virtpolicy.hypervisor.kernel import (
    NotLocal,
    files_of,
    memory_tail,
    parse_cgroup,
    read_counters,
    read_memory,
    threads_from_status,
)

GROUP = "/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def qemu_process(proc: Path, pid: int, tids: list[int], cgroup: str) -> None:
    """/proc/PID for a QEMU process: its vCPU threads, stat, statm, cgroup."""
    base = proc / str(pid)
    names = {pid: "qemu-system-x86", **{t: f"CPU {i}/KVM" for i, t in enumerate(tids)}}
    for n, (tid, name) in enumerate(names.items()):
        task = base / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "comm").write_text(name + "\n")
        (task / "schedstat").write_text(f"{(n + 1) * 1_000_000_000} {n * 1000} 42\n")
        (proc / str(tid)).mkdir(exist_ok=True)
        (proc / str(tid) / "status").write_text(f"Name:\t{name}\nTgid:\t{pid}\nPid:\t{tid}\n")
    # comm "(qemu-system-x86)" then state, ...; utime and stime are fields 14 and 15.
    # rss (in pages) is field 24.
    fields = ["S"] + ["0"] * 10 + [str(3 * TICKS), str(TICKS)] + ["0"] * 8
    fields += [str(20480 * 4096 // PAGE)] + ["0"] * 20
    (base / "stat").write_text(f"{pid} (qemu-system-x86) {' '.join(fields)}\n")
    (base / "statm").write_text(f"{40960 * 4096 // PAGE} {20480 * 4096 // PAGE} 7 1 0 9 0\n")
    (base / "cgroup").write_text(cgroup)


def status(pid: int, tids: list[int]) -> str:
    """libvirt's status of a running domain, as much of it as is read."""
    vcpus = "".join(f"<vcpu id='{i}' pid='{t}'/>" for i, t in enumerate(tids))
    return (
        f"<domstatus state='running' reason='booted' pid='{pid}'><monitor/>"
        f"<vcpus>{vcpus}</vcpus><domain type='kvm'><name>web</name></domain></domstatus>"
    )


def test_cgroup_v2_gives_cpu_memory_and_pressure(tmp_path: Path) -> None:
    """The guest's figures are its whole group's (emulator and vCPUs), not those of
    the ``emulator`` group where the QEMU process itself sits."""
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    qemu_process(proc, 900, [901, 902], f"0::{GROUP}/emulator\n")
    guest = cgroups / GROUP.lstrip("/")
    (guest / "emulator").mkdir(parents=True)
    (guest / "emulator" / "cpu.stat").write_text("usage_usec 1000\n")
    (guest / "cpu.stat").write_text("usage_usec 7500000\nuser_usec 5000000\nsystem_usec 2500000\n")
    (guest / "memory.stat").write_text(
        # Keys that end in another's name come first: only the line's own key counts.
        "inactive_anon 1\nactive_file 2\nanon 104857600\nfile 52428800\npgfault 900\n"
        "pgmajfault 12\n"
    )
    (guest / "memory.swap.current").write_text("4194304\n")
    (guest / "memory.pressure").write_text(
        "some avg10=1.50 avg60=0.80 avg300=0.10 total=12345\n"
        "full avg10=0.25 avg60=0.10 avg300=0.00 total=2345\n"
    )
    threads = threads_from_status(status(900, [901, 902]), proc)
    assert (threads.pid, threads.vcpus) == (900, (901, 902))
    files = files_of(threads, proc, cgroups)
    found = read_counters("web", 1, files, tail=memory_tail(read_memory(files)))
    assert found.cpu_ns == 7_500_000_000
    assert [(v.time_ns, v.delay_ns) for v in found.vcpus] == [
        (2_000_000_000, 1000),
        (3_000_000_000, 2000),
    ]
    assert found.rss_kib == 20480 * 4096 // PAGE * PAGE // 1024
    assert found.memory_kib is None  # the balloon's own: asked of libvirt
    assert (found.anon_kib, found.file_kib, found.swap_kib) == (102400, 51200, 4096)
    assert (found.major_faults, found.memory_stall_ns) == (12, 12_345_000)
    without = read_counters("web", 1, files, vcpus=False, rss=False)
    assert (without.vcpus, without.rss_kib, without.anon_kib) == ((), None, None)


def test_cgroup_v1_reads_cpuacct_and_memory_where_they_are_mounted(tmp_path: Path) -> None:
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    lines = [
        "12:cpu,cpuacct:/machine/qemu-3-web.libvirt-qemu/emulator",
        "4:memory:/machine/qemu-3-web.libvirt-qemu",
        "1:name=systemd:/",
    ]
    qemu_process(proc, 900, [901], "\n".join(lines) + "\n")
    guest = cgroups / "cpu,cpuacct" / "machine/qemu-3-web.libvirt-qemu"
    (guest / "emulator").mkdir(parents=True)
    (cgroups / "cpuacct").symlink_to("cpu,cpuacct")
    (guest / "emulator" / "cpuacct.usage").write_text("1000\n")
    (guest / "cpuacct.usage").write_text("123456789\n")
    memory = cgroups / "memory" / "machine/qemu-3-web.libvirt-qemu"
    memory.mkdir(parents=True)
    (memory / "memory.stat").write_text(
        "cache 1\nrss 2\ntotal_cache 8192\ntotal_rss 16384\ntotal_swap 0\ntotal_pgmajfault 3\n"
    )
    threads = threads_from_status(status(900, [901]), proc)
    files = files_of(threads, proc, cgroups)
    found = read_counters("web", 1, files, tail=memory_tail(read_memory(files)))
    assert found.cpu_ns == 123456789
    assert (found.anon_kib, found.file_kib, found.swap_kib, found.major_faults) == (16, 8, 0, 3)
    assert found.memory_stall_ns is None  # v1 keeps no pressure per group


def test_without_cgroup_accounting_the_process_times_serve(tmp_path: Path) -> None:
    """A process in the root group (cpuacct "/", as a lab libvirtd without the
    cpuacct controller leaves it): user + system time of the process."""
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    qemu_process(proc, 900, [901], "2:cpuacct:/\n1:cpu:/machine/x/emulator\n")
    threads = threads_from_status(status(900, [901]), proc)
    assert read_counters("web", 1, files_of(threads, proc, cgroups)).cpu_ns == 4_000_000_000


def test_parse_cgroup_names_v1_and_v2() -> None:
    found = parse_cgroup("0::/a/b\n7:blkio:/x\n3:cpu,cpuacct:/y\n1:name=systemd:/\n")
    assert found.v2 == "/a/b"
    assert dict(found.v1) == {"blkio": "/x", "cpu": "/y", "cpuacct": "/y", "systemd": "/"}


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("not xml", "names no process"),
        ("<domstatus pid='900'><vcpus/></domstatus>", "names no vCPU threads"),
        (status(900, [901, 999]), "not process 900's here"),  # 999: no such thread here
        (status(901, [901, 902]), "not process 901's here"),
    ],
)
def test_threads_not_here_say_why(tmp_path: Path, answer: str, why: str) -> None:
    proc = tmp_path / "proc"
    qemu_process(proc, 900, [901, 902], "0::/\n")
    with pytest.raises(NotLocal, match=why):
        threads_from_status(answer, proc)


def test_a_thread_not_named_as_the_vcpu_is_refused(tmp_path: Path) -> None:
    """libvirt's thread ids are checked against the kernel's names: vCPU 0's
    thread must be "CPU 0/...", not another of the process's threads."""
    proc = tmp_path / "proc"
    qemu_process(proc, 900, [901, 902], "0::/\n")
    with pytest.raises(NotLocal, match="not QEMU's vCPU 0"):
        threads_from_status(status(900, [902, 901]), proc)


def test_a_process_gone_is_not_local(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    qemu_process(proc, 900, [901], "0::/\n")
    threads = threads_from_status(status(900, [901]), proc)
    (proc / "900" / "stat").unlink()
    with pytest.raises(NotLocal, match="process 900 is gone"):
        read_counters("web", 1, files_of(threads, proc, tmp_path))


def test_host_cpu_times_come_from_proc_stat(tmp_path: Path) -> None:
    """Busy is user + nice + system + irq + softirq, idle is idle + iowait: what
    libvirt's node CPU stats make of the same lines."""
    from virtpolicy.hypervisor.hostfiles import host_cpu_times  # noqa: PLC0415

    (tmp_path / "stat").write_text(
        "cpu  10 0 10 100 0 0 0 0 0 0\n"
        "cpu0 1 2 3 40 5 6 7 8 0 0\n"
        "cpu1 10 0 10 60 0 0 0 0 0 0\n"
        "intr 12345\n"
    )
    tick = 1_000_000_000 // TICKS
    assert host_cpu_times(2, tmp_path) == ((19 * tick, 45 * tick), (20 * tick, 60 * tick))
    assert host_cpu_times(3, tmp_path)[2] == (0, 0)  # a CPU the file does not list


class _Dom:
    def __init__(self, name: str, number: int) -> None:
        self._name, self._id = name, number

    def name(self) -> str:
        return self._name

    def ID(self) -> int:
        return self._id


def test_domains_follow_lifecycle_events_between_listings() -> None:
    """After one listing the states come from events: a sample asks libvirtd
    nothing until an event cannot be followed, or an event raced the listing."""
    import libvirt  # noqa: PLC0415

    from virtpolicy.hypervisor.localstats import RELIST_S, Domains  # noqa: PLC0415

    domains = Domains()
    assert domains.due(0.0) == 0  # never listed
    domains.watched = True
    domains.listed({"db": (3, 1), "web": (-1, 5)}, 0, 0.0)
    assert domains.due(1.0) is None
    domains.event(_Dom("web", 7), libvirt.VIR_DOMAIN_EVENT_STARTED, 0)
    domains.event(_Dom("db", 3), libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0)
    assert domains.known == {"db": (3, libvirt.VIR_DOMAIN_PAUSED), "web": (7, 1)}
    domains.event(_Dom("db", 3), libvirt.VIR_DOMAIN_EVENT_RESUMED, 0)
    domains.event(_Dom("web", -1), libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)
    domains.event(_Dom("new", -1), libvirt.VIR_DOMAIN_EVENT_DEFINED, 0)
    domains.event(
        _Dom("mig", 9), libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED
    )
    domains.event(_Dom("new", -1), libvirt.VIR_DOMAIN_EVENT_UNDEFINED, 0)
    assert domains.known == {
        "db": (3, 1),
        "web": (-1, libvirt.VIR_DOMAIN_SHUTOFF),
        "mig": (9, libvirt.VIR_DOMAIN_PAUSED),  # arriving: paused until done
    }
    assert domains.due(2.0) is None
    # A listing an event overtook is not taken: list again at the next sample.
    version = domains.due(RELIST_S + 1)
    assert version is not None
    domains.event(_Dom("db", 3), libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0)
    domains.listed({}, version, RELIST_S + 1)
    assert "db" in domains.known
    assert domains.due(RELIST_S + 2) is not None
    # A crash is not followed: list again.
    domains.listed({"db": (3, 1)}, domains.due(RELIST_S + 2) or 0, RELIST_S + 2)
    assert domains.due(RELIST_S + 3) is None
    domains.event(_Dom("db", 3), libvirt.VIR_DOMAIN_EVENT_CRASHED, 0)
    assert domains.due(RELIST_S + 3) is not None


def test_the_balloon_comes_from_libvirts_status_read_again_only_when_rewritten(
    tmp_path: Path,
) -> None:
    """balloon.current and .maximum as libvirt's status records them, and whether
    the balloon has a statistics period (else QEMU has no figures of the guest's)."""
    from virtpolicy.hypervisor.domstatus import Balloon, read_balloon  # noqa: PLC0415

    path = tmp_path / "web.xml"
    path.write_text(
        "<domstatus><domain><memory unit='KiB'>1048576</memory>"
        "<currentMemory unit='KiB'>524288</currentMemory><devices>"
        "<memballoon model='virtio'><stats period='5'/><alias name='balloon0'/></memballoon>"
        "</devices></domain></domstatus>"
    )
    first = read_balloon(path, None)
    assert first is not None
    assert (first[1].current_kib, first[1].maximum_kib, first[1].period) == (524288, 1048576, 5)
    assert read_balloon(path, first) is first  # not rewritten: not read again
    mtime = first[0]

    def rewritten(text: str) -> Balloon:
        """The balloon once libvirt rewrote the status as ``text`` (a newer mtime)."""
        nonlocal mtime
        path.write_text(text)
        mtime += 1
        os.utime(path, ns=(mtime, mtime))
        found = read_balloon(path, first)
        assert found is not None
        assert found[0] == mtime
        return found[1]

    again = rewritten(
        "<domstatus><domain><memory unit='MiB'>1024</memory>"
        "<currentMemory unit='MiB'>1024</currentMemory><devices><memballoon model='virtio'/>"
        "<rng><stats period='9'/></rng></devices></domain></domstatus>"
    )
    assert (again.current_kib, again.maximum_kib, again.period) == (1048576, 1048576, 0)
    assert (again.job, again.hugepages) == ("", False)
    moving = rewritten(  # a migration's source, as libvirt's status of it reads then
        "<domstatus state='running' reason='booted' pid='1'>"
        "<qemuCaps><flag name='kvm'/></qemuCaps>"
        "<job type='none' async='migration out' phase='perform3' flags='0x1'/>"
        "<domain><memory unit='KiB'>1048576</memory><memoryBacking><hugepages/>"
        "</memoryBacking></domain></domstatus>"
    )
    assert (moving.job, moving.hugepages) == ("migration out", True)
    saving = rewritten(  # a status without QEMU's capabilities: the job found all the same
        "<domstatus><job type='none' async='save' phase='none' flags='0x0'/>"
        "<domain><memory unit='KiB'>1048576</memory></domain></domstatus>"
    )
    assert (saving.job, saving.hugepages) == ("save", False)
    path.unlink()
    assert read_balloon(path, first) is None


def test_status_folders_of_the_system_and_session_drivers(tmp_path: Path) -> None:
    """A session driver's running guests' status is under the user's runtime
    directory, or the cache directory without one; other URIs are not local."""
    from virtpolicy.hypervisor.localstats import local_status_dir  # noqa: PLC0415

    runtime = tmp_path / "run" / "libvirt" / "qemu" / "run"
    cache = tmp_path / "home" / ".cache" / "libvirt" / "qemu" / "run"
    runtime.mkdir(parents=True)
    cache.mkdir(parents=True)
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path / "home")}
    assert local_status_dir("qemu:///session", env) == runtime
    assert local_status_dir("qemu:///session", {"HOME": str(tmp_path / "home")}) == cache
    assert local_status_dir("qemu:///session", {"HOME": str(tmp_path / "nobody")}) is None
    assert local_status_dir("qemu+ssh://elsewhere/system", env) is None
    assert local_status_dir("test:///default", env) is None


def test_open_files_are_read_anew_and_let_go_when_gone(tmp_path: Path) -> None:
    """A held file reads its current content at each read; one that reads nothing
    (the kernel's answer for a process that is gone) is closed and None."""
    from virtpolicy.hypervisor.procfiles import OpenFiles  # noqa: PLC0415

    path = tmp_path / "schedstat"
    path.write_text("100 5 1\n")
    held = OpenFiles()
    assert held.read(str(path)) == b"100 5 1\n"
    with path.open("r+") as f:  # the same file, changed in place
        f.write("200 6 2\n")
    assert held.read(str(path)) == b"200 6 2\n"
    path.write_text("")
    assert held.read(str(path)) is None
    assert held.read(str(tmp_path / "absent")) is None
    path.write_text("300 7 3\n")
    assert held.read(str(path)) == b"300 7 3\n"  # opened again
    # Read in a page, and whole when longer (a page exactly, or several).
    for size in (4095, 4096, 4097, 70000):
        long = tmp_path / f"memory.stat.{size}"
        long.write_bytes(b"x" * (size - 1) + b"\n")
        assert held.read(str(long)) == long.read_bytes()
    held.close()
    assert held._fds == {}


def test_a_sampler_lets_go_of_every_file_of_a_guest_that_stopped(tmp_path: Path) -> None:
    """Between samples a guest's files are held open; when it stops, every one of
    them is closed (cgroup v2's swap and pressure files too). States are as
    libvirt's events left them: no call to libvirt is made here."""
    from virtpolicy.hypervisor.localstats import LocalSampler  # noqa: PLC0415

    proc, cgroups, run = tmp_path / "proc", tmp_path / "cgroup", tmp_path / "run"
    qemu_process(proc, 900, [901, 902], f"0::{GROUP}/emulator\n")
    guest = cgroups / GROUP.lstrip("/")
    guest.mkdir(parents=True)
    (guest / "cpu.stat").write_text("usage_usec 7500000\n")
    (guest / "memory.stat").write_text("anon 4096\nfile 8192\npgmajfault 1\n")
    (guest / "memory.swap.current").write_text("0\n")
    (guest / "memory.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
    run.mkdir()
    (run / "web.xml").write_text(status(900, [901, 902]))
    sampler = LocalSampler(run, proc, cgroups)
    sampler.domains.watched = True
    sampler.domains.listed({"web": (3, 1)}, 0, time.monotonic())
    sample = sampler.collect(None, 1, {"vcpu", "balloon"}, 0)  # type: ignore[arg-type]
    assert sample.guests["web"].memory_stall_ns == 5000
    held = set(sampler.open._fds)
    assert {str(guest / "memory.swap.current"), str(guest / "memory.pressure")} <= held
    sampler.domains.listed({"web": (-1, 5)}, 0, time.monotonic())
    assert sampler.collect(None, 1, {"vcpu", "balloon"}, 0).guests["web"].cpu_ns is None  # type: ignore[arg-type]
    assert sampler.open._fds == {}


def test_the_hosts_memory_and_its_stall_come_from_procfs(tmp_path: Path) -> None:
    from virtpolicy.hypervisor.hostfiles import host_memory  # noqa: PLC0415

    (tmp_path / "meminfo").write_text(
        "MemTotal:       16384000 kB\nMemFree:         1000000 kB\n"
        "MemAvailable:    4096000 kB\nBuffers:           20000 kB\n"
    )
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "memory").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=123456\n"
        "full avg10=2.00 avg60=0.50 avg300=0.10 total=2345\n"
    )
    found = host_memory(tmp_path)
    assert found is not None
    assert (found.total_kib, found.available_kib, found.stall) == (16384000, 4096000, 12.5)
    assert found.used_percent == 75.0
    (tmp_path / "pressure" / "memory").unlink()  # a kernel without PSI
    without = host_memory(tmp_path)
    assert without is not None
    assert without.stall is None
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")  # too old a kernel to say
    assert host_memory(tmp_path) is None


def test_the_guests_own_view_is_read_from_the_balloon_drivers_figures() -> None:
    from virtpolicy.hypervisor.stats import parse_domain_stats  # noqa: PLC0415

    counters = parse_domain_stats(
        "g",
        {
            "state.state": 1,
            "balloon.available": 4000,
            "balloon.unused": 1000,
            "balloon.usable": 2500,
            "balloon.swap_in": 64,
            "balloon.major_fault": 7,
        },
    )
    assert (
        counters.available_kib,
        counters.unused_kib,
        counters.usable_kib,
        counters.guest_swap_in_kib,
        counters.guest_major_faults,
    ) == (4000, 1000, 2500, 64, 7)


def test_a_missed_answer_of_the_balloon_driver_keeps_what_it_last_said(tmp_path: Path) -> None:
    """QEMU busy (the call does not wait for it): the answer lacks the guest's
    figures. What the driver said before stands and it is asked again at the
    next sample, not left for ten times the cadence as a guest that never said."""
    from virtpolicy.hypervisor.domstatus import Balloon  # noqa: PLC0415
    from virtpolicy.hypervisor.localstats import LocalSampler, _memory  # noqa: PLC0415
    from virtpolicy.hypervisor.stats import GuestCounters  # noqa: PLC0415

    answers = [
        {"balloon.last-update": 5, "balloon.unused": 1000, "balloon.usable": 2000},
        {},  # busy
        {"balloon.last-update": 7, "balloon.unused": 900, "balloon.usable": 1800},
    ]

    class Conn:
        asked = 0

        def lookupByID(self, number: int) -> object:
            return types.SimpleNamespace(name=lambda: "g")

        def domainListGetStats(self, doms: list[object], flags: int, nowait: int) -> list[object]:
            Conn.asked += 1
            return [(doms[0], answers[Conn.asked - 1])]

    sampler = LocalSampler(tmp_path)
    key = ("g", 3)
    sampler._memory[key] = _memory(None, (1, Balloon(1024, 2048, 1)), None)
    conn = Conn()
    seen = []
    for now in (0.0, 1.0, 2.0):
        sampler._ask_guests(conn, now, 0, 0.0)  # type: ignore[arg-type]
        view = sampler._memory[key].view
        assert view is not None
        seen.append((view.figures.unused_kib, view.figures.usable_kib, view.reported))
    assert Conn.asked == 3  # asked each time: the missed answer did not stop it
    assert seen == [(1000, 2000, True), (1000, 2000, True), (900, 1800, True)]
    # What each sample's counters end with is made again from the newest answer.
    counters = GuestCounters("g", 1, 0, (), 0, *sampler._memory[key].tail)
    assert (counters.memory_kib, counters.unused_kib, counters.usable_kib) == (1024, 900, 1800)


def test_a_guest_libvirt_gives_no_record_of_is_left_out() -> None:
    """A guest read through libvirt that stopped or migrated away since the
    listing: libvirt answers no record for it. It is left out of the sample,
    which goes on (this stopped a daemon's sampler once, mid-migration)."""
    from virtpolicy.hypervisor.localstats import _through_libvirt  # noqa: PLC0415

    class Conn:
        def lookupByName(self, name: str) -> object:
            return types.SimpleNamespace(name=lambda: name)

        def domainListGetStats(self, doms: list[object], flags: int, nowait: int) -> list[object]:
            name = doms[0].name()  # type: ignore[attr-defined]
            return [] if name == "gone" else [(doms[0], {"cpu.time": 5, "state.state": 1})]

    found = _through_libvirt(Conn(), ["gone", "here"], {"cpu"}, 0)  # type: ignore[arg-type]
    assert list(found) == ["here"]
    assert found["here"].cpu_ns == 5


def test_a_guests_memory_figures_end_its_counters_each_under_its_own_name() -> None:
    """What is read every 30 s (the cgroup's memory, the balloon, the guest's own
    view) is made once into the end of the counters: each figure lands in the
    field of its name."""
    from virtpolicy.hypervisor.domstatus import Balloon  # noqa: PLC0415
    from virtpolicy.hypervisor.kernel import Memory  # noqa: PLC0415
    from virtpolicy.hypervisor.stats import GuestCounters, GuestView  # noqa: PLC0415

    tail = memory_tail(
        Memory(anon_kib=1, file_kib=2, swap_kib=3, major_faults=4, stall_ns=5),
        Balloon(current_kib=6, maximum_kib=7, period=5, job="migration out", hugepages=True),
        GuestView(
            available_kib=8,
            unused_kib=9,
            usable_kib=10,
            guest_swap_in_kib=11,
            guest_major_faults=12,
        ),
    )
    found = GuestCounters("web", 1, 100, (), 13, *tail)._asdict()
    del found["name"], found["state"], found["cpu_ns"], found["vcpus"]
    assert found == {
        "rss_kib": 13,
        "memory_kib": 6,
        "memory_max_kib": 7,
        "available_kib": 8,
        "unused_kib": 9,
        "usable_kib": 10,
        "guest_swap_in_kib": 11,
        "guest_major_faults": 12,
        "anon_kib": 1,
        "file_kib": 2,
        "swap_kib": 3,
        "major_faults": 4,
        "memory_stall_ns": 5,
        "job": "migration out",
        "hugepages": True,
    }
    # Nothing read yet: every figure unknown, none shifted into another's place.
    empty = GuestCounters("web", 1, 100, (), None, *memory_tail())
    assert empty == GuestCounters("web", 1, 100, (), None, None, None)
