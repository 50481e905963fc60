"""Routes for utilization data: JSON under ``/v1/stats`` and ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response

from virtpolicy.api import metrics, schemas
from virtpolicy.api.deps import DaemonDep, GuestPath, Reader
from virtpolicy.errors import NotFoundError

router = APIRouter(tags=["stats"], responses=schemas.ERRORS)


@router.get("/v1/stats/guests", response_model=list[dict[str, Any]])
def guests(who: Reader, daemon: DaemonDep) -> Response:
    """Every guest's rates over the last sample interval: CPU % (of one host
    CPU), per vCPU %, steal and wait %, memory. Per-vCPU and memory figures are
    collected from the sample after the first such read on, for 5 minutes after the
    last."""
    latest = daemon.utilization("vcpu", "balloon").latest
    if latest is None:
        return _json([])
    interval = round(latest.interval, 3)
    return _json(
        [g.to_dict(time=latest.wall, interval=interval) for _, g in sorted(latest.guests.items())]
    )


def _json(content: object) -> Response:
    """Plain numbers and strings, written as they are, not validated again, by
    orjson: a reader of a few hundred guests every few seconds is most of what
    the daemon does for it, and the standard library's encoder took ten times as
    long (it writes each float through Python's own repr)."""
    return Response(orjson.dumps(content), media_type="application/json")


@router.get("/v1/stats/guests/{guest}", response_model=dict[str, Any])
def guest(
    guest: GuestPath,
    who: Reader,
    daemon: DaemonDep,
    since: Annotated[
        float | None, Query(description="Unix time; default: the whole window")
    ] = None,
    step: Annotated[
        float, Query(ge=0, le=86400, description="Seconds per point; 0: every sample")
    ] = 0,
) -> Response:
    """One guest's history: CPU %, each vCPU's % and steal %, resident memory,
    its balloon and what it could use (KiB, where sampled);
    and its newest rates (``latest``: memory and its balloon's figures too)."""
    monitor = daemon.utilization("vcpu", "balloon")
    latest = monitor.latest
    if latest is None or (guest not in latest.guests and guest not in monitor.history.owners()):
        raise NotFoundError(f"{guest}: no statistics (no such guest, or not sampled yet)")
    vcpus = len(latest.guests[guest].vcpu_percent) if guest in latest.guests else 0
    metrics_ = ["cpu", "rss_kib", "memory_kib", "usable_kib"] + [f"vcpu.{i}" for i in range(vcpus)]
    metrics_ += [f"steal.{i}" for i in range(vcpus)]
    points = monitor.history.window(guest, metrics_, since if since is not None else 0.0, step)
    now = latest.guests.get(guest)
    return _json(
        {
            "guest": guest,
            "interval": monitor.interval,
            "step": step,
            "points": points,
            # The newest rates, memory included (as in /v1/stats/guests); None
            # when the guest is no longer sampled.
            "latest": now.to_dict() if now is not None else None,
        }
    )


@router.get("/v1/stats/host")
def host(who: Reader, daemon: DaemonDep) -> dict[str, Any]:
    """Each host CPU's busy %, and the sampler's health. The host CPUs' figures are
    collected from the sample after the first such read on, for 5 minutes after
    the last."""
    monitor = daemon.utilization("host")
    cpus = int(daemon.host_info().get("cpus") or 0)
    latest = monitor.latest
    history = monitor.history
    series = history.series()
    owners = max(1, len(history.owners() - {"host"}))
    memory = monitor.host_memory
    return {
        "time": latest.wall if latest else None,
        # In KiB, with the share in use and PSI's some avg10 (None: not known).
        "memory": memory.to_dict() if memory is not None else None,
        # Every host CPU, its busy % unknown (None) until two samples had it.
        "cpus": [
            {"cpu": i, "busy_percent": None if b is None else round(b, 2)}
            for i, b in enumerate(_padded(latest.host_busy_percent if latest else (), cpus))
        ],
        "sampler": {
            "interval": monitor.interval,
            "window": monitor.window,
            "samples": monitor.samples,
            "errors": monitor.errors,
            "last_error": monitor.last_error or None,
            # "kernel" (procfs and cgroups) or "libvirt"; the guests the kernel
            # could not be read for (sampled through libvirt), and why.
            "source": monitor.last.source if monitor.last else None,
            "fallback": dict(monitor.last.fallback) if monitor.last else {},
            "last_cpu_seconds": round(monitor.last_duration, 6),
            "age_seconds": round(time.time() - latest.wall, 3) if latest else None,
            "history_bytes": history.bytes_for(series),
            "history_bytes_per_guest": history.bytes_for(series) // owners,
        },
    }


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {metrics.CONTENT_TYPE: {}}}}
)
async def prometheus(who: Reader, daemon: DaemonDep) -> Response:
    """Prometheus text format: guest and vCPU CPU seconds, tuning, drift,
    dependency state, sampler health."""
    monitor = daemon.utilization("vcpu", "balloon", "host")
    policies = daemon.policies()  # in memory
    text = metrics.render(monitor, daemon.statuses(), policies, dict(daemon.guest_states()))
    return Response(text, media_type=metrics.CONTENT_TYPE)


def _padded(busy: Sequence[float | None], cpus: int) -> list[float | None]:
    return [*busy, *([None] * (cpus - len(busy)))]
