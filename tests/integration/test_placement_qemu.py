"""Placement on the real libvirtd with QEMU guests and the hook installed.

The lab's host has one NUMA node of 2 CPUs without SMT. vp-test-pa asks for a
dedicated CPU and its memory on one node; vp-test-ps is shared; vp-test-pz asks
for 2 dedicated CPUs, which cannot be had while pa holds one.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from tests.conftest import (
    Cli,
    Daemon,
    eventually,
    try_virsh,
    vcpu_affinity,
    virsh,
    wait_connected,
)

pytestmark = pytest.mark.integration


def definition(name: str) -> ET.Element:
    return ET.fromstring(virsh("dumpxml", "--inactive", name))


def pins(root: ET.Element) -> dict[str, str]:
    """vCPU -> cpuset and ``emulator`` -> cpuset, from a domain's <cputune>."""
    found = {p.get("vcpu", ""): p.get("cpuset", "") for p in root.iter("vcpupin")}
    emulator = root.find("cputune/emulatorpin")
    if emulator is not None:
        found["emulator"] = emulator.get("cpuset", "")
    return found


def live_affinity(name: str) -> dict[str, str]:
    """`virsh vcpupin NAME` of a running guest: vCPU -> CPU affinity."""
    return vcpu_affinity(virsh("vcpupin", name))


def test_dedicated_and_shared_guests_on_qemu_and_a_refused_start(
    with_hook: Callable[[str, str], None],
    start_daemon: Callable[..., Daemon],
    make_guest: Callable[..., str],
    qemu_uri: str,
    db: str,
    run: Cli,
) -> None:
    pa, ps, pz = make_guest("pa", vcpus=1), make_guest("ps", vcpus=1), make_guest("pz", vcpus=2)
    docs = [
        {
            "guest": pa,
            "cpu": {"placement": "dedicated", "topology": "match"},
            "numa": {"nodes": 1, "memory": "strict"},
        },
        {"guest": ps, "cpu": {"weight": 50}},
        {"guest": pz, "cpu": {"placement": "dedicated"}},
    ]
    for doc in docs:
        assert run("apply", "-f", "-", input=json.dumps(doc)).exit_code == 0
    daemon = start_daemon(db, "--connect", qemu_uri)
    with_hook(str(daemon.run_dir), "open")
    wait_connected(daemon)
    # Before any of them starts: pa's pins and <numatune> are in its definition,
    # and ps floats over what pa leaves (its vCPU and emulator on CPU 1).
    eventually(lambda: pins(definition(pa)) == {"0": "0", "emulator": "1"}, 20)
    memory = definition(pa).find("numatune/memory")
    assert memory is not None
    assert (memory.get("mode"), memory.get("nodeset")) == ("strict", "0")
    topology = eventually(lambda: getattr(definition(pa).find("cpu/topology"), "attrib", None), 20)
    assert topology == {"sockets": "1", "dies": "1", "cores": "1", "threads": "1"}
    # The definition was written anew: the policy's mirror in it is still there.
    mirror = definition(pa).find("metadata/{urn:virtpolicy:policy:1}policy")
    assert mirror is not None
    assert json.loads(mirror.text or "")["guest"] == pa
    eventually(lambda: pins(definition(ps)) == {"0": "1", "emulator": "1"}, 20)
    assert pins(definition(pz)) == {}  # refused: nothing pinned for it
    virsh("start", pa)
    virsh("start", ps)
    assert live_affinity(pa) == {"0": "0"}
    assert live_affinity(ps) == {"0": "1"}
    # pz cannot be placed: the hook refuses its start with the placer's reason.
    refused = try_virsh("start", pz)
    assert refused.returncode != 0
    assert (
        f"{pz}: needs 2 dedicated host CPUs; node 0 has 1 free ({pa} holds 1 of its CPUs)"
        in refused.stderr
    ), refused.stderr
    assert try_virsh("domstate", pz).stdout.strip() == "shut off"
    # The daemon's status says so too.
    status = json.loads(run("--server", str(daemon.socket), "status", pz, "-o", "json").stdout)
    assert any("needs 2 dedicated host CPUs" in p for p in status[0]["problems"]), status
