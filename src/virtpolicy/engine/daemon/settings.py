"""What the daemon's controller is told at start (``virtpolicy serve`` fills it in)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from virtpolicy.engine.daemon.supervisor import Backoff
from virtpolicy.engine.tuners.monitor import DEFAULT_INTERVAL_S, DEFAULT_WINDOW_S
from virtpolicy.engine.tuning.reconcile import Mode


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    uri: str
    mode: Mode = "enforce"
    reconcile_interval: float = 300.0
    store_poll_interval: float = 0.5
    backoff: Backoff = field(default_factory=Backoff)
    autostart: bool = True
    sample_interval: float = DEFAULT_INTERVAL_S
    history: float = DEFAULT_WINDOW_S
    tuners: tuple[str, ...] = ("static",)
    dry_run: bool = False
    tuner_settings: Mapping[str, float] = field(default_factory=dict)
    exec_dir: str | None = None
    exec_user: str = "nobody"
    host_name: str = "localhost"  # this host's name in the fleet
    heartbeat: float = 2.0
    reserved: frozenset[int] = frozenset()  # host CPUs kept from every guest
    ksm: str = "off"  # "auto": KSM runs while the host needs memory
    ksm_dir: str = "/sys/kernel/mm/ksm"
    #: How other hosts migrate guests here (see virtpolicy.config.MigrationSettings;
    #: the URI as published, None: this host takes no migrations).
    migration_uri: str | None = None
    migration_stream: str | None = None

    @property
    def migration(self) -> dict[str, str | None] | None:
        """How other hosts migrate guests here, as published (None: they cannot)."""
        if self.migration_uri is None:
            return None
        return {"uri": self.migration_uri, "stream": self.migration_stream}
