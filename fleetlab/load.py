"""Load on a lab, and what it did: a CPU hog in every machine, a slow disk under etcd.

* The hog is a busy workload: one busy loop per CPU in every machine, each a transient unit of
  that machine's systemd at default priority, so fleetd competes with it as it would with a
  user's work. (The lab's machines have no cpu controller, so weights do not apply: every
  runnable thread of every machine, and of the host, gets its fair share of the host's CPUs.)
* The slow disk throttles the write IOPS of the lab's etcd process on the block device that
  holds its data directory; every fdatasync of its WAL and every commit of its backend waits for
  it. This host has the io controller on cgroup v1 (blkio, mounted at /sys/fs/cgroup/blkio) and
  not on cgroup2, so the throttle is a blkio cgroup of its own that etcd's process joins; on a
  unified host io.max in `lab.layout.etcd_cgroup` would do the same (not written here: untested).
  Device-mapper (dm-delay) is not in this host's kernel. A data directory on a filesystem with no
  block device of its own (overlay, tmpfs) cannot be throttled this way: `LoadError` says so.
* `LoadMeter` reads what the load did between two moments: how busy the host's CPUs were and
  how much of them the hogs took, how long fleetd and etcd waited for a CPU (pressure stall
  information), and etcd's own WAL fsync and backend commit latencies (from its /metrics).
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import cgroups
from .lab import Lab

HOG_PREFIX = "stress-hog-"
BUSY_LOOP = "while :; do :; done"
BLKIO_ROOT = Path("/sys/fs/cgroup/blkio")
SYS_DEV_BLOCK = Path("/sys/dev/block")
WAL_FSYNC = "etcd_disk_wal_fsync_duration_seconds"
BACKEND_COMMIT = "etcd_disk_backend_commit_duration_seconds"


class LoadError(Exception):
    """A load this host cannot apply; the message says why."""


# -- CPU hogs ------------------------------------------------------------------------------


def machine_cpus(lab: Lab, machine: str) -> int:
    return int(lab.run(machine, ["nproc"]).stdout)


@contextmanager
def cpu_hogs(lab: Lab, machines: Sequence[str]) -> Iterator[dict[str, list[str]]]:
    """A busy loop per CPU in every machine, stopped on exit; yields machine -> hog units."""
    hogs: dict[str, list[str]] = {}
    try:
        for machine in machines:
            hogs[machine] = []
            for index in range(machine_cpus(lab, machine)):
                unit = f"{HOG_PREFIX}{index}.service"
                argv = ["systemd-run", f"--unit={unit}", "--quiet", "--", "sh", "-c", BUSY_LOOP]
                lab.run(machine, argv)
                hogs[machine].append(unit)
        yield hogs
    finally:
        running = set(lab.running_machines())
        for machine, units in hogs.items():
            if machine in running and units:
                lab.run(machine, ["systemctl", "stop", *units], check=False)


# -- etcd's slow disk ----------------------------------------------------------------------


def block_device(path: Path) -> str:
    """MAJOR:MINOR of the whole disk holding `path` (throttles apply to disks, not partitions)."""
    device = os.stat(path).st_dev
    major, minor = os.major(device), os.minor(device)
    sys_entry = SYS_DEV_BLOCK / f"{major}:{minor}"
    if major == 0 or not sys_entry.exists():
        raise LoadError(
            f"{path} is on a filesystem with no block device of its own (device {major}:{minor},"
            " overlay or tmpfs, say): an IO throttle would not slow it; put the lab's state"
            " directory on a real disk"
        )
    if (sys_entry / "partition").exists():
        return (sys_entry.resolve().parent / "dev").read_text().strip()
    return f"{major}:{minor}"


def blkio_of(pid: int) -> str:
    """The cgroup v1 blkio group of a process ("/" for the root)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "blkio" in controllers.split(","):
            return path
    return "/"


@dataclass(frozen=True)
class DiskThrottle:
    device: str
    write_iops: int
    group: Path

    def writes(self) -> int:
        """Write IOs etcd issued to the device since it joined the throttle."""
        for line in (self.group / "blkio.throttle.io_serviced").read_text().splitlines():
            fields = line.split()
            if fields[:2] == [self.device, "Write"]:
                return int(fields[2])
        return 0


@contextmanager
def slow_etcd_disk(lab: Lab, write_iops: int) -> Iterator[DiskThrottle]:
    """Throttle the lab's etcd to `write_iops` writes a second on its data directory's disk,
    until exit (etcd then goes back to the blkio group it came from)."""
    if not (BLKIO_ROOT / "blkio.throttle.write_iops_device").exists():
        raise LoadError(
            f"no cgroup v1 blkio throttle at {BLKIO_ROOT} (a unified host needs io.max on the"
            " lab's etcd cgroup instead; see fleetlab/load.py)"
        )
    device = block_device(lab.layout.etcd_dir)
    pids = lab_etcd_pids(lab)
    group = BLKIO_ROOT / f"fleetlab-{lab.name}-etcd"
    group.mkdir(exist_ok=True)
    origins = {pid: blkio_of(pid) for pid in pids}
    try:
        (group / "blkio.throttle.write_iops_device").write_text(f"{device} {write_iops}\n")
        for pid in pids:
            (group / "cgroup.procs").write_text(f"{pid}\n")
        yield DiskThrottle(device, write_iops, group)
    finally:
        for pid, origin in origins.items():
            with contextlib.suppress(OSError):  # etcd may have gone with the lab
                (BLKIO_ROOT / origin.lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            group.rmdir()


def lab_etcd_pids(lab: Lab) -> list[int]:
    pids = cgroups.pids(lab.layout.etcd_cgroup)
    if not pids:
        raise LoadError(f"the etcd of lab {lab.name!r} is not running")
    return pids


# -- what the load did ---------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts by upper bound, their sum and count."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram(
            tuple((bound, n - before.get(bound, 0.0)) for bound, n in self.buckets),
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile_bound(self, fraction: float) -> float:
        """The smallest bucket bound that at least `fraction` of the observations are under."""
        for bound, cumulative in self.buckets:
            if self.count and cumulative >= fraction * self.count:
                return bound
        return float("inf")


def parse_histogram(text: str, name: str) -> Histogram:
    """The histogram `name` in Prometheus' text format (empty if absent)."""
    buckets, total, count = [], 0.0, 0.0
    for line in text.splitlines():
        if line.startswith(f'{name}_bucket{{le="'):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_sum "):
            total = float(line.split()[1])
        elif line.startswith(f"{name}_count "):
            count = float(line.split()[1])
    return Histogram(tuple(sorted(buckets)), total, count)


def etcd_metrics(endpoint: str) -> str:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as response:
        return response.read().decode()


def host_cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all the host's CPUs since boot."""
    fields = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def cpu_usage_seconds(cgroup: Path) -> float:
    """CPU time used by a cgroup2 subtree (0 if it is gone)."""
    try:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def cpu_stall_seconds(cgroup: Path) -> float:
    """Seconds during which some task of the cgroup was runnable but waited for a CPU."""
    try:
        some = (cgroup / "cpu.pressure").read_text().splitlines()[0]
    except OSError:
        return 0.0
    return int(some.rsplit("total=", 1)[1]) / 1e6


@dataclass(frozen=True)
class Reading:
    at: float
    host: tuple[int, int]
    usage: dict[str, float]  # cgroup label -> CPU seconds
    stall: dict[str, float]  # cgroup label -> seconds waiting for a CPU
    metrics: str
    writes: int


@dataclass(frozen=True)
class LoadFigures:
    seconds: float
    host_busy: float  # fraction of all CPU time
    hog_share: float  # fraction of all CPU time the hogs used
    fleetd_cpu: float  # CPU seconds of all fleetds together
    fleetd_stall_max: float  # the most any one fleetd waited for a CPU, fraction of the time
    etcd_stall: float
    wal_fsync: Histogram
    backend_commit: Histogram
    write_iops: float  # etcd's writes to its disk per second

    def lines(self) -> list[str]:
        wal, commit = self.wal_fsync, self.backend_commit
        return [
            f"host CPUs busy {self.host_busy:.0%} over {self.seconds:.0f}s,"
            f" the hogs took {self.hog_share:.0%} of all CPU time",
            f"fleetd: {self.fleetd_cpu:.1f} CPU-s on all machines; the most starved one waited"
            f" for a CPU {self.fleetd_stall_max:.0%} of the time (etcd: {self.etcd_stall:.0%})",
            f"etcd WAL fsync: mean {wal.mean() * 1000:.0f} ms, p99 <= "
            f"{wal.quantile_bound(0.99) * 1000:.0f} ms ({wal.count:.0f} fsyncs); backend commit:"
            f" mean {commit.mean() * 1000:.0f} ms, p99 <= "
            f"{commit.quantile_bound(0.99) * 1000:.0f} ms; {self.write_iops:.1f} writes/s",
        ]


class LoadMeter:
    """Reads the host, the lab's cgroups and etcd's metrics at `start` and at `stop`."""

    def __init__(self, lab: Lab, hogs: dict[str, list[str]], throttle: DiskThrottle) -> None:
        self.lab = lab
        self.throttle = throttle
        self.watched: dict[str, Path] = {"etcd": lab.layout.etcd_cgroup}
        for machine, units in hogs.items():
            slice_ = lab.layout.machine(machine).cgroup / "system.slice"
            self.watched[f"fleetd {machine}"] = slice_ / "fleetd.service"
            for unit in units:
                self.watched[f"hog {machine} {unit}"] = slice_ / unit
        self.first: Reading | None = None

    def read(self) -> Reading:
        return Reading(
            time.monotonic(),
            host_cpu_times(),
            {label: cpu_usage_seconds(path) for label, path in self.watched.items()},
            {label: cpu_stall_seconds(path) for label, path in self.watched.items()},
            etcd_metrics(self.lab.host_etcd_endpoint),
            self.throttle.writes(),
        )

    def start(self) -> None:
        self.first = self.read()

    def stop(self) -> LoadFigures:
        assert self.first is not None, "LoadMeter.start was not called"
        first, last = self.first, self.read()
        seconds = last.at - first.at
        busy = last.host[0] - first.host[0]
        total = last.host[1] - first.host[1]
        cpu_seconds = total / os.sysconf("SC_CLK_TCK")

        def used(prefix: str) -> list[float]:
            return [last.usage[k] - first.usage[k] for k in last.usage if k.startswith(prefix)]

        def stalled(label: str) -> float:
            return (last.stall[label] - first.stall[label]) / seconds

        fleetds = [label for label in last.stall if label.startswith("fleetd ")]
        return LoadFigures(
            seconds=seconds,
            host_busy=busy / total if total else 0.0,
            hog_share=sum(used("hog ")) / cpu_seconds if cpu_seconds else 0.0,
            fleetd_cpu=sum(used("fleetd ")),
            fleetd_stall_max=max((stalled(label) for label in fleetds), default=0.0),
            etcd_stall=stalled("etcd"),
            wal_fsync=parse_histogram(last.metrics, WAL_FSYNC).minus(
                parse_histogram(first.metrics, WAL_FSYNC)
            ),
            backend_commit=parse_histogram(last.metrics, BACKEND_COMMIT).minus(
                parse_histogram(first.metrics, BACKEND_COMMIT)
            ),
            write_iops=(last.writes - first.writes) / seconds,
        )
