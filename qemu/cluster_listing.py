"""How `flotilla-cluster ls` shows the nodes: a tab-separated table for people, one JSON
document for scripts (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SSH_PORT = 22
ETCD_PORT = 2379


@dataclass(frozen=True)
class NodeRow:
    name: str
    ip: str
    pid: int | None  # None: not running
    # guest port -> host port on 127.0.0.1; empty if the command that started the node was
    # killed before it read them
    ports: dict[int, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return "stopped" if self.pid is None else "running"


def format_nodes(publish: Sequence[int], rows: Sequence[NodeRow]) -> list[str]:
    published = ", ".join(str(port) for port in publish)
    lines = [f"NODE\tSTATE\tPID\tIP\t\tSSH\tETCD\tPUBLISHED ({published})"]
    for row in rows:
        if row.pid is None:
            lines.append(f"{row.name}\tstopped\t-\t{row.ip}\t-\t-\t-")
            continue
        others = ",".join(str(row.ports[p]) for p in publish if p in row.ports) or "-"
        ssh, etcd = row.ports.get(SSH_PORT, "-"), row.ports.get(ETCD_PORT, "-")
        lines.append(f"{row.name}\trunning\t{row.pid}\t{row.ip}\t{ssh}\t{etcd}\t{others}")
    return lines


def nodes_document(cluster: str, publish: Sequence[int], rows: Sequence[NodeRow]) -> dict[str, Any]:
    """`flotilla-cluster ls --output json`. The keys are part of the interface (README, "JSON
    output"): add new ones, never rename or drop one. A port nobody knows is null."""
    return {
        "cluster": cluster,
        "nodes": [
            {
                "name": row.name,
                "state": row.state,
                "pid": row.pid,
                "ip": row.ip,
                "ssh_port": row.ports.get(SSH_PORT) if row.pid else None,
                "etcd_port": row.ports.get(ETCD_PORT) if row.pid else None,
                "published": [
                    {"guest": port, "host": row.ports.get(port) if row.pid else None}
                    for port in publish
                ],
            }
            for row in rows
        ],
    }
