"""Who is in a cluster: each node's name, private address and NIC (pure).

Everything derives from the cluster's name and size, so a tool that lost its state can still
name every node, and two clusters on one host never share an address or a MAC.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}\Z")
PREFIX = 24
MAX_NODES = 9


class InventoryError(ValueError):
    """The cluster cannot be laid out as asked."""


@dataclass(frozen=True)
class Node:
    name: str
    index: int  # 1-based
    ip: str
    mac: str
    prefix: int = PREFIX


@dataclass(frozen=True)
class Inventory:
    cluster: str
    subnet: str  # the first three octets, e.g. "10.78.12"
    nodes: tuple[Node, ...]

    @property
    def gateway(self) -> str:
        """The bridge's own address (tools on the host reach the nodes from it)."""
        return f"{self.subnet}.1"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(node.name for node in self.nodes)
        raise InventoryError(f"cluster {self.cluster} has no node {name!r} (nodes: {known})")


def plan_inventory(cluster: str, count: int) -> Inventory:
    if not CLUSTER_NAME.match(cluster):
        raise InventoryError(
            f"cluster name {cluster!r}: use a lower-case letter then up to 9 letters or digits"
        )
    if not 1 <= count <= MAX_NODES:
        raise InventoryError(f"--nodes {count}: a cluster has 1 to {MAX_NODES} nodes")
    digest = hashlib.sha256(cluster.encode()).digest()
    subnet = f"10.{78 + digest[0] % 8}.{digest[1]}"
    nodes = tuple(
        Node(
            name=f"n{index}",
            index=index,
            ip=f"{subnet}.{10 + index}",
            # locally administered, unicast; unique per cluster and node
            mac=f"52:54:{digest[2]:02x}:{digest[3]:02x}:{digest[4]:02x}:{index:02x}",
        )
        for index in range(1, count + 1)
    )
    return Inventory(cluster, subnet, nodes)
