"""Only root reaches an unauthenticated control port that a tool puts on the host's loopback.

The lab forwards its etcd to the host, and a VM cluster forwards each node's etcd through QEMU.
etcd there has no authentication: whoever connects can run any unit, as root, on every machine.
A unix socket would need unix endpoints in every etcd client these serve (fleetd's, etcdctl,
fleetctl, the health checks), so the TCP ports stay and the kernel refuses them to every other
user: one nftables table per lab or cluster rejects connections to its ports from sockets not
owned by root (`meta skuid`).
"""

from __future__ import annotations

from collections.abc import Collection

from flotilla.process import run


def root_only_rules(table: str, ports: Collection[int]) -> str:
    """The nft script (pure) that replaces `table` with one rule: loopback connections to
    `ports` only from uid 0. Adding, deleting and defining the table in one script makes the
    replacement atomic, whether the table existed or not."""
    listed = ", ".join(str(port) for port in sorted(ports))
    reject = f"ip daddr 127.0.0.1 tcp dport {{ {listed} }} meta skuid != 0 reject with tcp reset"
    rules = (
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy accept;\n"
        + (f"    {reject}\n" if ports else "")
        + "  }\n"
        "}\n"
    )
    return f"table inet {table}\ndelete table inet {table}\n{rules}"


def allow_only_root(table: str, ports: Collection[int]) -> None:
    run(["nft", "-f", "-"], input=root_only_rules(table, ports))


def remove_table(table: str) -> None:
    """Remove the table, if there is one (a half-created lab or cluster may have none)."""
    listed = run(["nft", "list", "tables", "inet"], check=False).stdout.split()
    if table in listed:
        run(["nft", "delete", "table", "inet", table])
