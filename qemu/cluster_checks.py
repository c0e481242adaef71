"""A VM cluster seen from the host as a user sees it: flotilla-cluster, fleetctl, flotilla-unit,
HTTP on the forwarded ports, and systemd on every VM. Shared by the VM cluster tests, the
benchmark and the demo."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flotilla.process import CommandError, run
from flotilla.resources import data_path

from .cluster import Cluster, ClusterError
from .cluster_up import fleetctl_argv

BIN = Path(sys.executable).parent
DEMO_SPEC = data_path("units", "examples", "hello-web.yaml")
DEMO_UNIT = "hello-web.service"
DEMO_PORT = 8080


def cluster_cli(name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flotilla-cluster"), "--name", name, *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def fleetctl(cluster: Cluster, *args: str, timeout: float = 60) -> str:
    """fleetctl on the host, through the etcd of the first node that runs."""
    for node in cluster.running_nodes():
        try:
            return run([*fleetctl_argv(cluster, node), *args], timeout=timeout).stdout
        except CommandError as error:
            if "error talking to etcd" not in error.stderr:
                raise  # a real answer (a refused unit, a bad argument), not a dead endpoint
    raise ClusterError("no running node's etcd answers fleetctl")


def render_demo_unit(directory: Path) -> Path:
    run([BIN / "flotilla-unit", "render", DEMO_SPEC, "-o", directory])
    return directory / DEMO_UNIT


def fetch_page(cluster: Cluster, node: str, timeout: float = 2) -> str | None:
    """The demo page as the host sees it on `node`'s forwarded port, or None."""
    if cluster.pid(node) is None:
        return None
    url = f"http://127.0.0.1:{cluster.host_port(node, DEMO_PORT)}/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def wait_for_page(cluster: Cluster, nodes: list[str], deadline: float) -> tuple[str, str]:
    """(node, page) from the first of `nodes` that serves the page."""
    while time.monotonic() < deadline:
        for node in nodes:
            page = fetch_page(cluster, node, timeout=1)
            if page:
                return node, page
        time.sleep(0.2)
    raise AssertionError(f"no node of {nodes} served the page in time")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class UnitSampler:
    """Asks systemd on every running VM, about once a second, where a unit is active; remembers
    every moment it was active on more than one machine."""

    def __init__(self, cluster: Cluster, unit: str) -> None:
        self.cluster = cluster
        self.unit = unit
        self.rounds: list[tuple[float, frozenset[str]]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name=f"sample-{unit}", daemon=True)

    def __enter__(self) -> UnitSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def active_on(self, node: str) -> bool:
        try:
            state = self.cluster.ssh(node, f"systemctl is-active {self.unit}", 10, check=False)
        except (ClusterError, subprocess.TimeoutExpired):
            return False  # a node that cannot answer is down or still booting
        return state.strip() == "active"

    def sample(self) -> frozenset[str]:
        nodes = self.cluster.running_nodes()
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            answers = list(pool.map(self.active_on, nodes))
        return frozenset(node for node, active in zip(nodes, answers, strict=True) if active)

    def loop(self) -> None:
        while not self.stopping.is_set():
            self.rounds.append((time.monotonic(), self.sample()))
            self.stopping.wait(1)

    @property
    def doubles(self) -> list[tuple[float, frozenset[str]]]:
        return [(when, nodes) for when, nodes in self.rounds if len(nodes) > 1]
