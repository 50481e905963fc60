"""Settings: ``serve``'s options (where things live by default, and who acts, are in
:mod:`virtpolicy.places`, which commands import without pydantic).

Settings are layered defaults < TOML file (``--config``) < ``VIRTPOLICY_*``
environment < command-line flags, and validated at start-up: an invalid
setting is refused naming the key, the value and where it came from.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from virtpolicy.errors import ConfigError, CpusetError
from virtpolicy.places import default_db, default_run_dir
from virtpolicy.policy.cpuset import parse_cpuset
from virtpolicy.policy.numbers import ascii_int


def _names(value: object) -> object:
    """``a,b`` (a flag or the environment) or a TOML list, as a tuple of names."""
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    return tuple(value) if isinstance(value, list) else value


def _cpus(value: object) -> object:
    """A cpuset (``0-1,8``) as the set of host CPUs; ValueError naming the text."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        try:
            return parse_cpuset(value)
        except CpusetError as exc:
            raise ValueError(str(exc)) from None
    return value


class ConditionSettings(BaseModel):
    """How the daemon runs ``exec:`` conditions (TOML table ``[conditions]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Commands run only from this directory; unset: exec: conditions are refused.
    exec_dir: str | None = None
    #: The unprivileged user they run as.
    exec_user: str = Field(default="nobody", min_length=1)


class MemorySettings(BaseModel):
    """What the memory tuner aims for (TOML table ``[memory]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Percent of the host's memory in use to aim for.
    target: float = Field(default=80.0, ge=1.0, le=99.0)
    #: KSM: left as it is (off), or run while the host needs memory (auto).
    ksm: Literal["off", "auto"] = "off"
    #: Where the kernel's KSM controls are (tests point it elsewhere).
    ksm_dir: str = Field(default="/sys/kernel/mm/ksm", min_length=1)


class MigrationSettings(BaseModel):
    """How other hosts migrate guests to this one (TOML table ``[migration]``),
    published in the store for their daemons (``virtpolicy migrate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The URI by which the source host's libvirtd reaches this host's, peer to
    #: peer. Unset: the connection's own when it names a host, else
    #: ``qemu+ssh://HOSTNAME/system`` for ``qemu:///system``.
    uri: str | None = Field(default=None, min_length=1, max_length=1024)
    #: Where QEMU's migration stream comes in: ``tcp://ADDRESS[:PORT]`` (QEMU
    #: listens on that address only) or ``unix:///PATH``. Unset: libvirt's
    #: default, the host's name. Over TCP beyond loopback, libvirt's TLS is asked for.
    stream: str | None = Field(default=None, pattern=r"^(tcp|unix)://\S+$", max_length=1024)


class ServeSettings(BaseModel):
    """Everything ``virtpolicy serve`` can be told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: str = Field(
        default_factory=lambda: os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system",
        min_length=1,
    )
    db: str = Field(default_factory=default_db, min_length=1)
    mode: Literal["enforce", "report"] = "enforce"
    reconcile_interval: float = Field(default=300.0, ge=1.0, le=86400.0)
    sample_interval: float = Field(default=5.0, ge=1.0, le=3600.0)
    history: float = Field(default=3600.0, ge=60.0, le=7 * 86400.0)
    #: Tuners to run (entry points of virtpolicy.tuners).
    tuners: Annotated[tuple[str, ...], BeforeValidator(_names), Field(min_length=1)] = ("static",)
    dry_run: bool = False
    #: Settings for the tuners (threshold, dwell, ...), by name.
    tuner_settings: dict[str, float] = {}
    run_dir: str = Field(default_factory=default_run_dir, min_length=1)
    autostart: bool = True
    #: This host's name in the fleet (the store's hosts), and its heartbeat:
    #: unset, every 2 s on a shared store (PostgreSQL), every 60 s on SQLite (one
    #: host, whose loss no other daemon waits to hear of).
    host: str = Field(default_factory=socket.gethostname, min_length=1, max_length=255)
    heartbeat: float | None = Field(default=None, ge=0.1, le=3600.0)
    #: Host CPUs kept for the host itself: no guest's vCPUs or emulator run there
    #: once placement is in play (``cpu.placement``, ``numa.nodes``).
    reserved: Annotated[frozenset[int], BeforeValidator(_cpus)] = frozenset()

    @property
    def heartbeat_s(self) -> float:
        if self.heartbeat is not None:
            return self.heartbeat
        backend = self.db.partition("://")[0].partition("+")[0] if "://" in self.db else ""
        return 2.0 if backend == "postgresql" else 60.0

    listen: str | None = None
    #: The group whose members may use the read-write socket (unset: root's).
    socket_group: str | None = Field(default=None, min_length=1, max_length=32)
    #: How long a client may take to send a whole request (headers and body)
    #: before the daemon closes its connection (slow clients hold a slot).
    request_timeout: float = Field(default=10.0, ge=1.0, le=300.0)
    tls_cert: str | None = None
    tls_key: str | None = None
    conditions: ConditionSettings = ConditionSettings()
    memory: MemorySettings = MemorySettings()
    migration: MigrationSettings = MigrationSettings()


_NESTED = {
    "conditions": tuple(ConditionSettings.model_fields),
    "memory": tuple(MemorySettings.model_fields),
    "migration": tuple(MigrationSettings.model_fields),
}
_KEYS = tuple(k for k in ServeSettings.model_fields if k not in _NESTED)


def load_serve_settings(config_file: str | None, flags: Mapping[str, Any]) -> ServeSettings:
    """Merge defaults, the TOML file, ``VIRTPOLICY_<KEY>`` and ``flags`` (None: unset)."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file:
        layers.append((config_file, _read_toml(config_file)))
    env: dict[str, Any] = {
        key: os.environ[f"VIRTPOLICY_{key.upper()}"]
        for key in _KEYS
        if f"VIRTPOLICY_{key.upper()}" in os.environ
    }
    for table, keys in _NESTED.items():
        nested = {
            key: os.environ[f"VIRTPOLICY_{table.upper()}_{key.upper()}"]
            for key in keys
            if f"VIRTPOLICY_{table.upper()}_{key.upper()}" in os.environ
        }
        if nested:
            env[table] = nested
    layers.append(("environment", env))
    layers.append(("command line", {k: v for k, v in flags.items() if v is not None}))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            if key in _NESTED and isinstance(value, Mapping):
                base = merged.get(key)
                merged[key] = {**(base if isinstance(base, Mapping) else {}), **value}
                origin.update({f"{key}.{k}": source for k in value})
            else:
                merged[key] = value
            origin[key] = source
    try:
        settings = ServeSettings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        where = origin.get(key) or origin.get(key.split(".")[0], "defaults")
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{key}: unknown setting (from {where})") from None
        raise ConfigError(
            f"{key}: {error['input']!r} is not valid (from {where}): {error['msg']}"
        ) from None
    check_listen(settings.listen, settings.tls_cert, settings.tls_key)
    return settings


def check_listen(listen: str | None, tls_cert: str | None, tls_key: str | None) -> None:
    """TCP is served only with TLS, on a HOST:PORT that parses."""
    if listen is None:
        return
    if not (tls_cert and tls_key):
        raise ConfigError(
            f"listen: {listen!r} needs tls_cert and tls_key: TCP is served only with TLS"
        )
    host, _, port_text = listen.rpartition(":")
    port = ascii_int(port_text, max_digits=5)
    if not host or port is None or not 0 < port < 65536:
        raise ConfigError(f"listen: {listen!r} is not HOST:PORT")


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    # Keys may be written as in the CLI (reconcile-interval) or as in TOML style.
    return {key.replace("-", "_"): value for key, value in data.items()}
