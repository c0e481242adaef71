"""A real etcd server: on loopback for tests (`EtcdServer`), or inside a lab's network namespace."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from flotilla.process import command_env, run, spawn_detached

from . import cgroups
from .layout import ETCD_CLIENT_PORT, LabLayout
from .network import netns_path

ETCD_PEER_PORT = 2380
ETCDCTL_ENV = {"ETCDCTL_API": "3"}


def etcd_argv(
    name: str,
    data_dir: Path,
    client_urls: list[str],
    peer_url: str,
    initial_cluster: str = "",
    joining: bool = False,
) -> list[str]:
    """An etcd member; the first client URL is the one it advertises. Alone in its cluster
    unless `initial_cluster` (name=peer URL,...) names the others too; `joining` an existing
    cluster that expects it (`etcdctl member add`)."""
    return [
        "etcd",
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        ",".join(client_urls),
        "--advertise-client-urls",
        client_urls[0],
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        initial_cluster or f"{name}={peer_url}",
        "--initial-cluster-state",
        "existing" if joining else "new",
        "--log-level",
        "warn",
        "--logger",
        "zap",
    ]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while chosen, so none repeats)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def is_healthy(endpoint: str, ca: Path | None = None) -> bool:
    """Whether etcd says it is healthy (an https:// endpoint checked against `ca`)."""
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(f"{endpoint}/health", timeout=1, context=context) as response:
            return b'"health":"true"' in response.read()
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class EtcdServer:
    endpoint: str
    host: str
    port: int
    data_dir: Path


@contextmanager
def loopback_etcd(data_dir: Path, timeout: float = 20.0) -> Iterator[EtcdServer]:
    """Run etcd on free loopback ports with a fresh data directory; stop it afterwards."""
    shutil.rmtree(data_dir, ignore_errors=True)
    port, peer_port = free_ports(2)
    endpoint = f"http://127.0.0.1:{port}"
    argv = etcd_argv("test", data_dir, [endpoint], f"http://127.0.0.1:{peer_port}")
    log_path = data_dir.with_suffix(".log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=command_env(), stdout=log, stderr=log)
    try:
        wait_healthy(lambda: is_healthy(endpoint), timeout, process, log_path)
        yield EtcdServer(endpoint, "127.0.0.1", port, data_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class LoopbackMember:
    """One member of a loopback etcd cluster, which a test can kill, freeze and start again."""

    name: str
    endpoint: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    ca: Path | None = None  # what an https:// member's certificate chains to

    @property
    def answers(self) -> bool:
        return self.process is not None and not self.frozen

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=command_env(), stdout=log, stderr=log)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        check = partial(is_healthy, self.endpoint, self.ca)
        wait_healthy(check, timeout, self.process, self.log_path)

    def kill(self) -> None:
        """SIGKILL: the member's sockets close at once (its peers see connections reset)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: a hung member. Its sockets stay open and the kernel still accepts
        connections on them, but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        if self.process is None:
            return
        self.thaw()  # a frozen member cannot act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextmanager
def loopback_etcd_cluster(
    data_dir: Path, size: int = 3, timeout: float = 20.0, extra_args: Sequence[str] = ()
) -> Iterator[list[LoopbackMember]]:
    """`size` etcd members on free loopback ports, one cluster, fresh data; stopped afterwards.
    `extra_args` go to every member (TLS files, say)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    names = [f"member{index}" for index in range(size)]
    ports = free_ports(2 * size)
    peers = {name: f"http://127.0.0.1:{ports.pop()}" for name in names}
    initial = ",".join(f"{name}={url}" for name, url in peers.items())
    members = []
    for name in names:
        endpoint = f"http://127.0.0.1:{ports.pop()}"
        argv = etcd_argv(name, data_dir / name, [endpoint], peers[name], initial)
        members.append(
            LoopbackMember(name, endpoint, [*argv, *extra_args], data_dir / f"{name}.log")
        )
    try:
        for member in members:
            member.start()
        for member in members:
            member.wait_healthy(timeout)
        yield members
    finally:
        for member in members:
            member.stop()


def wait_healthy(check, timeout: float, process=None, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            tail = log_path.read_text()[-800:] if log_path else ""
            raise RuntimeError(f"etcd exited with status {process.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"etcd not healthy after {timeout:.0f}s")
        time.sleep(0.05)


def start_lab_etcd(lab: LabLayout) -> None:
    """Start the lab's etcd inside the lab namespace, on the bridge address and its loopback."""
    lab.etcd_dir.mkdir(parents=True, exist_ok=True)
    lab.etcd_cgroup.mkdir(parents=True, exist_ok=True)
    client_urls = [lab.etcd_endpoint, f"http://127.0.0.1:{ETCD_CLIENT_PORT}"]
    argv = etcd_argv(
        "lab", lab.etcd_dir / "data", client_urls, f"http://127.0.0.1:{ETCD_PEER_PORT}"
    )
    spawn_detached(
        ["nsenter", f"--net={netns_path(lab.netns)}", *argv],
        cgroup=lab.etcd_cgroup,
        log_file=lab.etcd_dir / "etcd.log",
    )


def add_lab_etcd_member(lab: LabLayout, host_port: int, index: int) -> str:
    """Grow the lab's etcd by a member `lab<index>` (1, 2, ...) inside the lab namespace, serving
    clients on the gateway address at port 2379 + 100 * index; returns that client URL. The host
    still reaches only the first member (through the forwarder)."""
    name = f"lab{index}"
    client_url = f"http://{lab.gateway_ip}:{ETCD_CLIENT_PORT + 100 * index}"
    peer_url = f"http://127.0.0.1:{ETCD_PEER_PORT + 100 * index}"
    etcdctl = ["etcdctl", "--endpoints", f"http://127.0.0.1:{host_port}"]
    add = [*etcdctl, "member", "add", name, f"--peer-urls={peer_url}"]
    # etcd refuses a new member until the last one has been connected for a few seconds.
    deadline = time.monotonic() + 30
    while "unhealthy cluster" in (added := run(add, env=ETCDCTL_ENV, check=False)).stderr:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    found = re.search(r'ETCD_INITIAL_CLUSTER="([^"]+)"', added.stdout)
    if found is None:
        raise RuntimeError(f"etcdctl member add failed: {added.stderr[-800:]}")
    argv = etcd_argv(name, lab.etcd_dir / name, [client_url], peer_url, found[1], joining=True)
    cgroup = lab.cgroup / f"etcd-{name}"  # beside the first member's: lab.stop_etcd spares it
    cgroup.mkdir(parents=True, exist_ok=True)
    log_file = lab.etcd_dir / f"{name}.log"
    spawn_detached(
        ["nsenter", f"--net={netns_path(lab.netns)}", *argv], cgroup=cgroup, log_file=log_file
    )

    def healthy() -> bool:  # the new member has started, and the cluster has its quorum again
        listed = run([*etcdctl, "member", "list"], env=ETCDCTL_ENV, check=False).stdout
        if f", started, {name}," not in listed:
            return False
        return run([*etcdctl, "endpoint", "health"], env=ETCDCTL_ENV, check=False).returncode == 0

    wait_healthy(healthy, 30)
    return client_url


def start_forwarder(lab: LabLayout, host_port: int) -> None:
    """Forward 127.0.0.1:host_port on the host to the lab's etcd (see fleetlab.forward)."""
    lab.forward_cgroup.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "fleetlab.forward",
        str(host_port),
        netns_path(lab.netns),
        lab.gateway_ip,
        str(ETCD_CLIENT_PORT),
    ]
    spawn_detached(argv, cgroup=lab.forward_cgroup, log_file=lab.state_dir / "forward.log")


def wait_lab_etcd(lab: LabLayout, host_port: int, timeout: float = 20.0) -> None:
    """Wait until the lab's etcd answers through the forwarder (which proves both work)."""

    def check() -> bool:
        if not cgroups.is_populated(lab.etcd_cgroup):
            log = (lab.etcd_dir / "etcd.log").read_text()[-800:]
            raise RuntimeError(f"the lab's etcd exited: {log}")
        return is_healthy(f"http://127.0.0.1:{host_port}")

    wait_healthy(check, timeout)
