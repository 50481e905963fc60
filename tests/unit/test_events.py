"""libvirt's lifecycle events as the daemon names them: a migration is told apart
from a start and a stop by the event's detail (libvirt's own constants)."""

from __future__ import annotations

import libvirt
import pytest

from virtpolicy.hypervisor.events import EventWatch


class _Dom:
    def name(self) -> str:
        return "db"


@pytest.mark.parametrize(
    ("event", "detail", "what"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED, "started"),
        (
            libvirt.VIR_DOMAIN_EVENT_STARTED,
            libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
            "migrating in",
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_RESUMED,
            libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
            "migrated in",
        ),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED, "resumed"),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
            "migrated out",
        ),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, "stopped"),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED, "stopped"),
    ],
)
def test_lifecycle_names(event: int, detail: int, what: str) -> None:
    seen: list[tuple[str, str]] = []
    watch = EventWatch(None, lambda guest, w: seen.append((guest, w)), lambda _reason: None)
    watch._lifecycle(None, _Dom(), event, detail, None)
    assert seen == [("db", what)]
