"""Logging a dependency that fails and is retried: once, then now and then."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Outage:
    """Logs a failing dependency once when it fails, then at most every
    :data:`REMIND_S` while it keeps failing, and once when it answers again: a
    retry every half second must not write a line every half second."""

    REMIND_S = 60.0

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.log = logger
        self.since: float | None = None
        self._told = 0.0
        self._tries = 0

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._tries += 1
        if self.since is None:
            self.since, self._told = now, now
            self.log.warning("%s: %s; retrying", self.what, exc)
        elif now - self._told >= self.REMIND_S:
            self._told = now
            self.log.warning(
                "%s: still failing after %.0f s (%d tries): %s",
                self.what, now - self.since, self._tries, exc,
            )  # fmt: skip

    def answered(self) -> None:
        if self.since is not None:
            self.log.info(
                "%s: answers again after %.0f s", self.what, time.monotonic() - self.since
            )
            self.since, self._tries = None, 0
