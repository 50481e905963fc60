"""A guard that makes blocking calls on the event loop's thread fail.

The daemon's event loop answers libvirt's hook while libvirtd holds a
domain's lock, so no store or libvirt call may run on it. With
``VIRTPOLICY_LOOP_GUARD=1`` in its environment (the tests set it), ``serve``
wraps its store and its libvirt connection with :func:`guarded`: a method
called on a thread that runs an event loop raises
:class:`~virtpolicy.errors.BlockingCallError` and logs the call with its
stack, so that a test run finds every such call, not just the slow ones.

Work that is pure but may be long, such as validating a request body (a
policy's cpusets, a file of thousands of policies), is marked with
:func:`off_loop` and fails the same way when called on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from virtpolicy.errors import BlockingCallError

log = logging.getLogger(__name__)

ENV = "VIRTPOLICY_LOOP_GUARD"
T = TypeVar("T")
P = ParamSpec("P")


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def on_loop() -> bool:
    """True on a thread that is running an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def off_loop(func: Callable[P, T]) -> Callable[P, T]:
    """``func``, which with the guard on refuses to run on an event loop's thread."""
    what = f"{func.__module__}.{func.__qualname__}"

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        if enabled() and on_loop():
            _refuse(f"{what}() called on the event loop's thread")
        return func(*args, **kwargs)

    return call


def _refuse(message: str) -> None:
    log.error("BLOCKING CALL: %s", message, stack_info=True)
    raise BlockingCallError(message)


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
                _refuse(f"{self._what}.{name}() called on the event loop's thread")
            return value(*args, **kwargs)

        return call
