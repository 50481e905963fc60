"""A domain definition's <cpu><topology>, read and set; the rest kept."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from virtpolicy.hypervisor.definition import (
    cpu_topology,
    free_page_reporting,
    with_cpu_topology,
    with_free_page_reporting,
)

DOMAIN = """<domain type='kvm'>
  <name>web</name>
  <metadata>
    <vp:policy xmlns:vp="https://virtpolicy.example/policy/1" revision="3">{}</vp:policy>
    <other:note xmlns:other="urn:other">keep me</other:note>
  </metadata>
  <vcpu placement='static'>4</vcpu>
  <cpu mode='host-passthrough'><feature policy='require' name='vmx'/></cpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""


def test_topology_is_set_and_everything_else_kept() -> None:
    assert cpu_topology(DOMAIN) is None
    out = with_cpu_topology(DOMAIN, (1, 2, 2))
    assert cpu_topology(out) == (1, 2, 2)
    root = ET.fromstring(out)
    topology = root.find("cpu/topology")
    assert topology is not None
    assert topology.attrib == {"sockets": "1", "dies": "1", "cores": "2", "threads": "2"}
    assert root.find("cpu/feature") is not None
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    # Other tools' metadata keeps its namespace and prefix.
    assert 'xmlns:other="urn:other"' in out
    assert "<other:note" in out
    assert "<vp:policy" in out
    again = with_cpu_topology(out, (2, 1, 2))  # set again: one <topology>, the new one
    assert cpu_topology(again) == (2, 1, 2)
    assert again.count("<topology") == 1


def test_a_domain_without_cpu_gets_one() -> None:
    bare = "<domain type='kvm'><name>x</name><vcpu>2</vcpu></domain>"
    assert cpu_topology(with_cpu_topology(bare, (1, 1, 2))) == (1, 1, 2)
    assert cpu_topology("<domain><cpu><topology sockets='x'/></cpu></domain>") is None


def test_free_page_reporting_is_set_on_the_balloon_and_everything_else_kept() -> None:
    with_balloon = DOMAIN.replace(
        "</domain>",
        "<devices><memballoon model='virtio'><stats period='5'/></memballoon></devices></domain>",
    )
    assert free_page_reporting(with_balloon) is False
    out = with_free_page_reporting(with_balloon, True)
    assert out is not None
    assert free_page_reporting(out) is True
    root = ET.fromstring(out)
    assert root.find("devices/memballoon/stats").get("period") == "5"  # type: ignore[union-attr]
    assert "<other:note" in out
    off = with_free_page_reporting(out, False)
    assert off is not None
    assert free_page_reporting(off) is False


def test_a_guest_without_a_balloon_has_no_free_page_reporting_to_set() -> None:
    none = DOMAIN.replace("</domain>", "<devices><memballoon model='none'/></devices></domain>")
    for xml in (DOMAIN, none):
        assert free_page_reporting(xml) is None
        assert with_free_page_reporting(xml, True) is None
