"""A real etcd server: on loopback for tests (`EtcdServer`), or inside a lab's network namespace."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flotilla.process import command_env, spawn_detached

from . import cgroups
from .layout import ETCD_CLIENT_PORT, LabLayout
from .network import netns_path

ETCD_PEER_PORT = 2380


def etcd_argv(name: str, data_dir: Path, client_urls: list[str], peer_url: str) -> list[str]:
    """A one-member etcd cluster; the first client URL is the one it advertises."""
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
        f"{name}={peer_url}",
        "--initial-cluster-state",
        "new",
        "--log-level",
        "warn",
        "--logger",
        "zap",
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/health", timeout=1) as response:
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
    port, peer_port = free_port(), free_port()
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
