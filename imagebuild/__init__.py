"""Builds what Flotilla machines boot: the shared root filesystem (and, later, the disk image)."""
