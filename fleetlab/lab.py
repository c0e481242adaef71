"""A lab: N machines, a bridge and an etcd, created and destroyed as one thing."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flotilla import firewall
from flotilla.process import run

from . import cgroups, hostkeys, machine, network
from .etcd import free_port, start_forwarder, start_lab_etcd, wait_lab_etcd
from .layout import (
    DEFAULT_STATE_ROOT,
    MAX_MACHINES,
    LabLayout,
    LayoutError,
    MachineLayout,
    check_lab_name,
    machine_names,
)
from .state import LabState, MachineRecord, load_state, save_state


class LabError(Exception):
    """Something a user asked for cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class MachineStatus:
    name: str
    machine_id: str
    ip: str
    state: str  # systemd's is-system-running answer, or "down"
    connected: bool


def hosts_file(records: Sequence[MachineRecord]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{record.ip}\t{record.name}" for record in records]
    return "\n".join(lines) + "\n"


class Lab:
    def __init__(self, name: str, state_root: Path = DEFAULT_STATE_ROOT) -> None:
        try:
            check_lab_name(name)
        except LayoutError as error:
            raise LabError(str(error)) from error
        self.layout = LabLayout(name, state_root, cgroups.lab_cgroup_root())

    @property
    def name(self) -> str:
        return self.layout.name

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, count: int, rootfs: Path, source: Path, timeout: float = 60.0) -> LabState:
        """Create the network, etcd and `count` machines; return once all have booted."""
        if not 1 <= count <= MAX_MACHINES:
            raise LabError(f"--machines must be between 1 and {MAX_MACHINES}, not {count}")
        if (state := self.state()) is not None:
            raise LabError(
                f"lab {self.name!r} is already up with {len(state.machines)} machines;"
                f" run `fleetlab --lab {self.name} down` first"
            )
        if self.has_leftovers():
            raise LabError(
                f"lab {self.name!r} has leftovers of an earlier run;"
                f" run `fleetlab --lab {self.name} down` first"
            )
        try:
            state = self._create(count, rootfs, source)
            wait_lab_etcd(self.layout, state.etcd_host_port)
            machine.wait_until_booted(
                [self.machine_layout(m.name) for m in state.machines], timeout
            )
        except BaseException:
            self.down()
            raise
        return state

    def _create(self, count: int, rootfs: Path, source: Path) -> LabState:
        records = [
            MachineRecord(name, uuid.uuid4().hex, self.layout.machine(name).ip)
            for name in machine_names(count)
        ]
        state = LabState(self.name, str(rootfs), str(source), records, free_port())
        self.layout.state_dir.mkdir(parents=True)
        save_state(self.layout.state_file, state)
        network.create_lab_network(self.layout)
        start_lab_etcd(self.layout)
        firewall.allow_only_root(self.layout.firewall_table, [state.etcd_host_port])  # first
        start_forwarder(self.layout, state.etcd_host_port)
        ssh_key = self.layout.state_dir / "ssh_key"
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"fleetlab-{self.name}",
                "-f",
                ssh_key,
            ]
        )
        keys = {r.name: self.layout.state_dir / "host_keys" / r.name for r in records}
        for record in records:
            hostkeys.make_host_keys(keys[record.name], f"fleetlab-{self.name}-{record.name}")
        known = hostkeys.known_hosts(
            [(r.ip, r.name, hostkeys.public_keys(keys[r.name])) for r in records]
        )
        for record in records:
            layout = self.layout.machine(record.name)
            network.create_machine_network(self.layout, layout)
            machine.seed_identity(layout, record.machine_id, hosts_file(records), ssh_key)
            hostkeys.install(keys[record.name], layout.upper / "etc", known)
            machine.boot(layout, rootfs, source)
        return state

    def down(self) -> None:
        """Remove everything of this lab, whether it is healthy, half-created or crashed."""
        cgroups.kill_all(self.layout.cgroup)
        cgroups.remove_tree(self.layout.cgroup)
        cgroups.remove_if_empty(self.layout.cgroup_root)
        cgroups.wait_until_reaped(self.layout.cgroup, timeout=10)
        network.delete_lab_namespaces(self.layout)
        firewall.remove_table(self.layout.firewall_table)
        shutil.rmtree(self.layout.state_dir, ignore_errors=True)

    @property
    def host_etcd_endpoint(self) -> str:
        """The lab's etcd as the host reaches it (loopback, forwarded into the lab)."""
        return f"http://127.0.0.1:{self.require_state().etcd_host_port}"

    def stop_etcd(self) -> None:
        """Kill the lab's etcd (its data stays); every machine loses etcd at once."""
        self.require_state()
        cgroups.kill_all(self.layout.etcd_cgroup)

    def start_etcd(self) -> None:
        state = self.require_state()
        if cgroups.is_populated(self.layout.etcd_cgroup):
            raise LabError(f"the etcd of lab {self.name!r} is already running")
        start_lab_etcd(self.layout)
        wait_lab_etcd(self.layout, state.etcd_host_port)

    def has_leftovers(self) -> bool:
        return (
            self.layout.state_dir.exists()
            or self.layout.cgroup.exists()
            or any(self.layout.owns_netns(ns) for ns in network.list_netns())
        )

    # -- machines ----------------------------------------------------------------------------

    def state(self) -> LabState | None:
        return load_state(self.layout.state_file)

    def require_state(self) -> LabState:
        state = self.state()
        if state is None:
            raise LabError(
                f"lab {self.name!r} is not up; create it with `fleetlab up --machines 3`"
            )
        return state

    def machine_layout(self, name: str) -> MachineLayout:
        state = self.require_state()
        if state.machine(name) is None:
            known = ", ".join(m.name for m in state.machines)
            raise LabError(f"no machine {name!r} in lab {self.name!r} (machines: {known})")
        return self.layout.machine(name)

    def running_pid(self, name: str) -> int:
        pid = machine.init_pid(self.machine_layout(name))
        if pid is None:
            raise LabError(f"machine {name!r} is down; boot it with `fleetlab start {name}`")
        return pid

    def status(self) -> list[MachineStatus]:
        statuses = []
        for record in self.require_state().machines:
            layout = self.layout.machine(record.name)
            pid = machine.init_pid(layout)
            state = machine.system_state(pid) if pid else "down"
            connected = network.is_connected(self.layout, layout)
            statuses.append(
                MachineStatus(record.name, record.machine_id, record.ip, state, connected)
            )
        return statuses

    def start(self, name: str, timeout: float = 60.0) -> str:
        layout = self.machine_layout(name)
        if machine.init_pid(layout) is not None:
            raise LabError(f"machine {name!r} is already running")
        cgroups.kill_all(layout.cgroup)  # an unshare parent could outlive a crash
        network.set_powered(layout, powered=True)
        state = self.require_state()
        machine.boot(layout, Path(state.rootfs), Path(state.source))
        return machine.wait_until_booted([layout], timeout)[name]

    def stop(self, name: str) -> None:
        self.running_pid(name)
        layout = self.machine_layout(name)
        machine.poweroff(layout)
        network.set_powered(layout, powered=False)

    def kill(self, name: str) -> None:
        self.running_pid(name)
        layout = self.machine_layout(name)
        machine.kill(layout)
        # A machine without power does not answer on the network either; its namespace (and so
        # its address) outlives the processes, so take its interface down until `start`.
        network.set_powered(layout, powered=False)

    def partition(self, name: str) -> None:
        network.set_connected(self.layout, self.machine_layout(name), connected=False)

    def heal(self, name: str, timeout: float = 10.0) -> None:
        """Reconnect the machine; when it runs, return once it reaches the lab gateway again."""
        layout = self.machine_layout(name)
        network.set_connected(self.layout, layout, connected=True)
        pid = machine.init_pid(layout)
        if pid is not None:
            # Neighbour entries that failed during the partition take a moment to resolve again.
            machine.wait_until_reachable(pid, self.layout.gateway_ip, timeout)

    def split(self, names: Sequence[str], from_etcd: bool = True) -> None:
        """Cut the machines `names` off from the other machines (and from etcd): they still
        reach each other, as one side of a split network."""
        self._set_split(names, from_etcd, blocked=True)

    def unsplit(self, names: Sequence[str], from_etcd: bool = True) -> None:
        self._set_split(names, from_etcd, blocked=False)

    def _set_split(self, names: Sequence[str], from_etcd: bool, blocked: bool) -> None:
        records = self.require_state().machines
        inside = [r for r in records if r.name in names]
        outside = [r for r in records if r.name not in names]
        for record in inside:
            layout = self.machine_layout(record.name)
            if from_etcd:
                network.set_route_blocked(layout, self.layout.gateway_ip, blocked)
            for other in outside:
                network.set_route_blocked(layout, other.ip, blocked)
                network.set_route_blocked(self.machine_layout(other.name), record.ip, blocked)

    # -- running things inside ---------------------------------------------------------------

    def exec(self, name: str, argv: Sequence[str]) -> int:
        """Run argv in the machine with this terminal; the command's exit status."""
        return machine.exec_interactive(self.running_pid(name), argv)

    def run(
        self,
        name: str,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the machine and capture its output (for tests and scripts)."""
        pid = self.running_pid(name)
        return run(
            machine.enter_argv(pid, argv),
            env={"HOME": "/root"},
            check=check,
            timeout=timeout,
            input=input,
        )

    def running_machines(self) -> list[str]:
        """Machines whose PID 1 is alive (cheap: no command runs inside them)."""
        return [
            record.name
            for record in self.require_state().machines
            if machine.init_pid(self.layout.machine(record.name)) is not None
        ]

    def journal_argv(self, name: str, options: Sequence[str]) -> list[str]:
        """journalctl for the machine: inside it when it runs, else read from its disk."""
        layout = self.machine_layout(name)
        pid = machine.init_pid(layout)
        if pid is not None:
            return machine.enter_argv(pid, ["journalctl", "--no-pager", *options])
        directory = layout.upper / "var/log/journal"
        return ["journalctl", "--no-pager", f"--directory={directory}", *options]

    def journal_text(self, name: str, options: Sequence[str] = ()) -> str:
        return run(self.journal_argv(name, options), check=False).stdout


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "fleetlab must run as root (it creates namespaces, mounts and cgroups);"
            " run it with sudo"
        )
