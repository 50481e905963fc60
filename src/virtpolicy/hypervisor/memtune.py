"""A guest's memory tuning as libvirt holds it: the ``<memtune>`` soft limit
(live and in the definition) and its balloon's free page reporting (in the
definition: QEMU takes it at the next start).

Blocking, like every libvirt call: worker threads only.
"""

from __future__ import annotations

from typing import Any

import libvirt

from virtpolicy.hypervisor.definition import free_page_reporting, with_free_page_reporting
from virtpolicy.hypervisor.flags import CONFIG, LIVE, targets
from virtpolicy.hypervisor.native import SOFT_LIMIT

_INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
_NO_BALLOON = "memory.free_page_reporting: the guest has no balloon device (<memballoon>)"


def read(dom: Any, definition: str, *, running: bool) -> tuple[dict[str, int], bool | None]:
    """The soft limit in KiB (live for a running guest, else the definition's)
    and whether the balloon of ``definition`` (the guest's XML) reports free
    pages (None: the guest has no balloon)."""
    params = dom.memoryParameters(LIVE if running else CONFIG)
    memtune = {SOFT_LIMIT: int(params[SOFT_LIMIT])} if SOFT_LIMIT in params else {}
    return memtune, free_page_reporting(definition)


def write(
    conn: Any,
    dom: Any,
    memtune: dict[str, int],
    reporting: bool | None,
    *,
    running: bool,
    persistent: bool,
) -> list[str]:
    """Set the soft limit where the guest has it (live and defined), and free page
    reporting in the definition; the problems that did not stop the rest."""
    for flags in targets(running=running, persistent=persistent) if memtune else ():
        dom.setMemoryParameters(dict(memtune), flags)
    if reporting is None or not persistent:
        return []
    xml = dom.XMLDesc(_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    changed = with_free_page_reporting(xml, reporting)
    if changed is None:
        return [_NO_BALLOON]
    conn.defineXML(changed)
    return []
