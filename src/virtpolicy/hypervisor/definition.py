"""A domain definition's ``<cpu><topology>``: read it, and write it back.

Pure XML work, no libvirt here. The rest of the definition is kept as it is:
elements, attributes and the prefixes of every namespace (other tools'
``<metadata>`` included); only the ``<topology>`` element of ``<cpu>`` is
set (``<cpu>`` is added where there is none).
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

#: (sockets, cores, threads) as the guest sees its vCPUs; dies are 1.
Shape = tuple[int, int, int]


def cpu_topology(xml: str) -> Shape | None:
    """The ``<cpu><topology>`` of a domain XML (None: it has none)."""
    found = ET.fromstring(xml).find("cpu/topology")
    if found is None:
        return None
    try:
        return (int(found.get("sockets", "1")), int(found.get("cores", "1")),
                int(found.get("threads", "1")))  # fmt: skip
    except ValueError:
        return None


def with_cpu_topology(xml: str, shape: Shape) -> str:
    """``xml`` with its ``<cpu><topology>`` set to ``shape``."""
    for _event, (prefix, uri) in ET.iterparse(io.StringIO(xml), events=["start-ns"]):
        ET.register_namespace(prefix, uri)  # keep each namespace's prefix
    root = ET.fromstring(xml)
    cpu = root.find("cpu")
    if cpu is None:
        cpu = ET.SubElement(root, "cpu")
    topology = cpu.find("topology")
    if topology is None:
        topology = ET.Element("topology")
        cpu.insert(0, topology)  # libvirt's schema wants it before the features
    sockets, cores, threads = shape
    topology.attrib.clear()
    topology.attrib.update(
        {"sockets": str(sockets), "dies": "1", "cores": str(cores), "threads": str(threads)}
    )
    return ET.tostring(root, encoding="unicode")
