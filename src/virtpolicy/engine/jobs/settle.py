"""Jobs whose process died: found (reading the job list, and the daemon at
start-up) and made ``interrupted``, with the guests it was starting saying so.
A job's process is ``PID:STARTTIME``, so that a reused PID is not taken for
the same process."""

from __future__ import annotations

import dataclasses
import os
import socket

from virtpolicy.policy.numbers import ascii_int
from virtpolicy.store.base import Jobs
from virtpolicy.store.jobrecords import IN_FLIGHT, Job, Result, Step


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot, if it exists."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            line = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return line.rpartition(")")[2].split()[19]


def this_process() -> str:
    pid = os.getpid()
    return f"{pid}:{_start_time(pid)}"


def process_alive(process: str) -> bool:
    pid_text, _, started = process.partition(":")
    pid = ascii_int(pid_text, max_digits=10)
    return pid is not None and _start_time(pid) == started


def settle(store: Jobs, host: str | None = None) -> list[Job]:
    """Mark jobs of this host whose process has died as ``interrupted``."""
    settled = []
    for job in store.jobs(state="running", limit=1000):
        ended = interrupted(job, host)
        if ended is not None and store.update_job(
            job.id, ended.results, state="interrupted", detail=ended.detail
        ):
            settled.append(store.job(job.id))
    return settled


def interrupted(job: Job, host: str | None = None) -> Job | None:
    """``job`` as :func:`settle` would leave it, when it runs on this host (default:
    this machine's name) and its process has died; else None. Writes nothing: what
    a reader is shown before the daemon or the CLI settles it."""
    host = host or socket.gethostname()
    if job.state != "running" or job.host != host or process_alive(job.process):
        return None
    pid = job.process.partition(":")[0]
    results: list[Step] = [
        {
            **r,
            "result": Result.INTERRUPTED,
            "detail": f"was {r['result']} when the job's process ended; check its state",
        }
        if r["result"] in IN_FLIGHT
        else r
        for r in job.results
    ]
    done = sum(1 for r in job.results if r["result"] not in IN_FLIGHT)
    detail = (
        f"the {job.runner} running this job (pid {pid} on {host}) ended before it did; "
        f"{done} of {len(job.guests)} guests were done"
    )
    return dataclasses.replace(job, results=tuple(results), state="interrupted", detail=detail)
