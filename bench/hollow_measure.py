"""What bench/hollow.py measures with: process CPU, etcd's database size, fleetctl as a process,
waiting for a condition, and the engine's passes (counted on the leader's registry)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENGINE_TXN = "applying the engine's plan"  # Registry.apply_engine_tasks's action


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_pid(name: str) -> int | None:
    """The pid of this process's child called `name` (the etcd that loopback_etcd started)."""
    pids = child_pids(name)
    return pids[0] if pids else None


def child_pids(name: str) -> list[int]:
    """The pids of this process's children called `name`, oldest first."""
    found = []
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rpartition(")")[2].split()
        if comm == name and fields[1] == me:
            found.append((int(fields[19]), int(entry.name)))  # by start time
    return [pid for _, pid in sorted(found)]


def etcd_metric(endpoint: str, name: str) -> float | None:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


@dataclass
class CpuWindow:
    """CPU use of some processes over a window, as a share of one core."""

    pids: dict[str, int]
    started: float = field(default_factory=time.monotonic)
    used: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.used = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def shares(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        return {
            name: (cpu_seconds(pid) - self.used[name]) / elapsed for name, pid in self.pids.items()
        }


async def fleetctl(endpoint: str, args: list[str], cwd: Path, timeout: float) -> tuple[float, str]:
    """Run this checkout's fleetctl as a process (etcd driver); (seconds, stdout). The event
    loop keeps running meanwhile, so the hollow machines keep beating."""
    argv = [sys.executable, "-c", "import sys; from fleetd.fleetctl.cli import main; main()"]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FLEETCTL_DRIVER": "etcd",
        "FLEETCTL_ENDPOINT": endpoint,
    }
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"fleetctl {args[0]} took longer than {timeout:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(
            f"fleetctl {args[0]} failed ({process.returncode}): {err.decode()[-800:]}"
        )
    return time.monotonic() - started, out.decode()


async def wait_until(what: str, condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition()` holds (checked every 50 ms); TimeoutError naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@dataclass
class EnginePasses:
    """The leader's passes that wrote something: seconds each and transactions each."""

    passes: list[tuple[float, int]] = field(default_factory=list)

    def instrument(self, engine: Any) -> None:
        """Wrap one machine's engine (only a leader's passes write)."""
        registry = engine.registry
        reconcile, txn = engine.reconcile, registry._txn
        current: list[int] = []

        async def counted_txn(*args: Any, **kwargs: Any) -> Any:
            if current and args[2:3] == (ENGINE_TXN,):  # not the agent's state writes
                current[-1] += 1
            return await txn(*args, **kwargs)

        async def timed_reconcile(*args: Any, **kwargs: Any) -> Any:
            current.append(0)
            started = time.monotonic()
            try:
                return await reconcile(*args, **kwargs)
            finally:
                count = current.pop()
                if count:
                    self.passes.append((time.monotonic() - started, count))

        registry._txn = counted_txn
        engine.reconcile = timed_reconcile

    def take(self) -> list[tuple[float, int]]:
        taken, self.passes = self.passes, []
        return taken


def summary(passes: list[tuple[float, int]]) -> str:
    if not passes:
        return "no pass wrote"
    seconds = sorted(p[0] for p in passes)
    txns = sorted(p[1] for p in passes)
    return (
        f"{len(passes)} passes, median {seconds[len(seconds) // 2]:.2f}s max {seconds[-1]:.2f}s,"
        f" txns/pass median {txns[len(txns) // 2]} max {txns[-1]}"
    )


@dataclass
class LoopLag:
    """How late this event loop runs a callback that is due: the stall every task in it sees
    (a heart's keepalive included). A probe sleeps `interval` again and again and records by
    how much each wake-up came late."""

    interval: float = 0.05
    lags: list[float] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - due))

    def take(self) -> list[float]:
        taken, self.lags = self.lags, []
        return taken


def lag_summary(lags: list[float]) -> str:
    """The loop's lag over a window: its 99th percentile, its worst, and the time spent more
    than 1 s late (a keepalive that late is answered past etcd_request_timeout)."""
    if not lags:
        return "no samples"
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    stalled = sum(lag for lag in lags if lag > 1.0)
    return f"p99 {p99 * 1000:.0f} ms, max {ordered[-1]:.2f}s, {stalled:.0f}s in stalls > 1 s"
