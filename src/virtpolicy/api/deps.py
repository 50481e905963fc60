"""Request dependencies shared by the routers: the store, the daemon, the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Header, Request

from virtpolicy.api.auth import PEER_KEY, Principal, identify
from virtpolicy.api.guard import bad_type
from virtpolicy.engine.fleetview import FleetReads
from virtpolicy.engine.jobs.run import JobRequest
from virtpolicy.engine.runtime.bus import Event
from virtpolicy.engine.tuners.monitor import Monitor
from virtpolicy.engine.tuners.run import Decision
from virtpolicy.engine.tuning.reconcile import GuestStatus
from virtpolicy.errors import NotFoundError, PolicyError, UnsupportedMediaTypeError
from virtpolicy.policy.document import load_json
from virtpolicy.policy.model import GuestPolicy, check_guest_name
from virtpolicy.policy.text import quoted
from virtpolicy.store.base import Outcome, PolicyStore, Revision

T = TypeVar("T")


class Daemon(Protocol):
    """What the API needs of the running daemon (absent when only the store is
    served): questions and commands, each one method, answered from the daemon's
    memory on its loop unless it says otherwise."""

    def this_host(self) -> str:
        """This host's name in the fleet."""

    def guest_states(self) -> Mapping[str, str]:
        """Every domain's state as libvirt last told the daemon."""

    def statuses(self) -> list[GuestStatus]:
        """Every guest's status as of its last pass."""

    def policies(self) -> Mapping[str, GuestPolicy]:
        """The policies the daemon holds by guest (its own guests'), as last read."""

    async def every_policy(self) -> Mapping[str, GuestPolicy]:
        """Every stored policy by guest, the fleet's too."""

    def host_info(self) -> dict[str, Any]:
        """The connection, its driver, the host's CPUs and the fleet."""

    def placement(self, host: str | None = None) -> dict[str, Any] | None:
        """Where the latest pass placed the guests here, per CPU; of another
        ``host``, as its daemon last published it (None: not known)."""

    def utilization(self, *groups: str) -> Monitor:
        """The figures sampled so far (read only); the ``groups`` asked for
        ("vcpu", "balloon", "host") are sampled from the next sample on."""

    def tuner_info(self) -> dict[str, Any]:
        """The tuners it runs (``running``) and whether in dry run (``dry_run``)."""

    def decisions(self, guest: str | None, limit: int) -> list[Decision]:
        """The tuners' decisions, newest first (of ``guest`` only, if given)."""

    def subscribe(
        self, after: int | None, kinds: set[str], idle: float
    ) -> AsyncIterator[Event | None]:
        """The event stream from after event ``after`` (see the event bus)."""

    def recent_events(self, kinds: set[str], limit: int) -> list[Event]:
        """The newest events the daemon keeps (of ``kinds``), newest first."""

    async def submit(self, request: JobRequest, actor: str) -> dict[str, Any]:
        """Record a start or stop job and run it in the background; the record."""

    def job(self, job_id: int) -> dict[str, Any] | None:
        """A job this daemon runs, current to its last guest (None: not here)."""

    def notify(self, written: Sequence[Revision]) -> None:
        """Policies were written through the API: these revisions (enforce them now)."""

    async def admission(self, guest: str) -> list[str]:
        """Why ``guest`` may not start now; empty when it may."""

    async def migration(
        self, guest: str, vcpus: int | None = None, to: str | None = None
    ) -> list[str]:
        """Why ``guest`` may not migrate to this host (with ``to``: to that host, as
        it last published itself); empty when it may."""

    def hook_event(self, guest: str, operation: str, phase: str) -> None:
        """libvirt's hook reports an operation on ``guest``."""


async def get_store(request: Request) -> PolicyStore:
    store: PolicyStore = request.app.state.store
    return store


async def get_daemon(request: Request) -> Daemon:
    daemon: Daemon | None = request.app.state.daemon
    if daemon is None:
        raise NotFoundError("this API serves only the store, without a daemon")
    return daemon


def notify_daemon(request: Request, outcomes: Iterable[Outcome]) -> None:
    """Tell the daemon, if there is one, what a write wrote."""
    daemon: Daemon | None = request.app.state.daemon
    written = [o.written for o in outcomes if o.written is not None]
    if daemon is not None and written:
        daemon.notify(written)


async def read_body(request: Request, *, yaml: bool = False) -> bytes:
    """The request body, once its Content-Type says it is JSON (a merge patch is
    JSON too), or YAML with ``yaml``; UnsupportedMediaTypeError (415) before
    reading it otherwise."""
    refusal = bad_type(request.headers.get("content-type"), yaml=yaml)
    if refusal is not None:
        raise UnsupportedMediaTypeError(refusal[2], field=refusal[3])
    return await request.body()


async def json_object(request: Request, then: Callable[[dict[str, Any]], T]) -> T:
    """``then`` of the request body, which must be a JSON object (PolicyError, 422,
    if not). Parsing and ``then`` (validation) run in a worker thread: however
    long a body takes to check, the loop goes on answering."""
    body = await read_body(request)

    def parse() -> T:
        value = load_json(body, "body")
        if not isinstance(value, dict):
            raise PolicyError("body: must be a JSON object", field="body")
        return then(value)

    return await asyncio.to_thread(parse)


async def get_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Who asks. A token is looked up in the store, in a thread; a Unix peer is
    known from its socket, with no thread at all (admission and status stay on
    the loop)."""
    args = (request.app.state.listener, request.scope.get(PEER_KEY), authorization)
    if authorization:
        return await asyncio.to_thread(identify, *args, request.app.state.store)
    return identify(*args, request.app.state.store)


async def get_writer(who: Annotated[Principal, Depends(get_principal)]) -> Principal:
    who.require("operator")
    return who


async def get_fleet(request: Request) -> FleetReads:
    fleet: FleetReads = request.app.state.fleet
    return fleet


def guest_name(guest: str) -> str:
    """``guest`` if it is a guest name, else PolicyError (422) naming it; as a
    dependency (:data:`GuestPath`), the ``{guest}`` of the path."""
    try:
        check_guest_name(guest)
    except PolicyError as exc:
        raise PolicyError(f"guest: {exc}", field="guest") from None
    return guest


def selector(spec: str) -> tuple[str, str]:
    """A ``label`` query, ``KEY=VALUE``, as (key, value); PolicyError (422) if not one."""
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise PolicyError(f"label: {quoted(spec, 40)} is not KEY=VALUE", field="label")
    return key, value


Store = Annotated[PolicyStore, Depends(get_store)]
#: A ``{guest}`` of the path, checked as every guest name is.
GuestPath = Annotated[str, Depends(guest_name)]
Fleet = Annotated[FleetReads, Depends(get_fleet)]
Reader = Annotated[Principal, Depends(get_principal)]
Writer = Annotated[Principal, Depends(get_writer)]
DaemonDep = Annotated[Daemon, Depends(get_daemon)]
