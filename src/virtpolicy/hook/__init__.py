"""libvirt's hook: ``qemu`` is the program, ``install`` puts it in place.

The program itself (``qemu.py``) uses the standard library only and imports
nothing of virtpolicy, so that it starts in milliseconds inside libvirtd.
"""
