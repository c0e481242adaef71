"""A cluster of QEMU VMs booted from the image: provisioned on first boot (Ignition, or
cloud-config on every boot), on a private network of their own, forming an etcd + fleet cluster.

Nodes outlive the command that started them (QEMU daemonizes), so everything the tool knows
lives in the cluster's directory, and `down` finds what to remove without it: every QEMU of
the cluster carries the directory in its command line, and the namespace name derives from
the cluster's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flotilla.process import CommandError, run
from provision.inventory import Node, plan_inventory
from provision.render import Rendered

from .cluster_network import create_network, delete_network, netns_name, open_tap
from .command import Forward, PrivateNic, RunFiles, VmConfig
from .vm import VmError, launch_detached, monitor_command, read_forwards, ssh_banner, ssh_command

STATE_ROOT = Path("/var/lib/flotilla/clusters")
SSH_PORT = 22
ETCD_PORT = 2379


class ClusterError(RuntimeError):
    """The cluster cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class ClusterSpec:
    """How a cluster's nodes boot (fixed at `up`)."""

    image: Path
    kernel: Path
    initrd: Path
    cmdline: str
    provision: str = "ignition"  # or "cloud-config"
    memory_mib: int = 1024
    cpus: int = 1
    publish: tuple[int, ...] = (8080,)  # guest ports forwarded to the host's loopback


@dataclass
class NodeRecord:
    """What the tool remembers of a node between commands."""

    name: str
    ip: str
    ports: dict[int, int] = field(default_factory=dict)  # guest port -> host port (this boot)
    provisioned: bool = False  # its first boot reached SSH: Ignition is not handed in again
    pid: int = 0


class Cluster:
    def __init__(self, name: str, root: Path = STATE_ROOT) -> None:
        self.name = name
        self.directory = root / name
        self.netns = netns_name(name)
        self.loaded_at: int | None = None  # mtime of the state file as last read or written

    # files

    @property
    def state_file(self) -> Path:
        return self.directory / "cluster.json"

    @property
    def key(self) -> Path:
        return self.directory / "id_ed25519"

    def node_files(self, node: str) -> RunFiles:
        return RunFiles(self.directory / node)

    def config_path(self, node: str) -> Path:
        suffix = "ign" if self.spec.provision == "ignition" else "cloud-config"
        return self.directory / node / f"config.{suffix}"

    def exists(self) -> bool:
        return self.state_file.exists()

    # state

    def load(self) -> None:
        if not self.exists():
            raise ClusterError(f"no cluster {self.name!r} (start one with `flotilla-cluster up`)")
        state = json.loads(self.state_file.read_text())
        spec = state["spec"]
        self.spec = ClusterSpec(
            **{
                **spec,
                "image": Path(spec["image"]),
                "kernel": Path(spec["kernel"]),
                "initrd": Path(spec["initrd"]),
                "publish": tuple(spec["publish"]),
            }
        )
        self.inventory = plan_inventory(self.name, state["count"])
        self.records = {
            name: NodeRecord(**{**raw, "ports": {int(k): v for k, v in raw["ports"].items()}})
            for name, raw in state["nodes"].items()
        }
        self.loaded_at = self.state_file.stat().st_mtime_ns

    def record(self, name: str) -> NodeRecord:
        """A node's record, re-read when another command (a `start` elsewhere) changed it."""
        if self.state_file.stat().st_mtime_ns != self.loaded_at:
            self.load()
        return self.records[name]

    def save(self) -> None:
        spec = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.spec).items()}
        state = {
            "name": self.name,
            "count": len(self.inventory.nodes),
            "spec": spec,
            "nodes": {name: asdict(record) for name, record in self.records.items()},
        }
        partial = self.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_file)
        self.loaded_at = self.state_file.stat().st_mtime_ns

    # lifecycle

    def create(self, spec: ClusterSpec, count: int, configs: dict[str, Rendered]) -> None:
        """Lay out the cluster (directory, key, network, rendered configs); boot nothing yet.
        Configs were rendered and checked before this is called: a bad one never gets here."""
        self.check_absent()
        self.spec = spec
        self.inventory = plan_inventory(self.name, count)
        self.records = {n.name: NodeRecord(n.name, n.ip) for n in self.inventory.nodes}
        self.directory.mkdir(parents=True)
        for node in self.inventory.nodes:
            self.node_files(node.name).directory.mkdir()
            self.config_path(node.name).write_text(configs[node.name].text)
        self.save()
        create_network(
            self.netns,
            self.inventory.gateway,
            self.inventory.nodes[0].prefix,
            [n.name for n in self.inventory.nodes],
        )

    def check_absent(self) -> None:
        if self.exists() or self.directory.exists():
            raise ClusterError(
                f"cluster {self.name!r} already exists ({self.directory}): reach it with "
                f"`flotilla-cluster --name {self.name} ls`, remove it with "
                f"`flotilla-cluster --name {self.name} down`"
            )

    def start(self, name: str) -> None:
        """Boot a node: the same disk (and so the same identity) every time."""
        node = self.inventory.node(name)
        record = self.record(name)
        if self.pid(name):
            raise ClusterError(f"{name} is already running (pid {record.pid})")
        files = self.node_files(name)
        make_overlay(self.spec.image, files.overlay)
        tap = open_tap(self.netns, name)
        try:
            config = self.vm_config(node, record, tap)
            record.pid = launch_detached(config, files, pass_fds=(tap,))
        finally:
            os.close(tap)
        record.ports = read_forwards(
            config.name, files, lambda: self.pid(name) is not None, lambda: qemu_log(files)
        )
        self.save()

    def vm_config(self, node: Node, record: NodeRecord, tap: int) -> VmConfig:
        spec = self.spec
        files = self.node_files(node.name)
        # Ignition: handed in until a first boot got through; cloud-config: on every boot.
        ignition = spec.provision == "ignition" and not record.provisioned
        cloud_config = spec.provision == "cloud-config"
        if cloud_config:
            user_data = files.config_drive / "openstack/latest/user_data"
            user_data.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.config_path(node.name), user_data)
        return VmConfig(
            image=spec.image,
            name=f"{self.name}-{node.name}",
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            kernel=spec.kernel,
            initrd=spec.initrd,
            append=spec.cmdline,
            forwards=tuple(Forward(0, port) for port in (ETCD_PORT, *spec.publish)),
            ignition=self.config_path(node.name) if ignition else None,
            user_data=self.config_path(node.name) if cloud_config else None,
            authorized_keys=self.key.with_suffix(".pub"),
            private_nic=PrivateNic(fd=tap, mac=node.mac),
        )

    def kill(self, name: str) -> None:
        """SIGKILL the node's QEMU: a crash, with no shutdown of anything inside."""
        pid = self.require_running(name)
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)

    def stop(self, name: str, timeout: float = 90) -> bool:
        """A clean shutdown through ACPI (the guest's systemd powers off); SIGKILL if the guest
        ignores it for `timeout` seconds. Returns whether the shutdown was clean."""
        pid = self.require_running(name)
        # a monitor that does not answer counts as a guest ignoring the request
        with contextlib.suppress(Exception):
            monitor_command(self.node_files(name), "system_powerdown")
        if wait_gone(pid, timeout):
            return True
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)
        return False

    def down(self) -> None:
        """Remove every process, tap, namespace, socket and file of the cluster, with or
        without its state file (a crashed tool may have left only part of it)."""
        pids = qemu_pids_under(self.directory)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_gone(pid, 10)
        delete_network(self.netns)
        shutil.rmtree(self.directory, ignore_errors=True)

    # state of nodes

    def pid(self, name: str) -> int | None:
        """The node's QEMU pid if it runs (checked against its command line, so a reused pid
        is never mistaken for it)."""
        files = self.node_files(name)
        try:
            pid = int(files.pid.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid in qemu_pids_under(files.directory) else None

    def require_running(self, name: str) -> int:
        self.inventory.node(name)
        pid = self.pid(name)
        if pid is None:
            raise ClusterError(f"{name} is not running (start it with `flotilla-cluster start`)")
        return pid

    def ssh_argv(self, name: str) -> list[str]:
        port = self.record(name).ports.get(SSH_PORT)
        if not port or self.pid(name) is None:
            raise ClusterError(f"{name} is not running")
        return ssh_command(port, self.key)

    def ssh(self, name: str, command: str, timeout: float = 60, check: bool = True) -> str:
        try:
            return run([*self.ssh_argv(name), command], timeout=timeout, check=check).stdout
        except CommandError as error:
            raise ClusterError(f"{name}: `{command}` failed: {error}") from error

    def answers(self, name: str) -> bool:
        """Whether core logs in with the cluster's key (sshd may greet before keys are in)."""
        try:
            self.ssh(name, "true", timeout=15)
        except (ClusterError, VmError, subprocess.TimeoutExpired):
            return False
        return True

    def etcd_endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.record(name).ports[ETCD_PORT]}"

    def host_port(self, name: str, guest_port: int) -> int:
        return self.record(name).ports[guest_port]

    def running_nodes(self) -> list[str]:
        return [n.name for n in self.inventory.nodes if self.pid(n.name) is not None]

    def wait_for_ssh(self, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                raise ClusterError(f"{name}: QEMU exited\n{qemu_log(self.node_files(name))}")
            record = self.record(name)
            if ssh_banner(record.ports[SSH_PORT]) and self.answers(name):
                if not record.provisioned:
                    record.provisioned = True
                    self.save()
                return
            time.sleep(1)
        raise ClusterError(f"{name}: no SSH by the deadline; see {self.node_files(name).console}")


def make_overlay(image: Path, overlay: Path) -> None:
    if overlay.exists():
        return  # a node keeps its disk across kill, stop and start
    partial = overlay.with_suffix(".partial")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.resolve(),
         "-o", "lazy_refcounts=on", partial])  # fmt: skip
    partial.replace(overlay)


def qemu_log(files: RunFiles) -> str:
    path = files.directory / "qemu.log"
    return path.read_text(errors="replace") if path.exists() else ""


def qemu_pids_under(directory: Path) -> list[int]:
    """QEMU processes whose command line names a path inside `directory`."""
    marker = str(directory).encode() + b"/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        is_qemu = argv[0].endswith(b"qemu-system-x86_64")
        if state != "Z" and is_qemu and any(marker in arg for arg in argv):
            pids.append(int(entry.name))
    return pids


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").exists():
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return True
        time.sleep(0.1)
    return False
