"""The host's topology from libvirt's capabilities XML: a 2-node SMT host with a
node that has memory only (tests/unit/data), a document without cells, and
arbitrary bad documents (a refusal naming the file, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtpolicy.errors import PolicyError
from virtpolicy.hypervisor.capabilities import (
    domain_vcpus,
    isolated_cpus,
    topology_from_capabilities,
)
from virtpolicy.policy.placement import Request, place

CAPS = (Path(__file__).parent / "data" / "caps-2node-smt.xml").read_text()


def test_a_two_node_smt_host() -> None:
    t = topology_from_capabilities(CAPS)
    assert t is not None
    assert (t.nodes, t.smt, len(t.cpus), t.source) == ((0, 1, 2), 2, 16, "capabilities")
    assert t.siblings(12) == (4, 12)
    assert (t.cpu(12).node, t.cpu(12).socket, t.cpu(12).llc) == (1, 1, 1)
    assert t.memory == {0: 16777216, 1: 16777216, 2: 8388608}
    assert t.cpus_of([2]) == frozenset()  # a node with memory and no CPU
    assert (t.distances[0, 0], t.distances[0, 1], t.distances[2, 1]) == (10, 21, 21)
    assert t.to_dict()["nodes"]["1"]["distances"] == {"0": 21, "1": 10, "2": 21}
    # Placed on it: a dedicated guest with isolated siblings stays in one node.
    got = place(t, frozenset(), [Request("web", 3, "dedicated", "isolate", nodes=1)])
    assert {t.cpu(next(iter(v))).node for v in got.guests["web"].vcpupin} == {0}


def test_no_cells_is_no_topology() -> None:
    """libvirt's test driver reports no cells for a node file of its own."""
    bare = "<capabilities><host><cpu><arch>x86_64</arch></cpu></host></capabilities>"
    assert topology_from_capabilities(bare) is None


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<capabilities>", "caps.xml: not XML: "),
        ("<domain/>", "caps.xml: not a libvirt capabilities document"),
        (
            CAPS.replace("<cpu id='3' ", "<cpu id='x3' "),
            "caps.xml: <cpu> id='x3' is not a number",
        ),
        (
            CAPS.replace("siblings='1,9'", "siblings='1-'", 1),
            "caps.xml: cpu 1: siblings: ",
        ),
        (
            CAPS.replace("<memory unit='KiB'>16777216", "<memory unit='parsecs'>1", 1),
            "caps.xml: cell 0: memory '1' is not a size",
        ),
    ],
)
def test_bad_documents_are_refused_in_one_line(xml: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        topology_from_capabilities(xml, "caps.xml")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_documents_are_refused_or_read(text: str) -> None:
    message = refusal(text)
    assert message is None or (message.startswith("caps.xml: ") and "\n" not in message)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_cells_with_arbitrary_attributes(data: st.DataObject) -> None:
    attribute = st.one_of(st.integers(-5, 10**12).map(str), st.text(max_size=8))
    cpus = "".join(
        f"<cpu id={_q(data.draw(attribute))} socket_id={_q(data.draw(attribute))}"
        f" siblings={_q(data.draw(attribute))}/>"
        for _ in range(data.draw(st.integers(0, 4)))
    )
    xml = (
        "<capabilities><host><topology><cells>"
        f"<cell id={_q(data.draw(attribute))}><cpus>{cpus}</cpus></cell>"
        "</cells></topology></host></capabilities>"
    )
    message = refusal(xml)
    assert message is None or (message.startswith("caps.xml: ") and "\n" not in message)


def refusal(xml: str) -> str | None:
    """The one-line refusal of ``xml``, or None when it was read."""
    try:
        topology_from_capabilities(xml, "caps.xml")
    except PolicyError as exc:
        return str(exc)
    return None


def _q(value: str) -> str:
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return f'"{escaped}"'


def test_isolated_cpus(tmp_path: Path) -> None:
    isolated = tmp_path / "isolated"
    isolated.write_text("2-3,6\n")
    assert isolated_cpus(isolated) == frozenset({2, 3, 6})
    isolated.write_text("\n")
    assert isolated_cpus(isolated) == frozenset()
    assert isolated_cpus(tmp_path / "missing") == frozenset()


def test_a_domains_name_and_vcpus() -> None:
    xml = (
        "<domain type='kvm'><name>web</name><vcpu placement='static' current='2'>4</vcpu></domain>"
    )
    assert domain_vcpus(xml) == ("web", 2)
    assert domain_vcpus("<domain><name>db</name><vcpu>3</vcpu></domain>") == ("db", 3)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=12))
def test_arbitrary_domain_documents_are_refused_or_read(name: str, vcpus: str) -> None:
    for xml in (
        name,
        f"<domain><name>{_q(name)[1:-1]}</name><vcpu>{_q(vcpus)[1:-1]}</vcpu></domain>",
    ):
        try:
            domain_vcpus(xml, "d.xml")
        except PolicyError as exc:
            message = str(exc)
        else:
            continue
        assert message.startswith("d.xml: ")
        assert "\n" not in message
