"""The daemon: the controller that builds and runs its parts, the connection's
supervisor, reconcile passes, the policy cache, the sampler and the settings.
"""
