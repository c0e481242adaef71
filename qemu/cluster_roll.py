"""A rolling update of a running VM cluster, watched from the host. Shared by the VM cluster test
and bench/rolling_update.py.

Every node is pointed at the host's update server with REBOOT_STRATEGY=etcd-lock, and every
node's update service is started at once, as their timers might. The reboot lock lets one node
at a time drain, reboot into the new slot, come back healthy, undrain and release. Meanwhile a
watcher samples once a second: where each unit is active (systemd on every running VM, by SSH),
the lock's holders, and a quorum write (etcd through the nodes' forwarded ports). The verdicts
(two copies at once, the longest time a unit ran nowhere, the most holders, the longest time
etcd refused a write) are pure functions of the samples.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from flotilla.process import CommandError, run
from flotilla.update.holding import RECORD as HOLD_RECORD
from flotilla.update.lock_decide import LockKeys

from .cluster import Cluster, ClusterError
from .cluster_checks import fleetctl

LOCK_HOLDERS = LockKeys().holders.decode()
QUORUM_KEY = "/flotilla-roll/quorum"
SLEEPER = (
    "[Unit]\nDescription=rolling update test unit\n\n[Service]\nExecStart=/bin/sleep infinity\n"
)
SAMPLE_SECONDS = 1.0
# Three VMs under TCG writing their slots keep two host cores busy: an SSH login or an etcd
# request then takes seconds. A probe that does not answer in time counts as "no answer", and
# the verdicts lean only on answers (a node is down between its last old boot id and its
# first new one, not whenever its SSH is slow).
PROBE_TIMEOUT = 20.0
SETTLED = (
    f"test -e {HOLD_RECORD} && echo held || echo free; "
    "systemctl is-active flotilla-update.service flotilla-update-after-reboot.service"
)
ETCD_TIMEOUT = "10s"


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    active: dict[str, frozenset[str]]  # unit -> the nodes where systemd says it is active
    holders: int | None  # reboot lock holders; None: etcd did not answer
    quorum: bool  # a write went through


@dataclass
class Boot:
    """One boot of a node as the samples saw it."""

    boot_id: str
    first: float  # monotonic: the first sample that saw it
    last: float  # and the last


Boots = dict[str, list[Boot]]  # node -> its boots, in order


@dataclass
class RollReport:
    seconds: float  # from the start of the update services until every node ran the new version
    samples: list[Sample] = field(default_factory=list)
    boots: Boots = field(default_factory=dict)
    started: float = 0.0  # monotonic: when the update services were started

    @property
    def reboots(self) -> dict[str, float]:
        """node -> seconds after the start when its new boot was first seen."""
        return {
            node: boots[1].first - self.started
            for node, boots in self.boots.items()
            if len(boots) > 1
        }

    @property
    def doubles(self) -> list[tuple[float, str, frozenset[str]]]:
        return doubles(self.samples)

    @property
    def longest_gap(self) -> dict[str, float]:
        return longest_gaps(self.samples)

    @property
    def most_holders(self) -> int:
        return max((s.holders for s in self.samples if s.holders is not None), default=0)

    @property
    def longest_quorum_loss(self) -> float:
        return longest_run(self.samples, lambda sample: not sample.quorum)

    @property
    def most_down(self) -> int:
        """The most nodes down (between two boots) at one moment."""
        windows = down_windows(self.boots).values()
        return most_overlapping([window for node in windows for window in node])

    def lines(self) -> list[str]:
        gaps = self.longest_gap
        worst = max(gaps.items(), key=lambda item: item[1], default=("-", 0.0))
        return [
            f"rolling update of {len(self.reboots)} nodes   {self.seconds:.0f}s",
            "reboots at                      "
            + ", ".join(f"{node} {at:.0f}s" for node, at in sorted(self.reboots.items())),
            f"longest unit gap                {worst[1]:.1f}s ({worst[0]})",
            f"units active twice at once      {len(self.doubles)} samples",
            f"most reboot lock holders        {self.most_holders}",
            f"most nodes down at once         {self.most_down}",
            f"longest etcd write refusal      {self.longest_quorum_loss:.1f}s",
            f"samples                         {len(self.samples)}",
        ]


def doubles(samples: Iterable[Sample]) -> list[tuple[float, str, frozenset[str]]]:
    return [
        (sample.at, unit, nodes)
        for sample in samples
        for unit, nodes in sample.active.items()
        if len(nodes) > 1
    ]


def longest_gaps(samples: Sequence[Sample]) -> dict[str, float]:
    """Per unit, the longest time between a sample that saw it active somewhere and the next
    one that did (a gap still open at the end counts up to the last sample)."""
    units = {unit for sample in samples for unit in sample.active}
    return {
        unit: longest_run(samples, lambda sample, unit=unit: not sample.active.get(unit))
        for unit in sorted(units)
    }


def down_windows(boots: Boots) -> dict[str, list[tuple[float, float]]]:
    """Per node, from the last sample that saw one boot to the first that saw the next: the
    time it may have been down (rebooting), sampling included."""
    return {
        node: [(old.last, new.first) for old, new in pairwise(seen)]
        for node, seen in boots.items()
        if len(seen) > 1
    }


def most_overlapping(windows: Sequence[tuple[float, float]]) -> int:
    """The most windows open at one moment."""
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def longest_run(samples: Sequence[Sample], bad: object) -> float:
    """The longest stretch from the last good sample before a run of `bad` ones to the first
    good one after it: the time the condition may have lasted, sampling included."""
    longest, good_at = 0.0, None
    for sample in samples:
        if bad(sample):  # type: ignore[operator]
            continue
        if good_at is not None:
            longest = max(longest, sample.at - good_at - SAMPLE_SECONDS)
        good_at = sample.at
    if samples and good_at is not None and bad(samples[-1]):  # type: ignore[operator]
        longest = max(longest, samples[-1].at - good_at)
    return max(longest, 0.0)


class RollWatcher:
    """Samples the cluster once a second in a thread, until stopped."""

    def __init__(self, cluster: Cluster, units: Sequence[str]) -> None:
        self.cluster = cluster
        self.units = list(units)
        self.samples: list[Sample] = []
        self.boots: Boots = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="roll-watcher", daemon=True)

    def __enter__(self) -> RollWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def loop(self) -> None:
        nodes = [node.name for node in self.cluster.inventory.nodes]
        with ThreadPoolExecutor(max_workers=len(nodes) + 2) as pool:
            while not self.stopping.is_set():
                began = time.monotonic()
                systemd = {node: pool.submit(self.node_view, node) for node in nodes}
                holders = pool.submit(self.lock_holders)
                quorum = pool.submit(self.quorum_write, len(self.samples))
                views = {node: future.result() for node, future in systemd.items()}
                self.samples.append(
                    sample_of(began, self.units, views, holders.result(), quorum.result())
                )
                self.stopping.wait(max(0.0, SAMPLE_SECONDS - (time.monotonic() - began)))

    def node_view(self, node: str) -> tuple[str, list[str]] | None:
        """(boot id, `systemctl is-active` of every unit), or None when the node is down."""
        units = " ".join(self.units)
        command = f"cat /proc/sys/kernel/random/boot_id; systemctl is-active {units}"
        try:
            lines = self.cluster.ssh(node, command, PROBE_TIMEOUT, check=False).split()
        except (ClusterError, CommandError, subprocess.TimeoutExpired):
            return None
        if len(lines) != len(self.units) + 1:
            return None  # cut short: the node went down under us
        boot_id, states = lines[0], lines[1:]
        self.saw(node, boot_id, time.monotonic())
        return boot_id, states

    def saw(self, node: str, boot_id: str, at: float) -> None:
        seen = self.boots.setdefault(node, [])
        if seen and seen[-1].boot_id == boot_id:
            seen[-1].last = at
        else:
            seen.append(Boot(boot_id, at, at))

    def etcdctl(self, *args: str) -> str:
        endpoints = ",".join(
            self.cluster.etcd_endpoint(node) for node in self.cluster.running_nodes()
        )
        argv = ["etcdctl", f"--endpoints={endpoints}", f"--command-timeout={ETCD_TIMEOUT}", *args]
        return run(argv, timeout=PROBE_TIMEOUT).stdout

    def lock_holders(self) -> int | None:
        try:
            return len(self.etcdctl("get", "--prefix", "--keys-only", LOCK_HOLDERS).split())
        except (ClusterError, CommandError, subprocess.TimeoutExpired):
            return None

    def quorum_write(self, count: int) -> bool:
        try:
            self.etcdctl("put", QUORUM_KEY, str(count))
        except (ClusterError, CommandError, subprocess.TimeoutExpired):
            return False
        return True


def sample_of(
    at: float,
    units: Sequence[str],
    views: dict[str, tuple[str, list[str]] | None],
    holders: int | None,
    quorum: bool,
) -> Sample:
    answered = {node: view for node, view in views.items() if view is not None}
    active = {
        unit: frozenset(node for node, (_, states) in answered.items() if states[i] == "active")
        for i, unit in enumerate(units)
    }
    return Sample(at, active, holders, quorum)


def start_sleepers(cluster: Cluster, directory: Path, count: int) -> list[str]:
    """`count` plain units through fleet (the engine spreads them), active before returning."""
    names = [f"roll-{index}.service" for index in range(count)]
    for name in names:
        (directory / name).write_text(SLEEPER)
    fleetctl(cluster, "start", *(str(directory / name) for name in names), timeout=180)
    return names


def point_at_update_server(cluster: Cluster, port: int) -> None:
    """Every node: the host's update server (10.0.2.100:port), the coordinated reboot."""
    config = f"SERVER=http://10.0.2.100:{port}/\\nREBOOT_STRATEGY=etcd-lock\\n"
    for node in cluster.running_nodes():
        cluster.ssh(node, f"printf '{config}' | sudo tee /etc/flotilla/update.conf >/dev/null")


def start_updates(cluster: Cluster) -> None:
    for node in cluster.running_nodes():
        cluster.ssh(node, "sudo systemctl start --no-block flotilla-update.service")


def node_status(cluster: Cluster, node: str) -> dict | None:
    try:
        out = cluster.ssh(node, "sudo flotilla-update status --output json", PROBE_TIMEOUT * 2)
        return json.loads(out)
    except (ClusterError, CommandError, subprocess.TimeoutExpired, ValueError):
        return None


def settled(cluster: Cluster, node: str) -> bool:
    """No update step runs on `node` and it holds no reboot lock: a shell check, because a
    Python process on a TCG guest costs seconds of CPU the roll itself needs."""
    try:
        out = cluster.ssh(node, SETTLED, PROBE_TIMEOUT, check=False).split()
    except (ClusterError, CommandError, subprocess.TimeoutExpired):
        return False
    return out[:1] == ["free"] and len(out) == 3 and "activating" not in out and "active" not in out


def rolled(cluster: Cluster, version: str, boots: Boots) -> bool:
    """Every node rebooted, runs `version`, marked good, and holds no lock any more."""
    nodes = [n.name for n in cluster.inventory.nodes]
    if any(len(boots.get(node, ())) < 2 for node in nodes):
        return False
    if not all(settled(cluster, node) for node in nodes):
        return False
    for node in nodes:
        status = node_status(cluster, node)
        if status is None or status.get("version") != version:
            return False
        if "+" in str(status.get("boot_entry")):  # still on trial (a counted entry)
            return False
    return True


def roll(
    cluster: Cluster, port: int, version: str, units: Sequence[str], timeout: float
) -> RollReport:
    """Update every node to `version` (served on the host's `port`), one reboot at a time."""
    point_at_update_server(cluster, port)
    with RollWatcher(cluster, units) as watcher:
        time.sleep(3 * SAMPLE_SECONDS)  # a baseline before anything moves
        started = time.monotonic()
        start_updates(cluster)
        deadline = started + timeout
        while not rolled(cluster, version, watcher.boots):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the rolling update to {version} took over {timeout:.0f}s")
            time.sleep(5)
        seconds = time.monotonic() - started
        time.sleep(3 * SAMPLE_SECONDS)  # and after
    return RollReport(seconds, watcher.samples, watcher.boots, started)
