"""A guard that makes blocking calls on the event loop's thread fail.

The daemon's event loop answers libvirt's hook while libvirtd holds a
domain's lock, so no store or libvirt call may run on it. With
``VIRTPOLICY_LOOP_GUARD=1`` in its environment (the tests set it), ``serve``
wraps its store and its libvirt connection with :func:`guarded`: a method
called on a thread that runs an event loop raises
:class:`~virtpolicy.errors.BlockingCallError` and logs the call with its
stack, so that a test run finds every such call, not just the slow ones.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any, TypeVar, cast

from virtpolicy.errors import BlockingCallError

log = logging.getLogger(__name__)

ENV = "VIRTPOLICY_LOOP_GUARD"
T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def on_loop() -> bool:
    """True on a thread that is running an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def guarded(target: T, what: str) -> T:
    """``target`` whose public methods refuse to run on an event loop's thread."""
    return cast(T, _Guarded(target, what))


class _Guarded:
    def __init__(self, target: Any, what: str) -> None:
        self._target = target
        self._what = what

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            if on_loop():
                message = f"{self._what}.{name}() called on the event loop's thread"
                log.error("BLOCKING CALL: %s", message, stack_info=True)
                raise BlockingCallError(message)
            return value(*args, **kwargs)

        return call
