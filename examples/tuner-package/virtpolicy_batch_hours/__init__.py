"""``batch-hours``: guests labelled ``class: batch`` run capped outside their hours.

An example of a tuner in a package of its own. The daemon calls
``decide`` after every sample with a Context (statistics, stored policies,
host, current pins and caps) and applies what it returns, with its rate
limits and hysteresis, logging every decision.

Settings (``Context.settings``): ``cap`` (50: % of one host CPU),
``start`` and ``end`` (22 and 6: the hours, local time, when batch guests run
free). The same cap and hours for every batch guest keep the example short.
"""

from __future__ import annotations

import time

from virtpolicy.engine.tuners import Action, Context


class BatchHours:
    name = "batch-hours"
    description = "Cap guests labelled class=batch outside their free hours (22-6)."

    def decide(self, context: Context) -> list[Action]:
        if not context.window:
            return []
        hour = time.localtime(context.now).tm_hour
        start, end = int(context.setting("start", 22)), int(context.setting("end", 6))
        free = start <= hour < end if start < end else hour >= start or hour < end
        cap = int(context.setting("cap", 50))
        want = None if free else cap
        running = context.window[-1].guests
        actions = []
        for name, policy in sorted(context.policies.items()):
            if policy.labels.get("class") != "batch" or name not in running:
                continue
            if policy.cpu.cap is not None or context.caps.get(name) == want:
                continue  # a cap of its own wins; or nothing to change
            why = (
                f"{hour:02d}:00 is within the free hours {start}-{end}: lifting the cap"
                if free
                else f"{hour:02d}:00 is outside the free hours {start}-{end}: capping at {cap} %"
            )
            actions.append(Action(self.name, name, "cap", want, why))
        return actions
