"""fleetd: the per-machine cluster daemon (etcd-lease membership, engine, systemd agent)."""

from flotilla import __version__

__all__ = ["__version__"]
