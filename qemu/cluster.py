"""A cluster of QEMU VMs booted from the image: provisioned on first boot (Ignition, or
cloud-config on every boot), on a private network of their own, forming an etcd + fleet cluster.

Nodes outlive the command that started them (QEMU daemonizes), so everything the tool knows
lives in the cluster's directory, and `down` finds what to remove without it: every QEMU of
the cluster carries the directory in its command line, and the namespace name derives from
the cluster's name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flotilla import firewall
from flotilla.process import CommandError, run
from provision.inventory import CLUSTER_NAME, Node, plan_inventory
from provision.render import Rendered

from .cluster_network import (
    create_network,
    delete_network,
    netns_exists,
    netns_name,
    open_tap,
)
from .command import OVMF_VARS, Forward, PrivateNic, RunFiles, VmConfig
from .vm import (
    VmError,
    create_overlay,
    fill_config_drive,
    launch_detached,
    monitor_command,
    read_forwards,
    ssh_banner,
    ssh_command,
)

STATE_ROOT = Path("/var/lib/flotilla/clusters")
SSH_PORT = 22
ETCD_PORT = 2379
# A killed QEMU is gone once its last thread is: one in a disk flush on a loaded host can take long.
KILL_TIMEOUT = 60


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
    host_services: tuple[int, ...] = ()  # host loopback ports the nodes reach as 10.0.2.100
    # "direct": QEMU loads the build's kernel and initramfs (the fastest boot; /usr is always
    # USR-A's). "uefi": the firmware boots the disk's systemd-boot entries, as on hardware, so a
    # node can boot the other /usr slot after an update.
    boot: str = "direct"


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
        # Checked before anything else: the name becomes a directory that `down` removes.
        if not CLUSTER_NAME.match(name):
            raise ClusterError(
                f"cluster name {name!r}: use a lower-case letter then up to 9 letters or digits"
            )
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
        if not self.exists():  # also after a `down` elsewhere
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
                "host_services": tuple(spec.get("host_services", ())),
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
        if not self.exists() or self.state_file.stat().st_mtime_ns != self.loaded_at:
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
        handle, partial = tempfile.mkstemp(dir=self.directory, prefix=".cluster.", suffix=".json")
        with os.fdopen(handle, "w") as file:
            file.write(json.dumps(state, indent=2) + "\n")
        os.replace(partial, self.state_file)
        self.loaded_at = self.state_file.stat().st_mtime_ns

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One command at a time changes the state (two `start`s may run side by side)."""
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def update(self, name: str, **changes: object) -> None:
        """Change a node's record on disk: read afresh, change, write, under the lock."""
        with self.locked():
            self.load()
            for key, value in changes.items():
                setattr(self.records[name], key, value)
            self.save()

    # lifecycle

    def create(self, spec: ClusterSpec, count: int, configs: dict[str, Rendered]) -> None:
        """Lay out the cluster (directory, key, network, rendered configs); boot nothing yet.
        Configs were rendered and checked before this is called: a bad one never gets here."""
        self.check_absent()
        self.spec = spec
        self.inventory = plan_inventory(self.name, count)
        self.records = {n.name: NodeRecord(n.name, n.ip) for n in self.inventory.nodes}
        # Root-only: the QMP sockets in here drive QEMU, which runs as root.
        self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.mkdir(mode=0o700)
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
        if self.exists() or self.directory.exists() or netns_exists(self.netns):
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
        if self.spec.boot == "uefi":
            make_efi_vars(files.vars)
        tap = open_tap(self.netns, name)
        try:
            config = self.vm_config(node, record, tap)
            pid = launch_detached(config, files, pass_fds=(tap,))
        finally:
            os.close(tap)
        ports = read_forwards(
            config.name, files, lambda: self.pid(name) is not None, lambda: qemu_log(files)
        )
        self.update(name, pid=pid, ports=ports)
        self.keep_etcd_ports_for_root()

    def keep_etcd_ports_for_root(self) -> None:
        """Only root may reach the nodes' forwarded etcd ports: etcd has no authentication,
        and it runs any unit as root on every node (flotilla.firewall). QEMU opens a port
        before this runs, but the guest's etcd answers only tens of seconds later."""
        with self.locked():
            self.load()
            ports = [r.ports[ETCD_PORT] for r in self.records.values() if ETCD_PORT in r.ports]
            firewall.allow_only_root(self.firewall_table, ports)

    @property
    def firewall_table(self) -> str:
        return f"flotilla_cluster_{self.name}"  # cluster names are [a-z][a-z0-9]*

    def vm_config(self, node: Node, record: NodeRecord, tap: int) -> VmConfig:
        spec = self.spec
        files = self.node_files(node.name)
        # Ignition: handed in until a first boot got through; cloud-config: on every boot.
        ignition = spec.provision == "ignition" and not record.provisioned
        cloud_config = spec.provision == "cloud-config"
        if cloud_config:
            fill_config_drive(self.config_path(node.name), files)
        direct = spec.boot == "direct"
        return VmConfig(
            image=spec.image,
            name=f"{self.name}-{node.name}",
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            kernel=spec.kernel if direct else None,
            initrd=spec.initrd if direct else None,
            append=spec.cmdline if direct else None,
            forwards=tuple(Forward(0, port) for port in (ETCD_PORT, *spec.publish)),
            host_services=spec.host_services,
            ignition=self.config_path(node.name) if ignition else None,
            user_data=self.config_path(node.name) if cloud_config else None,
            authorized_keys=self.key.with_suffix(".pub"),
            private_nic=PrivateNic(fd=tap, mac=node.mac),
        )

    def kill(self, name: str) -> None:
        """SIGKILL the node's QEMU: a crash, with no shutdown of anything inside."""
        pid = self.require_running(name)
        os.kill(pid, signal.SIGKILL)
        if not wait_gone(pid, KILL_TIMEOUT):
            raise ClusterError(f"{name}: QEMU (pid {pid}) still runs {KILL_TIMEOUT}s after SIGKILL")

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
        if not wait_gone(pid, KILL_TIMEOUT):
            raise ClusterError(f"{name}: QEMU (pid {pid}) still runs {KILL_TIMEOUT}s after SIGKILL")
        return False

    def down(self) -> None:
        """Remove every process, tap, namespace, socket and file of the cluster, with or
        without its state file (a crashed tool may have left only part of it)."""
        # Again until none is left: a QEMU still daemonizing forks after a first look. The
        # shared SSH connections go too (their command lines name the node's directory).
        for _ in range(50):
            pids = pids_under(self.directory, QEMU, SSH)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in pids:
                wait_gone(pid, KILL_TIMEOUT)
        delete_network(self.netns)
        firewall.remove_table(self.firewall_table)
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
        return pid if runs_under(pid, files.directory) else None

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
        *argv, destination = ssh_command(port, self.key)
        return [*argv, *self.shared_connection(name), destination]

    def shared_connection(self, name: str) -> list[str]:
        """Commands to a node share one SSH connection: a login costs a TCG guest seconds of
        CPU (key exchange, PAM, a new sshd), and the tests and the rolling-update watcher
        run one or more a second. The connection dies with the node's boot (or after 30 s
        of a guest that stopped answering: SSH_OPTIONS); the next command opens a new one."""
        control = self.node_files(name).directory / "ssh.ctl"
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                "-o", "ControlPersist=60"]  # fmt: skip

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
        return f"http://127.0.0.1:{self.host_port(name, ETCD_PORT)}"

    def host_port(self, name: str, guest_port: int) -> int:
        port = self.record(name).ports.get(guest_port)
        if port is None:
            raise ClusterError(f"{name} forwards no port to guest port {guest_port} (is it up?)")
        return port

    def running_nodes(self) -> list[str]:
        return [n.name for n in self.inventory.nodes if self.pid(n.name) is not None]

    def mark_provisioned(self, name: str) -> None:
        """The node's first boot got through (SSH answers only after Ignition ran): later boots
        are not handed the config again."""
        if not self.record(name).provisioned:
            self.update(name, provisioned=True)

    def wait_for_ssh(self, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                raise ClusterError(f"{name}: QEMU exited\n{qemu_log(self.node_files(name))}")
            if ssh_banner(self.record(name).ports[SSH_PORT]) and self.answers(name):
                return
            time.sleep(1)
        raise ClusterError(f"{name}: no SSH by the deadline; see {self.node_files(name).console}")


QEMU = b"qemu-system-x86_64"
SSH = b"ssh"  # the nodes' shared connections (ControlMaster processes)


def make_overlay(image: Path, overlay: Path) -> None:
    if overlay.exists():
        return  # a node keeps its disk across kill, stop and start
    partial = overlay.with_suffix(".partial")
    create_overlay(image, partial)
    partial.replace(overlay)


def make_efi_vars(target: Path) -> None:
    """The node's own UEFI variable store, kept across restarts like its disk (as NVRAM is)."""
    if target.exists():
        return
    partial = target.with_suffix(".partial")
    shutil.copyfile(OVMF_VARS, partial)
    partial.replace(target)


def qemu_log(files: RunFiles) -> str:
    path = files.directory / "qemu.log"
    return path.read_text(errors="replace") if path.exists() else ""


def qemu_pids_under(directory: Path) -> list[int]:
    """Live QEMU processes whose command line names a path inside `directory`."""
    return pids_under(directory, QEMU)


def pids_under(directory: Path, *programs: bytes) -> list[int]:
    """Live processes of `programs` whose command line names a path inside `directory`."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if any(runs_under(pid, directory, p) for p in programs)]


def runs_under(pid: int, directory: Path, program: bytes = QEMU) -> bool:
    """Whether `pid` is a live `program` (QEMU) whose command line names a path inside
    `directory` (a pid file alone could name a process that reused the number)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    marker = str(directory).encode() + b"/"
    try:
        # The executable, not argv[0]: an SSH connection master retitles itself
        # ("ssh: <control path> [mux]").
        is_program = os.readlink(f"/proc/{pid}/exe").split("/")[-1] == program.decode()
    except OSError:
        return False
    return is_program and any(marker in arg for arg in argv) and is_alive(pid)


def is_alive(pid: int) -> bool:
    """Some thread of the process still runs. The leader alone is not enough: after a SIGKILL it
    is a zombie at once, while a thread stuck in the kernel (QEMU's, in an fdatasync of the disk)
    keeps the process's files, and so its forwarded ports, open until it returns."""
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    return any(thread_state(thread) not in ("Z", "X", None) for thread in threads)


def thread_state(task: Path) -> str | None:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return False
