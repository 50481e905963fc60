"""The policy mirrored into a domain's ``<metadata>``, so that it travels with the XML."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from virtpolicy.hypervisor.codes import refused_flags
from virtpolicy.policy.model import GuestPolicy

log = logging.getLogger(__name__)

#: XML namespace of the policy mirrored into each domain's <metadata>.
METADATA_NS = "urn:virtpolicy:policy:1"
METADATA_PREFIX = "virtpolicy"


def mirror_xml(revision: int, policy: GuestPolicy) -> str:
    """The <metadata> element mirroring ``policy``: its canonical JSON as text."""
    element = ET.Element("policy", {"revision": str(revision)})
    element.text = policy.canonical_json()
    return ET.tostring(element, encoding="unicode")


def parse_mirror(xml: str) -> tuple[int, GuestPolicy] | None:
    """Read back :func:`mirror_xml`; None if it is not ours or not valid."""
    try:
        element = ET.fromstring(xml)
        return int(element.get("revision", "0")), GuestPolicy.model_validate(
            json.loads(element.text or "")
        )
    except (ET.ParseError, ValueError):
        log.warning("ignoring a virtpolicy metadata element that does not parse")
        return None


def read(dom: Any, flags: int) -> tuple[int, GuestPolicy] | None:
    """The mirror in ``dom``'s definition or live state (``flags``), if any; a driver
    that refuses the flags is asked for its current state."""
    for attempt in (flags, 0):
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, attempt)
            return parse_mirror(xml)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            if attempt == 0 or not refused_flags(exc):
                raise
    return None


def write(dom: Any, revision: int, policy: GuestPolicy | None, flags: int) -> None:
    """Mirror ``policy`` into ``dom`` (None: remove the mirror) where ``flags`` say;
    a driver that refuses the flags gets its current state changed."""
    xml = mirror_xml(revision, policy) if policy is not None else None
    prefix = METADATA_PREFIX if xml else None
    for attempt in (flags, 0):
        try:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, prefix, METADATA_NS, attempt)
            return
        except libvirt.libvirtError as exc:
            if attempt == 0 or not refused_flags(exc):
                raise
