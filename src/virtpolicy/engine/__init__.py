"""Use cases: composes the policy model, the store and (later) the hypervisor.

It never parses CLI flags or HTTP, never builds SQL, never calls libvirt
directly; the interfaces (CLI, API, hook) call into it.
"""
