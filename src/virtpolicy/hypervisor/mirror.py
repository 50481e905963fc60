"""The policy mirrored into a domain's ``<metadata>``, so that it travels with the XML."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

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
