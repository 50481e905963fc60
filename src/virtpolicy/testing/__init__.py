"""Stand-ins for a host, for testing code that uses virtpolicy.

A public, documented module for plugin authors and for virtpolicy's own unit
tests; nothing in the daemon uses it.

- :class:`MemoryHypervisor` implements :class:`virtpolicy.hypervisor.base.Hypervisor` in
  memory: guests with states, pinning, scheduler values and a mirrored
  policy, lifecycle events, and a connection that can be made to fail. The
  engine (controller, reconcile, admission, jobs) runs on it without libvirt.
- :mod:`virtpolicy.testing.simulate` plays load traces (seeded, or from a
  CSV file) through a tuner, an hour of samples in seconds:
  ``SimulatedHypervisor``, ``generate``, ``from_csv``, ``play``.
"""

from virtpolicy.testing.memory import MemoryGuest, MemoryHypervisor

__all__ = ["MemoryGuest", "MemoryHypervisor"]
