"""A failing dependency is logged once, reminded of now and then, and its return told."""

import logging

import pytest

from virtpolicy.engine.runtime import outage as module
from virtpolicy.engine.runtime.outage import Outage


def test_a_retry_every_half_second_logs_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two minutes of failures every 0.5 s (241 tries) log 3 warnings, not 241,
    and the store's return one line with how long it was gone."""
    clock = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO, logger=module.log.name)
    watch = Outage("store")
    for _ in range(241):
        watch.failed(RuntimeError("connection refused"))
        clock[0] += 0.5
    watch.answered()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "store: connection refused; retrying"
    assert lines[1].startswith("store: still failing after 60 s (121 tries)")
    assert lines[2].startswith("store: still failing after 120 s")
    assert lines[3] == "store: answers again after 120 s"
    assert len(lines) == 4
