"""The libvirt adapter: the only package that imports libvirt."""
