"""Starting and stopping in dependency order: jobs, their runner in the
daemon, the orchestrator, dependency conditions and their probes, and
admission (whether a guest may start now).
"""
