"""A domain definition's ``<cpu><topology>`` and its balloon's free page
reporting: read them, and write them back.

Pure XML work, no libvirt here. The rest of the definition is kept as it is:
elements, attributes and the prefixes of every namespace (other tools'
``<metadata>`` included); only the ``<topology>`` element of ``<cpu>`` is
set (``<cpu>`` is added where there is none), or the ``freePageReporting``
attribute of ``<memballoon>``.
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
    root = _editable(xml)
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


def free_page_reporting(xml: str) -> bool | None:
    """Whether a domain XML's balloon reports free pages (None: no balloon)."""
    balloon = _balloon(ET.fromstring(xml))
    return None if balloon is None else balloon.get("freePageReporting") == "on"


def with_free_page_reporting(xml: str, on: bool) -> str | None:
    """``xml`` with its balloon's free page reporting set (None: it has no
    balloon to set it on)."""
    root = _editable(xml)
    balloon = _balloon(root)
    if balloon is None:
        return None
    balloon.set("freePageReporting", "on" if on else "off")
    return ET.tostring(root, encoding="unicode")


def _balloon(root: ET.Element) -> ET.Element | None:
    balloon = root.find("devices/memballoon")
    return None if balloon is None or balloon.get("model") == "none" else balloon


def _editable(xml: str) -> ET.Element:
    """The parsed ``xml``, each namespace's prefix kept for writing it back."""
    for _event, (prefix, uri) in ET.iterparse(io.StringIO(xml), events=["start-ns"]):
        ET.register_namespace(prefix, uri)
    return ET.fromstring(xml)
