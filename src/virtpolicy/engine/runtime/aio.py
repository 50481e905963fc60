"""Running the engine's event loop.

Probes (``exec:`` conditions) spawn processes from the loop. Python 3.11's
default child watcher starts one thread per child, and its ``fork`` and
thread start stall the loop that also answers the hook; a pidfd watcher
(the default from Python 3.12 on) waits for children through the loop
itself. Measured in bench/README.md ("Orchestrated start").
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def _pidfd_works() -> bool:
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


#: Worker threads for blocking calls (store, libvirt). asyncio's default is
#: min(32, CPUs + 4): six on a 2-CPU host, which a write waiting seconds for
#: the store's lock, or a burst of guest starts, would all take.
WORKER_THREADS = 32


def run(main: Coroutine[Any, Any, T], workers: int | None = None) -> T:
    """``asyncio.run``, with children watched through pidfds where the kernel has
    them, and ``workers`` threads for ``to_thread`` if given (the daemon:
    :data:`WORKER_THREADS`; a short-lived command keeps asyncio's default, whose
    few threads start guests faster than many contending for the GIL)."""
    if sys.version_info < (3, 12) and _pidfd_works():
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    if workers is None:
        return asyncio.run(main)

    async def with_workers() -> T:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(workers, "virtpolicy-worker"))
        return await main

    return asyncio.run(with_workers())


async def timed_thread(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` in a worker thread, and the CPU time it took on that thread."""

    def timed() -> tuple[T, float]:
        before = time.thread_time()
        result = call()
        return result, time.thread_time() - before

    return await asyncio.to_thread(timed)
