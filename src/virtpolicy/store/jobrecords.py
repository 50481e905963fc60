"""A job's records: its state, each guest's step and result.

Shared by the store (which keeps them), the engine (which runs jobs) and the
interfaces (which show them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypedDict

JobState = Literal["running", "succeeded", "failed", "interrupted"]


class Result(StrEnum):
    """What became of one guest in a job: its progress while in flight, then its
    outcome. Shown and stored as the text."""

    PENDING = ""  # not reached yet
    WAITING = "waiting"
    STARTING = "starting"
    STOPPING = "stopping"
    MIGRATING = "migrating"
    STARTED = "started"
    ALREADY_RUNNING = "already running"
    STOPPED = "stopped"
    ALREADY_STOPPED = "already stopped"
    SAVED = "saved"
    DESTROYED = "destroyed"
    DESTROYED_AFTER_TIMEOUT = "destroyed after shutdown timed out"
    MIGRATED = "migrated"
    FAILED = "failed"
    HELD_BACK = "held back"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"
    NOT_REACHED = "not reached"  # shown for a guest of a job that ended without it


#: A guest's progress in a job while it is not done yet; any other result is
#: its outcome. (Results read back from the store or JSON are plain text: a
#: Result is equal to its text, so ``text in IN_FLIGHT`` works for both.)
IN_FLIGHT = frozenset(
    {Result.PENDING, Result.WAITING, Result.STARTING, Result.STOPPING, Result.MIGRATING}
)
#: The outcomes of a guest that did not get where the job meant it to.
FAILED = frozenset({Result.FAILED, Result.HELD_BACK, Result.REFUSED})
#: The outcomes of a guest that runs after a start job.
UP = frozenset({Result.STARTED, Result.ALREADY_RUNNING})


class Step(TypedDict):
    """One guest's step of a job as stored and shown."""

    guest: str
    host: str
    result: str
    seconds: float
    detail: str


@dataclass(frozen=True, slots=True)
class Job:
    """An orchestrated start or stop, and how far it got.

    ``process`` names the process that runs it (``PID:STARTTIME`` on
    ``host``), so that a job left ``running`` by a process that died can be
    told apart from one that still runs. ``results`` has one entry per guest
    that has moved (``guest``, ``host``, ``result``, ``seconds``, ``detail``).
    ``hosts`` names the host whose daemon starts or stops each guest, and
    ``unclaimed`` the guests no daemon has taken up yet.
    """

    id: int
    action: str
    request: Mapping[str, Any]
    guests: tuple[str, ...]
    state: JobState
    runner: str
    host: str
    process: str
    actor: str
    created_at: str
    finished_at: str | None
    results: tuple[Step, ...]
    detail: str
    hosts: Mapping[str, str] = field(default_factory=dict)
    unclaimed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "state": self.state,
            "request": dict(self.request),
            "guests": list(self.guests),
            "runner": self.runner,
            "host": self.host,
            "process": self.process,
            "actor": self.actor,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "results": [dict(r) for r in self.results],
            "detail": self.detail,
            "hosts": dict(self.hosts),
            "unclaimed": list(self.unclaimed),
        }
