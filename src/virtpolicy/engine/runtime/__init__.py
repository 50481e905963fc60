"""The daemon's primitives: the event bus, the priority gate, asyncio helpers,
guest states from libvirt's events, and the outage logger. They import
nothing else of the engine.
"""
