"""fleetd: the per-machine cluster daemon (etcd-lease membership, engine, systemd agent).

Empty until the fleetd issue lands; the lab machines already carry its Python dependencies.
"""

__version__ = "0.1.0"
