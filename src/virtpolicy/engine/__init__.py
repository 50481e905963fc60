"""Use cases: composes the policy model, the store and the hypervisor.

It never parses CLI flags or HTTP and never builds SQL; it reaches libvirt
through the :class:`~virtpolicy.hypervisor.base.Hypervisor` protocol (the real adapter
is in :mod:`virtpolicy.hypervisor`, an in-memory one in
:mod:`virtpolicy.testing`). The interfaces (CLI, API, hook) call into it.
"""
