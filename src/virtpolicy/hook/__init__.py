"""libvirt's hook: ``qemu.sh`` is the program, ``install`` puts it in place.

The program is a POSIX sh front with a small Python part that uses the
standard library only (its C socket module) and nothing of virtpolicy, so
that it adds milliseconds, not tens of them, to every start libvirtd makes.
"""
