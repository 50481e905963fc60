"""The domain model: policies, cpusets, conditions, the dependency graph.

Pure: no I/O, no libvirt, no database. Everything here is unit-tested without
any of them.
"""

from virtpolicy.policy.cpuset import format_cpuset, normalize_cpuset, parse_cpuset
from virtpolicy.policy.model import (
    CpuPolicy,
    Dependency,
    GuestPolicy,
    StartPolicy,
    StopPolicy,
    parse_policy,
)

__all__ = [
    "CpuPolicy",
    "Dependency",
    "GuestPolicy",
    "StartPolicy",
    "StopPolicy",
    "format_cpuset",
    "normalize_cpuset",
    "parse_cpuset",
    "parse_policy",
]
