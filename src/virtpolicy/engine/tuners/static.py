"""``static``: the stored policy, nothing more."""

from __future__ import annotations

from virtpolicy.engine.tuners import Action, Context


class Static:
    """The daemon enforces stored policies with or without it; it proposes nothing,
    so that running it alone (the default) means "no dynamic behaviour"."""

    name = "static"
    description = "The stored policy as it is; proposes nothing."

    def decide(self, context: Context) -> list[Action]:
        return []
