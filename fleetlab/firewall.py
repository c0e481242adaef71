"""Only root reaches a lab's etcd from the host.

The forwarder puts the lab's etcd on the host's loopback, and etcd there has no authentication:
whoever connects can run any unit, as root, on every lab machine. A unix socket would need unix
endpoints in every etcd client the lab serves (fleetd's, etcdctl, fleetctl, the health checks),
so the TCP port stays and the kernel refuses it to every other user: one nftables table per lab
rejects connections to the port from sockets not owned by root (`meta skuid`).
"""

from __future__ import annotations

from flotilla.process import run


def table(lab: str) -> str:
    return f"fleetlab_{lab}"  # lab names are [a-z][a-z0-9]*: a valid nft identifier as they are


def root_only_rules(lab: str, port: int) -> str:
    """The nft script for one lab (pure): loopback connections to `port` only from uid 0."""
    return (
        f"table inet {table(lab)} {{\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy accept;\n"
        f"    ip daddr 127.0.0.1 tcp dport {port} meta skuid != 0 reject with tcp reset\n"
        "  }\n"
        "}\n"
    )


def allow_only_root(lab: str, port: int) -> None:
    run(["nft", "-f", "-"], input=root_only_rules(lab, port))


def remove_rules(lab: str) -> None:
    """Remove the lab's table, if there is one (a half-created lab may have none)."""
    listed = run(["nft", "list", "tables", "inet"], check=False).stdout.split()
    if table(lab) in listed:
        run(["nft", "delete", "table", "inet", table(lab)])
