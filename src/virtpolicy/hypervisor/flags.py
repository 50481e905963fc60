"""What one connection's driver accepts, learnt from its answers.

A driver that refuses a flag says so once; from then on this connection asks
the way it accepts. The test driver, for one, pins only running guests and
only with flags 0, and refuses every flagged scheduler call. Blocking, like
every libvirt call: worker threads only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from virtpolicy.hypervisor.codes import refused_flags

log = logging.getLogger(__name__)

CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


@dataclass(slots=True)
class Capabilities:
    """What this connection's driver can do; None until learnt."""

    driver: str = "unknown"
    pin_config: bool | None = None
    sched_flags: bool | None = None
    stats_nowait: bool | None = None

    def pin_vcpu(
        self, dom: Any, vcpu: int, cpumap: tuple[bool, ...], *, running: bool, persistent: bool
    ) -> str | None:
        """Pin one vCPU; a problem that did not stop the rest, if any."""

        def pin(flags: int) -> None:
            dom.pinVcpuFlags(vcpu, cpumap, flags)

        return self._pin("vcpupin", pin, running=running, persistent=persistent)

    def pin_emulator(
        self, dom: Any, cpumap: tuple[bool, ...], *, running: bool, persistent: bool
    ) -> str | None:
        """Pin the emulator threads; a problem that did not stop the rest, if any."""

        def pin(flags: int) -> None:
            dom.pinEmulator(cpumap, flags)

        return self._pin("emulatorpin", pin, running=running, persistent=persistent)

    def _pin(
        self, what: str, pin: Callable[[int], None], *, running: bool, persistent: bool
    ) -> str | None:
        """Pin with the widest flags the driver takes: the definition and the live
        guest at once, else live only (and a problem for a guest not running)."""
        if not persistent:
            pin(LIVE)  # transient: only the live guest exists
            return None
        if self.pin_config is not False:
            try:
                pin(CONFIG | (LIVE if running else 0))
                self.pin_config = True
                return None
            except libvirt.libvirtError as exc:
                if not refused_flags(exc):
                    raise
                log.info("the %s driver refuses pinning the definition; live only", self.driver)
                self.pin_config = False
        if running:
            pin(0)  # flags 0: the current (live) state
            return None
        return f"{what}: the {self.driver} driver pins only running guests"

    def set_sched(
        self, dom: Any, params: Mapping[str, int], *, running: bool, persistent: bool
    ) -> str | None:
        """Write scheduler parameters; a problem if the driver takes none."""
        unsupported = f"scheduler parameters: not supported by the {self.driver} driver"
        if self.sched_flags is False:
            return unsupported
        try:
            # QEMU refuses AFFECT_LIVE|AFFECT_CONFIG together for scheduler
            # parameters ("mutually exclusive"), unlike pinning: one call each.
            for flags in targets(running=running, persistent=persistent):
                dom.setSchedulerParametersFlags(dict(params), flags)
        except libvirt.libvirtError as exc:
            if not refused_flags(exc):
                raise
            self.sched_flags = False
            return unsupported
        self.sched_flags = True
        return None

    def sched(self, dom: Any, flags: int) -> dict[str, Any]:
        """The scheduler parameters (none from a driver that takes no flags)."""
        if self.sched_flags is False:
            return {}
        try:
            params: dict[str, Any] = dom.schedulerParametersFlags(flags)
        except libvirt.libvirtError as exc:
            if not refused_flags(exc):
                raise
            self.sched_flags = False
            return {}
        self.sched_flags = True
        return params


def call_flags(call: Callable[[int], Any], flags: int) -> Any:
    """``call(flags)``, or ``call(0)`` when the driver refuses the flags."""
    try:
        return call(flags)
    except libvirt.libvirtError as exc:
        if not refused_flags(exc):
            raise
        return call(0)


def targets(*, running: bool, persistent: bool) -> tuple[int, ...]:
    """The states a change goes to: the definition (a transient guest has none)
    and, while it runs, the live guest."""
    return ((CONFIG,) if persistent else ()) + ((LIVE,) if running else ())
