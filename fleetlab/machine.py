"""One lab machine: systemd as PID 1 in its own namespaces, on an overlay over the shared rootfs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from flotilla.process import run, spawn_detached

from . import cgroups
from .layout import MachineLayout
from .network import netns_path

INIT_SCRIPT = Path(__file__).with_name("machine-init.sh")
BOOTED_STATES = ("running", "degraded")
# systemd powers off on SIGRTMIN+4; SIGTERM would only make a PID 1 systemd re-execute itself.
POWEROFF_SIGNAL = signal.SIGRTMIN + 4


def seed_identity(machine: MachineLayout, machine_id: str, hosts: str, ssh_key: Path) -> None:
    """Write what makes this machine itself into its overlay before the first boot; root on
    every machine of a lab shares one SSH key, so fleetctl status/journal reach each other."""
    etc = machine.upper / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "machine-id").write_text(machine_id + "\n")
    (etc / "hostname").write_text(machine.name + "\n")
    (etc / "hosts").write_text(hosts)
    ssh = machine.upper / "root/.ssh"
    ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    (ssh / "id_ed25519").write_bytes(ssh_key.read_bytes())
    (ssh / "id_ed25519").chmod(0o600)
    public = ssh_key.with_suffix(".pub").read_text()
    (ssh / "id_ed25519.pub").write_text(public)
    (ssh / "authorized_keys").write_text(public)
    (machine.upper / "root").chmod(0o700)
    machine.work.mkdir(parents=True, exist_ok=True)
    machine.root.mkdir(parents=True, exist_ok=True)


def boot(machine: MachineLayout, rootfs: Path, source: Path) -> None:
    """Start the machine and return at once; `wait_until_booted` waits for systemd."""
    machine.cgroup.mkdir(parents=True, exist_ok=True)
    spawn_detached(
        [
            "nsenter",
            f"--net={netns_path(machine.netns)}",
            "unshare",
            "--cgroup",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            "--propagation",
            "private",
            INIT_SCRIPT,
            machine.root,
            rootfs,
            machine.upper,
            machine.work,
            source,
        ],
        cgroup=machine.cgroup,
        log_file=machine.console_log,
    )


def init_pid(machine: MachineLayout) -> int | None:
    """The host PID of the machine's systemd, or None when the machine is down."""
    return cgroups.namespace_init_pid(machine.cgroup)


def enter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """argv run inside the machine: all its namespaces, its root, root's environment."""
    return [
        "nsenter",
        "-t",
        str(pid),
        "-m",
        "-u",
        "-i",
        "-n",
        "-p",
        "-C",
        f"--root=/proc/{pid}/root",
        f"--wd=/proc/{pid}/root/root",
        *argv,
    ]


def system_state(pid: int) -> str:
    """systemctl is-system-running inside the machine (starting, running, degraded, ...)."""
    result = run(enter_argv(pid, ["systemctl", "is-system-running"]), check=False, timeout=10)
    return result.stdout.strip() or "unknown"


def failed_units(pid: int) -> list[str]:
    argv = ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"]
    result = run(enter_argv(pid, argv), check=False, timeout=10)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def wait_for_init(machine: MachineLayout, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (pid := init_pid(machine)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{machine.name}: no init process after {timeout:.0f}s")
        time.sleep(0.01)
    return pid


def wait_until_booted(machines: Sequence[MachineLayout], timeout: float) -> dict[str, str]:
    """Poll every machine until systemd says running or degraded; return the states."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    pending = list(machines)
    while pending:
        for machine in list(pending):
            pid = init_pid(machine)
            state = system_state(pid) if pid else "down"
            states[machine.name] = state
            if state in BOOTED_STATES:
                pending.remove(machine)
        if pending and time.monotonic() > deadline:
            waiting = ", ".join(f"{m.name} ({states[m.name]})" for m in pending)
            raise TimeoutError(f"machines not booted after {timeout:.0f}s: {waiting}")
        if pending:
            time.sleep(0.05)
    return states


def wait_until_reachable(pid: int, address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ping = enter_argv(pid, ["ping", "-c", "1", "-W", "1", address])
    while run(ping, check=False, timeout=10).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"machine cannot reach {address} after {timeout:.0f}s")
        time.sleep(0.1)


def poweroff(machine: MachineLayout, timeout: float = 30.0) -> None:
    """Clean shutdown: systemd stops every unit, then PID 1 exits."""
    pid = init_pid(machine)
    if pid is not None:
        os.kill(pid, POWEROFF_SIGNAL)
    if not cgroups.wait_until_empty(machine.cgroup, timeout):
        cgroups.kill_all(machine.cgroup)


def kill(machine: MachineLayout) -> None:
    """Power cut: SIGKILL PID 1, which takes every process of its PID namespace with it."""
    pid = init_pid(machine)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    cgroups.kill_all(machine.cgroup)  # the unshare parent is outside the PID namespace


def exec_interactive(pid: int, argv: Sequence[str]) -> int:
    """Run argv in the machine with the caller's terminal; return its exit status."""
    result = run(enter_argv(pid, argv), env={"HOME": "/root"}, interactive=True, check=False)
    return result.returncode
