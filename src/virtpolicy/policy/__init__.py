"""The domain model: policies, cpusets, conditions, the dependency graph.

Pure: no I/O, no libvirt, no database. Everything here is unit-tested without
any of them. Import from the modules (``virtpolicy.policy.model``, ...).
"""
