"""Running a command on a unit's machine, as fleetctl status/journal do: here when the unit runs
on this machine, else over SSH with fleet's host-key rules (OpenSSH does the checking)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOCAL_MACHINE_ID = Path("/etc/machine-id")


@dataclass(frozen=True)
class SshOptions:
    username: str = "core"
    port: int = 22
    strict_host_key_checking: bool = True
    known_hosts_file: str = "~/.fleetctl/known_hosts"
    timeout: float = 10.0


def local_machine_id() -> str:
    try:
        return LOCAL_MACHINE_ID.read_text().strip()
    except OSError:
        return ""


def ssh_argv(
    host: str, command: Sequence[str], options: SshOptions, tty: bool = False
) -> list[str]:
    """ssh to host running command. Strict checking is OpenSSH's `ask`: an unknown host is
    asked about on the terminal, a changed key refused; otherwise nothing is checked or kept."""
    known_hosts = Path(options.known_hosts_file).expanduser()
    if options.strict_host_key_checking:
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        checking = ["-o", "StrictHostKeyChecking=ask", "-o", f"UserKnownHostsFile={known_hosts}"]
    else:
        checking = [
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
    return [
        "ssh",
        *(["-t"] if tty else []),
        *checking,
        "-o",
        f"ConnectTimeout={int(options.timeout)}",
        "-p",
        str(options.port),
        "-l",
        options.username,
        host,
        "--",
        *command,
    ]


def run_on(machine_id: str, ip: str, command: Sequence[str], options: SshOptions) -> int:
    """Run command on that machine with this terminal; its exit status."""
    argv = list(command) if machine_id == local_machine_id() else ssh_argv(ip, command, options)
    return subprocess.run(argv, check=False).returncode
