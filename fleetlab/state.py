"""The lab's state file: what `up` created, so separate fleetlab invocations act on one lab."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class MachineRecord:
    name: str
    machine_id: str
    ip: str


@dataclass(frozen=True)
class LabState:
    name: str
    rootfs: str
    source: str
    machines: list[MachineRecord] = field(default_factory=list)
    etcd_host_port: int = 0  # the lab's etcd, forwarded to 127.0.0.1 on the host

    def machine(self, name: str) -> MachineRecord | None:
        return next((m for m in self.machines if m.name == name), None)


def save_state(path: Path, state: LabState) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(partial, path)


def load_state(path: Path) -> LabState | None:
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    machines = [MachineRecord(**m) for m in raw.pop("machines")]
    return LabState(machines=machines, **raw)
