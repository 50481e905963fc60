"""Running tuners: from proposals to applied changes, and the decision log.

After each sample the engine builds a :class:`~virtpolicy.engine.tuners.Context`
from the last ``window`` seconds of rates and asks every enabled tuner. Each
proposed action then passes, in order:

- *no change*: what it asks is already so;
- *hysteresis*: the same kind of change to the same thing must be proposed
  ``confirm`` decisions in a row: moving a given vCPU (to
  wherever is best at the time: the target may differ between rounds),
  capping a guest, or lifting its cap. ``confirm`` is the tuner's own
  (its ``confirm`` attribute; 2 when it has none) unless the engine is given
  one for all. Placing a vCPU that is on no single CPU yet needs none;
- *rate limit*: what it changes (a vCPU's pinning, a guest's cap) was last
  changed at least ``dwell`` seconds ago (a vCPU's first placement does not
  count: it undid no earlier choice);
- *dry run*: decided and logged, never applied.

Every decision, applied or not, is logged with its reason and why it was
or was not applied. The log keeps the newest :data:`LOG_SIZE` in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from virtpolicy.engine.tuners import Action, Context, Pins, Tuner
from virtpolicy.engine.tuners.monitor import Rates
from virtpolicy.policy.cpuset import format_cpuset
from virtpolicy.policy.model import GuestPolicy
from virtpolicy.policy.topology import Topology

LOG_SIZE = 10_000
DEFAULT_CONFIRM = 2

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """What became of a proposed action."""

    APPLIED = "applied"
    NO_CHANGE = "no change"  # the guest is so already
    WAITING = "waiting"  # not yet confirmed by enough rounds in a row
    RATE_LIMIT = "rate limit"  # changed too recently (dwell)
    DRY_RUN = "dry run"
    FAILED = "failed"


#: Verdicts of every round, kept in the decision log but not logged or published.
ROUTINE = frozenset({Verdict.NO_CHANGE, Verdict.WAITING, Verdict.RATE_LIMIT})


@dataclass(frozen=True, slots=True)
class Decision:
    id: int
    time: float
    tuner: str
    guest: str
    kind: str
    vcpu: int | None
    value: frozenset[int] | int | None
    reason: str
    verdict: Verdict
    detail: str = ""  # more about the verdict ("proposed 1 of 2 times in a row")

    @property
    def applied(self) -> bool:
        return self.verdict is Verdict.APPLIED

    @property
    def shown_value(self) -> str | int | None:
        """The value as the API and the log show it: a cpuset string for a pin."""
        return format_cpuset(self.value) if isinstance(self.value, frozenset) else self.value

    @property
    def outcome(self) -> str:
        """The verdict and its detail as one line, as the API and the CLI show it."""
        return f"{self.verdict}: {self.detail}" if self.detail else str(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "tuner": self.tuner,
            "guest": self.guest,
            "action": self.kind,
            "vcpu": self.vcpu,
            "value": self.shown_value,
            "reason": self.reason,
            "applied": self.applied,
            "verdict": str(self.verdict),
            "outcome": self.outcome,
        }


#: Carries out an action; returns None when done, else why it failed.
Apply = Callable[[Action], str | None]


@dataclass
class Tuners:
    tuners: Sequence[Tuner]
    dry_run: bool = False
    window: float = 60.0
    confirm: int | None = None  # None: each tuner's own (DEFAULT_CONFIRM if it says none)
    dwell: float = 60.0
    settings: Mapping[str, Any] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    log: deque[Decision] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))
    decide_seconds: float = 0.0  # the last decision's wall time
    #: Tuner -> why its last round failed (it was skipped; the others ran).
    failures: dict[str, str] = field(default_factory=dict)
    _changed_at: dict[tuple[str, str, int | None], float] = field(default_factory=dict)
    _pending: dict[tuple[str, str, int | None], tuple[str, int]] = field(default_factory=dict)
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(
        cls, tuners: Sequence[Tuner], settings: Mapping[str, float], **kw: Any
    ) -> Tuners:
        """An engine whose ``window``, ``confirm`` and ``dwell`` come from the same
        settings (``serve --set``) as the tuners' own, when given there."""
        return cls(
            tuners,
            window=float(settings.get("window", cls.window)),
            confirm=int(settings.get("confirm", 0)) or None,
            dwell=float(settings.get("dwell", cls.dwell)),
            settings=settings,
            **kw,
        )

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tuners]

    @property
    def acting(self) -> bool:
        """Whether any tuner acts on the samples (``static`` only applies policy)."""
        return any(t.name != "static" for t in self.tuners)

    def notes(self) -> dict[str, dict[str, str]]:
        """guest -> tuner -> why that tuner leaves it as it is, from the last
        round (a tuner may keep such notes: its ``notes`` attribute)."""
        found: dict[str, dict[str, str]] = {}
        for tuner in self.tuners:
            for guest, why in dict(getattr(tuner, "notes", {})).items():
                found.setdefault(guest, {})[tuner.name] = why
        return found

    def run(
        self,
        history: Sequence[Rates],
        policies: Mapping[str, GuestPolicy],
        host_cpus: int,
        pins: Pins,
        caps: Mapping[str, int | None],
        apply: Apply,
        layout: Topology | None = None,
        pools: Mapping[str, frozenset[int]] | None = None,
    ) -> list[Decision]:
        """One round: ask every tuner, filter, apply, log. The decisions made."""
        began = time.perf_counter()
        now = self.clock()
        newest = history[-1].wall if history else now
        window = [r for r in history if r.wall > newest - self.window]
        context = Context(
            now=now,
            window=window,
            policies=policies,
            host_cpus=host_cpus,
            pins=pins,
            caps=caps,
            moved_at=dict(self._changed_at),
            settings={"dwell": self.dwell, **self.settings},
            layout=layout,
            pools=pools or {},
        )
        proposed: list[Action] = []
        for tuner in self.tuners:
            try:
                proposed += tuner.decide(context)
            except Exception as exc:  # a plugin's bug must not stop the others, or the daemon
                if self.failures.get(tuner.name) != str(exc):
                    log.exception("tuner %s failed; skipped this round", tuner.name)
                self.failures[tuner.name] = str(exc) or type(exc).__name__
            else:
                self.failures.pop(tuner.name, None)
        self.decide_seconds = time.perf_counter() - began
        confirms = {
            t.name: self.confirm or int(getattr(t, "confirm", DEFAULT_CONFIRM)) for t in self.tuners
        }
        # Like confirm: each tuner's own, unless the settings give one for all.
        dwells = {
            t.name: self.dwell
            if "dwell" in self.settings
            else float(getattr(t, "dwell", self.dwell))
            for t in self.tuners
        }
        seen = set()
        decisions = []
        for action in proposed:
            seen.add(action.key)
            verdict, detail = self._verdict(
                action,
                context,
                confirms.get(action.tuner, DEFAULT_CONFIRM),
                dwells.get(action.tuner, self.dwell),
            )
            if verdict is Verdict.APPLIED:
                first = _first_placement(action, context)  # before apply changes the pins
                failure = apply(action)
                if failure is None:
                    if not first:  # the dwell counts from a choice, not from "anywhere"
                        self._changed_at[action.key] = now
                    self._pending.pop(action.key, None)
                else:
                    verdict, detail = Verdict.FAILED, failure
            decisions.append(self._record(now, action, verdict, detail))
        for key in list(self._pending):  # a proposal that stopped coming starts over
            if key not in seen:
                del self._pending[key]
        return decisions

    def _verdict(
        self, action: Action, context: Context, confirm: int, dwell: float
    ) -> tuple[Verdict, str]:
        key = action.key
        if _already(action, context):
            return Verdict.NO_CHANGE, "already so"
        count = 1
        intent, before = self._pending.get(key, (None, 0))
        if intent == _intent(action):
            count = before + 1
        self._pending[key] = (_intent(action), count)
        held = not action.urgent and not _first_placement(action, context)
        if count < confirm and held:
            return Verdict.WAITING, f"proposed {count} of {confirm} times in a row"
        changed = self._changed_at.get(key)
        if changed is not None and context.now - changed < dwell and not action.urgent:
            return (
                Verdict.RATE_LIMIT,
                f"changed {context.now - changed:.0f} s ago, dwell {dwell:.0f} s",
            )
        if self.dry_run:
            return Verdict.DRY_RUN, ""
        return Verdict.APPLIED, ""

    def _record(self, now: float, action: Action, verdict: Verdict, detail: str) -> Decision:
        with self._lock:
            decision = Decision(
                self._next_id,
                now,
                action.tuner,
                action.guest,
                action.kind,
                action.vcpu,
                action.value,
                action.reason,
                verdict,
                detail,
            )
            self._next_id += 1
            self.log.append(decision)
        return decision

    def decisions(self, guest: str | None = None, limit: int = 100) -> list[Decision]:
        """The newest decisions first, of ``guest`` if given."""
        with self._lock:
            found = [d for d in reversed(self.log) if guest is None or d.guest == guest]
        return found[:limit]


def _intent(action: Action) -> str:
    """What confirmation compares: a move (whatever the target), a cap (whatever
    the value), or lifting a cap."""
    if action.kind == "cap" and action.value is None:
        return "lift"
    return action.kind


def _first_placement(action: Action, context: Context) -> bool:
    """Pinning a vCPU that is on no single CPU yet: no choice is undone by it."""
    return (
        action.kind == "vcpupin"
        and len(context.pins.get((action.guest, action.vcpu or 0), frozenset())) != 1
    )


def _already(action: Action, context: Context) -> bool:
    if action.kind == "vcpupin" and action.vcpu is not None:
        current = context.pins.get((action.guest, action.vcpu))
        return current == action.cpus
    if action.kind == "cap":
        return context.caps.get(action.guest) == action.value
    if action.kind == "balloon" and context.window:
        now = context.window[-1].guests.get(action.guest)
        return now is not None and now.memory_kib == action.value
    return False
