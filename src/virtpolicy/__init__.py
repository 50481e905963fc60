"""virtpolicy: a policy manager for libvirt guests."""

__version__ = "0.1.0"
