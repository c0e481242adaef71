"""How `fleetlab ls` shows the machines: fleet-style columns for people, JSON for scripts (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class MachineStatus(Protocol):
    """The shape of lab.MachineStatus (lab.py does I/O; this module stays pure)."""

    name: str
    machine_id: str
    ip: str
    state: str
    connected: bool


COLUMNS = ("MACHINE", "MACHINE-ID", "IP", "STATE", "NETWORK")


def network_word(connected: bool) -> str:
    return "connected" if connected else "partitioned"


def format_table(statuses: Sequence[MachineStatus]) -> str:
    rows = [COLUMNS]
    rows += [(s.name, s.machine_id, s.ip, s.state, network_word(s.connected)) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def machines_document(lab: str, statuses: Sequence[MachineStatus]) -> dict[str, Any]:
    """`fleetlab ls --output json`. The keys are part of the interface (README, "JSON output"):
    add new ones, never rename or drop one."""
    return {
        "lab": lab,
        "machines": [
            {
                "name": s.name,
                "machine_id": s.machine_id,
                "ip": s.ip,
                "state": s.state,
                "network": network_word(s.connected),
            }
            for s in statuses
        ],
    }
