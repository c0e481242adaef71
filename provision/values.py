"""The values a role's template is rendered with, for one node of an inventory (pure)."""

from __future__ import annotations

from dataclasses import asdict

from .inventory import Inventory, Node

# etcd's defaults (100 ms / 1 s) assume real CPUs; TCG guests sharing two cores stall longer
# than that, and a member that misses heartbeats starts elections that stall everyone.
ETCD_TIMING = {"heartbeat_ms": 300, "election_ms": 3000}


def member_values(
    inventory: Inventory,
    node: Node,
    ssh_keys: list[str],
    agent_ttl: str = "10s",
    metadata: str = "",
) -> dict[str, object]:
    return {
        "cluster": {"name": inventory.cluster, "token": f"flotilla-{inventory.cluster}"},
        "node": asdict(node),
        "peers": [asdict(peer) for peer in inventory.nodes],
        "ssh_keys": ssh_keys,
        "hosts_file": hosts_file(inventory, node),
        "fleet": {"agent_ttl": agent_ttl, "metadata": metadata or f"node={node.name}"},
        "etcd": ETCD_TIMING,
    }


def hosts_file(inventory: Inventory, node: Node) -> str:
    lines = [f"127.0.0.1\tlocalhost\n127.0.1.1\t{node.name}\n::1\tlocalhost ip6-localhost\n"]
    lines += [f"{peer.ip}\t{peer.name}\n" for peer in inventory.nodes]
    return "".join(lines)
