"""``contention``: when the host is saturated, cap who runs above their fair share.

When the host's CPUs were busy at least ``high`` % on average over the
window, every running guest without a cap of its own whose use is above its
fair share (the host's capacity split by ``cpu.weight``, 100 where unset) is
capped at that share (at least ``floor`` %). When the host is back under
``low`` %, the caps it set are lifted. Two thresholds, so that a load
hovering near one of them does not flap.

Settings: ``high`` (90), ``low`` (70), ``floor`` (10).
"""

from __future__ import annotations

from virtpolicy.engine.tuners import Action, Context

DEFAULT_WEIGHT = 100


class Contention:
    name = "contention"
    description = "Cap guests above their weight's fair share while the host is saturated."

    def decide(self, context: Context) -> list[Action]:
        busy = context.host_busy()
        if busy is None or not context.window:
            return []
        high, low = context.setting("high", 90.0), context.setting("low", 70.0)
        floor = context.setting("floor", 10.0)
        running = {n: g for n, g in context.window[-1].guests.items() if g.running}
        ours = {  # guests whose cap is this policy's to set: no static cap
            n for n in running if (p := context.policies.get(n)) is not None and p.cpu.cap is None
        }
        if busy < low:
            return [
                Action(
                    self.name,
                    n,
                    "cap",
                    None,
                    f"the host is at {busy:.0f} %, under {low:.0f} %: lifting the cap",
                )
                for n in sorted(ours)
                if context.caps.get(n) is not None
            ]
        if busy < high:
            return []
        weights = {
            n: (context.policies[n].cpu.weight if n in context.policies else None) or DEFAULT_WEIGHT
            for n in running
        }
        total = sum(weights.values())
        capacity = 100.0 * context.host_cpus
        actions = []
        for n in sorted(ours):
            share = max(floor, capacity * weights[n] / total)
            use = context.guest_load(n)
            cap = int(share)
            if use is None or use <= share or context.caps.get(n) == cap:
                continue
            actions.append(
                Action(
                    self.name,
                    n,
                    "cap",
                    cap,
                    f"the host is at {busy:.0f} % (over {high:.0f} %) and the guest uses "
                    f"{use:.0f} %, above its fair share of {share:.0f} % "
                    f"(weight {weights[n]} of {total})",
                    gain=use - share,
                )
            )
        return actions
