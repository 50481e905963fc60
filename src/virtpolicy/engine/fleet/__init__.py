"""This daemon as a member of a fleet: what it knows of the other hosts, and
the task that registers, beats, publishes and reads.
"""
