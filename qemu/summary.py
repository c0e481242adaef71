"""What `flotilla-qemu` says about a running VM: lines for people, one JSON document for
scripts (pure; built from the Vm once it runs)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class VmSummary:
    name: str
    kvm: bool
    direct_kernel: bool
    run_dir: Path
    console: Path
    qmp: Path
    pid: int | None
    ports: dict[int, int]  # guest port -> host port on 127.0.0.1; 22 is SSH
    command: tuple[str, ...]

    @property
    def ssh_port(self) -> int:
        return self.ports[22]

    @property
    def ssh_command(self) -> str:
        return f"ssh -p {self.ssh_port} core@127.0.0.1"


def summary_lines(summary: VmSummary, verbose: bool) -> list[str]:
    accel = "KVM" if summary.kvm else "TCG"
    boot = "direct kernel" if summary.direct_kernel else "UEFI from disk"
    lines = [
        f"VM {summary.name} ({accel}, {boot}) running; run dir {summary.run_dir}",
        f"  console  {summary.console}",
        f"  qmp      {summary.qmp}",
        f"  ssh      {summary.ssh_command}",
    ]
    lines += [
        f"  forward  127.0.0.1:{host} -> {guest}"
        for guest, host in sorted(summary.ports.items())
        if guest != 22
    ]
    if verbose:
        lines.append("  command  " + shlex.join(summary.command))
    return lines


def summary_document(summary: VmSummary, ssh_seconds: float | None) -> dict[str, Any]:
    """`flotilla-qemu --output json`. The keys are part of the interface (README, "JSON
    output"): add new ones, never rename or drop one. `ssh_seconds` is null without --wait."""
    return {
        "name": summary.name,
        "accelerator": "kvm" if summary.kvm else "tcg",
        "boot": "kernel" if summary.direct_kernel else "uefi",
        "pid": summary.pid,
        "run_dir": str(summary.run_dir),
        "console": str(summary.console),
        "qmp": str(summary.qmp),
        "ssh_port": summary.ssh_port,
        "ssh_command": summary.ssh_command,
        "forwards": [
            {"host": host, "guest": guest}
            for guest, host in sorted(summary.ports.items())
            if guest != 22
        ],
        "ssh_seconds": None if ssh_seconds is None else round(ssh_seconds, 1),
        "command": list(summary.command),
    }
