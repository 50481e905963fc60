"""Memory policies on a simulated overcommitted host: the same traces through three.

The host (virtpolicy.testing.memsim): 16 guests, four of each kind of working
set (idle, steady, bursts, a slow leak), whose defined memory adds up to 1.5x
and 2x what a 64 GiB host has for guests, over one hour at 5 s steps. Three
policies set the balloons, each from what the host and each guest's balloon
driver would say:

- virtpolicy's ``memory`` tuner (its :func:`plan`, as the daemon runs it: a
  guest's balloon at most every 15 s, a guest in distress at once);
- MoM's default balloon rules, RE-IMPLEMENTED HERE from their published
  description (not MoM's code): every 15 s, host under pressure below 20 % free
  (critical below 5 %), each guest's target free share shrinking with the
  host's free memory, at most 5 % of a guest's memory per cycle and nothing
  under 0.25 %; 5 % back per cycle up to the maximum when the host is not under
  pressure;
- Proxmox's auto-ballooning, RE-IMPLEMENTED HERE from its published
  description (not Proxmox's code): every 10 s, aiming for 80 % of the host in
  use, at most 100 MiB per guest per cycle, memory above each guest's minimum
  shared by its shares, taken first from guests with more than 25 % free and
  given first to those under pressure.

Per run: guest-seconds in distress (working set above the memory the guest
has), host-seconds above 95 % in use, memory handed back (GiB·h) and balloon
changes per hour. Every run is printed; nothing is asserted.

Run: .venv/bin/python bench/bench_memory.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

from virtpolicy.engine.tuners.memory import (
    RECOVERY_S,
    GuestMemory,
    Settings,
    falling_kib,
    plan,
    running_out,
)
from virtpolicy.testing.memsim import MemoryHost, Outcome, Policy, SimGuest, host_of, play

MIB = 1024
STEPS = 720  # one hour


def virtpolicy_tuner() -> Policy:
    last: dict[str, int] = {}
    usable: dict[str, int] = {}
    had: dict[str, int] = {}  # each guest's balloon at the last step
    short: dict[str, int] = {}  # the step each guest last ran short at

    def policy(host: MemoryHost) -> None:
        def falling(g: SimGuest) -> int:
            was = usable.get(g.name)
            if was is None:
                return 0
            return falling_kib(host.usable_kib(g), was, g.actual_kib, had.get(g.name))

        guests = [
            GuestMemory(
                g.name,
                g.actual_kib,
                g.maximum_kib,
                g.floor_kib,
                g.weight,
                host.usable_kib(g),
                running_out(g.actual_kib, host.usable_kib(g), falling(g)),
                falling(g),
                host.step - short.get(g.name, -999) <= RECOVERY_S / 5,
            )
            for g in host.guests
        ]
        short.update(
            (g.name, host.step)
            for g in host.guests
            if running_out(g.actual_kib, host.usable_kib(g), falling(g))
        )
        usable.update((g.name, host.usable_kib(g)) for g in host.guests)
        had.update((g.name, g.actual_kib) for g in host.guests)
        for move in plan(host.host(), guests, Settings()):
            if move.target_kib is None:
                continue
            if not move.urgent and host.step - last.get(move.guest, -99) < 3:  # 15 s dwell
                continue
            last[move.guest] = host.step
            host.set_balloon(move.guest, move.target_kib)

    return policy


def mom_rules() -> Policy:
    """MoM's default balloon rules, re-implemented from their description."""

    def policy(host: MemoryHost) -> None:
        if host.step % 3:  # every 15 s
            return
        free = host.host().available_kib / host.total_kib
        for g in host.guests:
            if free < 0.20:  # under pressure
                target_free = 0.05 if free < 0.05 else 0.20 * free / 0.20
                share = host.usable_kib(g) / g.actual_kib
                if share <= target_free:
                    continue
                change = min((share - target_free) * g.actual_kib, 0.05 * g.actual_kib)
                if change >= 0.0025 * g.actual_kib:
                    host.set_balloon(g.name, int(g.actual_kib - change))
            elif g.actual_kib < g.maximum_kib:
                host.set_balloon(g.name, int(g.actual_kib + 0.05 * g.maximum_kib))

    return policy


def proxmox_rules() -> Policy:
    """Proxmox's auto-ballooning, re-implemented from its description."""

    def policy(host: MemoryHost) -> None:
        if host.step % 2:  # every 10 s
            return
        goal = host.used_kib - 0.80 * host.total_kib  # > 0: free this much
        step = 100 * MIB
        if goal > 0:
            able = [
                g for g in host.guests
                if host.usable_kib(g) > 0.25 * g.actual_kib and g.actual_kib > g.floor_kib
            ]  # fmt: skip
            total = sum((g.actual_kib - g.floor_kib) / g.weight for g in able)
            for g in able:
                share = goal * (g.actual_kib - g.floor_kib) / g.weight / total
                take = min(share, step, g.actual_kib - g.floor_kib)
                host.set_balloon(g.name, int(g.actual_kib - take))
        else:
            room = -goal
            pressed = sorted(host.guests, key=lambda g: host.usable_kib(g) / g.actual_kib)
            for g in pressed:
                give = min(step, g.maximum_kib - g.actual_kib, room)
                if give > 0:
                    room -= give
                    host.set_balloon(g.name, int(g.actual_kib + give))

    return policy


POLICIES = {
    "virtpolicy": virtpolicy_tuner,
    "MoM (re-impl.)": mom_rules,
    "Proxmox (re-impl.)": proxmox_rules,
}


def run(seed: int, overcommit: float, make: Callable[[], Policy]) -> Outcome:
    host = host_of(seed, overcommit, steps=STEPS)
    return play(host, make(), STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--by-kind", action="store_true", help="also each kind of working set's figures"
    )
    args = parser.parse_args()
    print(f"{platform.node()}, {time.strftime('%Y-%m-%d')}; 16 guests, 64 GiB host, 1 hour")
    print(
        "| seed | overcommit | policy | guest-s in distress | host-s > 95 % "
        "| handed back GiB·h | balloon changes/h |"
    )
    print("|---|---|---|---|---|---|---|")
    for overcommit in (1.5, 2.0):
        for seed in range(1, args.seeds + 1):
            found = {name: run(seed, overcommit, make) for name, make in POLICIES.items()}
            for name, o in found.items():
                print(
                    f"| {seed} | {overcommit}x | {name} | {o.distress_s:.0f} | {o.host_over_s:.0f} "
                    f"| {o.handed_back_gib_h:.1f} | {o.changes_per_hour:.0f} |"
                )
            ours, others = found["virtpolicy"], [found[n] for n in POLICIES if n != "virtpolicy"]
            better = min(others, key=lambda o: o.distress_s)
            met = ours.distress_s <= 0.5 * better.distress_s and (
                ours.handed_back_gib_h >= better.handed_back_gib_h
            )
            print(f"| {seed} | {overcommit}x | aim | {'met' if met else 'NOT met'} | | | |")
            if args.by_kind:
                for name, o in found.items():
                    kinds = ", ".join(
                        f"{kind} {d:.0f} s / {back:.1f} GiB·h"
                        for kind, (d, back) in sorted(o.by_kind.items())
                    )
                    print(f"|  |  | {name}: in distress / handed back by kind | {kinds} | | | |")


if __name__ == "__main__":
    main()
