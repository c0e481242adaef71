"""Benchmark: fleet at scale with hollow machines (bench/hollow_machine.py) against a real etcd.

    .venv/bin/python bench/hollow.py --machines 1000 --engines 3 [--units 10000] [--processes 2]

Starts its own etcd on loopback (a free port, its data in a temporary directory removed at the
end) and N hollow machines in worker processes (bench/hollow_worker.py, each its own event
loop: the engine-capable machines in one when they are fewer than all, the rest spread over
--processes; bench/hollow_fleet.py). This process only orchestrates and measures, with
fleetctl run as a process (etcd driver): `start` of all units until all are active,
`list-units` and `list-unit-files`, the engine's passes, steady-state CPU of etcd and of each
worker with etcd's database size, the crash of 1 machine and of 10% at once until their units
are active elsewhere, and `destroy` of all units. After each step it prints each worker's event
loop lag: a loop late by more than etcd_request_timeout makes its machines' figures the
instrument's, not fleetd's. Every wait is bounded; the whole run stops after --deadline
seconds at the latest, or when any of its processes holds more than --max-rss MiB; a killed
run leaves nothing behind (bench/hollow_reaper.py, and the workers die with it). Prints one
line per figure, and with --row a tab-separated line for the scale table in bench/README.md.

Targets (issue 13) at 1,000 machines x 10,000 units: all active <= 30 s after start;
list-units <= 1 s; failover of 1 machine <= agent_ttl + 2 s, of 10% <= agent_ttl + 5 s;
etcd <= 50% of one core at rest; no false failover at rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hollow_fleet import HollowFleet, plan_workers
from bench.hollow_measure import (
    CpuWindow,
    child_pids,
    etcd_metric,
    fleetctl,
    lag_summary,
    rss_mib,
    summary,
    wait_until,
)
from fleetlab.etcd import free_ports, loopback_etcd, loopback_etcd_cluster

TEMP_PREFIX = "flotilla-hollow-"
# A machine's fleetd keeps its run state (lease id, fencing deadline, peers) in /run, a tmpfs:
# the hollow ones keep theirs on one too, or the deadline written after every keepalive costs
# the process a disk journal commit per machine (a quarter of its CPU at rest at 300 machines).
RUN_TMPFS = Path("/dev/shm")
SETTLED_LAG = 0.2  # seconds: a loop that late still answers well inside etcd_request_timeout
SETTLED_SECONDS = 5.0
SETTLE_LIMIT = 180.0
REAPER = Path(__file__).resolve().parent / "hollow_reaper.py"
UNIT_BODY = "[Unit]\nDescription=hollow unit\n\n[Service]\nExecStart=/bin/sleep infinity\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--units", type=int, help="units in all [default: 10 per machine]")
    parser.add_argument("--agent-ttl", type=float, default=10.0)
    parser.add_argument("--start-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--stop-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--engines", type=int, help="machines that run the engine [default: all]")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="worker processes for the machines without an engine (the engine-capable ones,"
        " when fewer than all, get one more of their own) [default: 2]",
    )
    parser.add_argument("--steady", type=float, default=20.0, help="seconds at rest measured")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--max-rss", type=float, default=6144.0, help="MiB for each process")
    parser.add_argument("--row", action="store_true", help="also print a tab-separated row")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--etcd-members", type=int, default=1, choices=(1, 3, 5))
    parser.add_argument(
        "--peer-refresh",
        type=float,
        help="EXPERIMENT: seconds between the fence guards' reads of the machine list's"
        " version, and the least time between full reads (fleetd.guard.PEER_REFRESH_SECONDS,"
        " 5 s in fleetd; past 100 machines full reads are N/20 s apart) [default: fleetd's]",
    )
    parser.add_argument(
        "--etcd-tmpfs",
        action="store_true",
        help="etcd's data on /dev/shm: no fsync wait (a host whose disk other work shares"
        " slows etcd's applies and lease renewals; this separates that from fleetd's cost)",
    )
    args = parser.parse_args(argv)
    if args.machines < 2 or (args.units is not None and args.units < 1):
        parser.error("--machines must be at least 2 and --units at least 1")
    if args.processes < 1 or (args.engines is not None and not 1 <= args.engines <= args.machines):
        parser.error("--processes must be at least 1 and --engines between 1 and --machines")
    return args


class Run:
    def __init__(self, args: argparse.Namespace, endpoint: str, root: Path, fleet: HollowFleet):
        self.args = args
        self.endpoint = endpoint
        self.root = root
        self.fleet = fleet
        self.units = args.units if args.units is not None else 10 * args.machines
        self.names = [f"hollow-{i:05d}.service" for i in range(self.units)]
        self.figures: dict[str, str] = {}

    def note(self, key: str, text: str) -> None:
        self.figures[key] = text
        print(f"{key:<34} {text}", flush=True)

    async def until(self, what: str, condition: Callable[[], bool], timeout: float) -> float:
        """wait_until, failing at once if a worker died (its machines' figures would be lost)."""

        def checked() -> bool:
            self.fleet.check()
            return condition()

        return await wait_until(what, checked, timeout)

    async def boot(self) -> None:
        machines = self.args.machines
        limit = 90 + machines / 5
        await self.until(
            "every machine registered", lambda: self.fleet.registered() == machines, limit
        )
        await self.until("an engine leads", lambda: self.fleet.leader() is not None, 30)
        self.note(
            "machines registered",
            f"{time.monotonic() - self.fleet.started:.2f}s (the workers' start included)",
        )

    async def settle(self) -> None:
        """Wait (bounded) until every worker's loop has kept up for SETTLED_SECONDS: the
        registrations' aftermath (every fence guard reading the grown machine list, N^2
        records in all) is over, and the cluster is at rest before `start`, as a real one
        would be. A run that never settles says so and goes on: its figures are then the
        instrument's."""
        started = time.monotonic()
        calm = 0.0
        while calm < SETTLED_SECONDS and time.monotonic() - started < SETTLE_LIMIT:
            await asyncio.sleep(1)
            self.fleet.check()
            lags = [lag for each in self.fleet.take_lags().values() for lag in each]
            calm = calm + 1 if lags and max(lags) < SETTLED_LAG else 0.0
        verdict = "" if calm >= SETTLED_SECONDS else f", not settled within {SETTLE_LIMIT:.0f}s"
        self.note(
            "settled after registration",
            f"{time.monotonic() - started:.1f}s (every loop under {SETTLED_LAG * 1000:.0f} ms"
            f" late for {SETTLED_SECONDS:.0f}s{verdict})",
        )

    async def start_all(self) -> None:
        units_dir = self.root / "unit-files"
        units_dir.mkdir()
        for name in self.names:
            (units_dir / name).write_text(UNIT_BODY)
        self.fleet.take_passes()
        command = asyncio.create_task(
            fleetctl(self.endpoint, ["start", "--no-block", *self.names], units_dir, 300)
        )
        seconds = await self.until(
            "all units active", lambda: self.fleet.active() == self.units, 300
        )
        command_seconds, _ = await command
        self.note(
            "start: all active", f"{seconds:.2f}s (fleetctl returned after {command_seconds:.2f}s)"
        )
        self.note("engine passes during start", summary(self.fleet.take_passes()))

    async def listings(self) -> None:
        for command in ("list-units", "list-unit-files"):
            seconds, out = await fleetctl(self.endpoint, [command, "--no-legend"], self.root, 120)
            self.note(command, f"{seconds:.2f}s ({len(out.splitlines())} rows)")

    async def steady(self) -> None:
        """At rest: CPU of etcd and of the workers, etcd's db, and no unit moves meanwhile."""
        placement = await self.fleet.placement()
        lost_before = self.fleet.lost_leases()
        members = {f"etcd{i}": pid for i, pid in enumerate(child_pids("etcd"))}
        workers = {w.name: w.pid for w in self.fleet.workers}
        window = CpuWindow({**members, **workers, "orchestrator": os.getpid()})
        await asyncio.sleep(self.args.steady)
        self.fleet.check()
        shares = window.shares()
        each = [shares[name] for name in members]
        urls = self.endpoint.split(",")
        leads = [len(urls) > 1 and etcd_metric(url, "etcd_server_is_leader") == 1 for url in urls]
        marks = [
            f"{share:.0%}{' leader' if lead else ''}"
            for share, lead in zip(each, leads, strict=True)
        ]
        apart = f" (members: {', '.join(marks)})" if len(each) > 1 else ""
        self.note("steady CPU etcd", f"{sum(each):.0%} of a core{apart}")
        parts = ", ".join(
            f"{len(w.machines)}{' engines' if self.is_engine_worker(w.machines) else ''}"
            f" {shares[w.name]:.0%}"
            for w in self.fleet.workers
        )
        hollow = sum(shares[name] for name in workers)
        self.note(
            "steady CPU hollow processes",
            f"{hollow:.0%} of a core ({parts}; orchestrator {shares['orchestrator']:.0%})",
        )
        after = await self.fleet.placement()
        moved = sum(placement.get(i) != after.get(i) for i in placement.keys() | after.keys())
        lost = self.fleet.lost_leases() - lost_before
        self.note(
            "false failovers at rest",
            f"{moved} machines changed units, {lost} leases replaced ({self.args.steady:.0f}s)",
        )
        first = self.endpoint.split(",")[0]
        size = etcd_metric(first, "etcd_mvcc_db_total_size_in_bytes")
        in_use = etcd_metric(first, "etcd_mvcc_db_total_size_in_use_in_bytes")
        self.note(
            "etcd db size",
            f"{(size or 0) / 2**20:.1f} MiB ({(in_use or 0) / 2**20:.1f} MiB in use)",
        )
        sizes = ", ".join(f"{rss_mib(w.pid):.0f}" for w in self.fleet.workers)
        self.note("hollow processes RSS", f"{sizes} MiB")

    def is_engine_worker(self, machines: list[int]) -> bool:
        engines = self.args.engines
        return engines is not None and engines < self.args.machines and machines[-1] < engines

    async def failover(self, label: str, count: int) -> None:
        """Crash `count` machines that hold units (never the leader) until all run again."""
        leader = self.fleet.leader()
        placement = await self.fleet.placement()
        candidates = sorted(i for i, units in placement.items() if units and i != leader)
        victims = random.Random(self.args.seed + count).sample(
            candidates, min(count, len(candidates))
        )
        self.fleet.take_passes()
        await self.fleet.crash(victims)
        limit = self.args.agent_ttl * 3 + 60
        seconds = await self.until(label, lambda: self.fleet.active() == self.units, limit)
        ttl = self.args.agent_ttl
        self.note(
            label,
            f"{seconds:.2f}s = agent_ttl + {seconds - ttl:.2f}s ({len(victims)} machines)",
        )
        self.note(f"engine passes during {label.split(':')[0]}", summary(self.fleet.take_passes()))

    async def destroy_all(self) -> None:
        started = time.monotonic()
        command_seconds, _ = await fleetctl(self.endpoint, ["destroy", *self.names], self.root, 300)
        seconds = await self.until("all units gone", lambda: self.fleet.active() == 0, 300)
        self.note(
            "destroy: all gone",
            f"{time.monotonic() - started:.2f}s (fleetctl {command_seconds:.2f}s,"
            f" then {seconds:.2f}s)",
        )

    async def watch_memory(self) -> None:
        pids = {"this process": os.getpid()} | {w.name: w.pid for w in self.fleet.workers}
        while True:
            for name, pid in pids.items():
                with contextlib.suppress(OSError):
                    if rss_mib(pid) > self.args.max_rss:
                        raise MemoryError(
                            f"{name} holds more than {self.args.max_rss:.0f} MiB; stopping"
                        )
            await asyncio.sleep(1)

    async def main(self) -> None:
        for label, step in (
            ("boot", self.boot),
            ("settling", self.settle),
            ("start", self.start_all),
            ("listings", self.listings),
            ("at rest", self.steady),
            ("failover of 1", lambda: self.failover("failover of 1 machine", 1)),
            (
                "failover of 10%",
                lambda: self.failover("failover of 10% at once", max(1, self.args.machines // 10)),
            ),
            ("destroy", self.destroy_all),
        ):
            self.fleet.take_lags()
            try:
                await step()
            finally:
                lags = self.fleet.take_lags()
                first = self.endpoint.split(",")[0]
                slow = etcd_metric(first, "etcd_server_slow_apply_total")
                expired = etcd_metric(first, "etcd_debugging_server_lease_expired_total")
                print(
                    f"  during {label}: leases replaced so far {self.fleet.lost_leases()},"
                    f" registered {self.fleet.registered()}; etcd so far: {slow or 0:.0f} slow"
                    f" applies, {expired or 0:.0f} leases expired; loop lag: "
                    + "; ".join(f"{name} {lag_summary(each)}" for name, each in lags.items()),
                    flush=True,
                )


@contextlib.contextmanager
def etcd_on_loopback(data_dir: Path, members: int) -> Iterator[str]:
    """etcd's client URLs (comma-separated): one member, or a cluster of `members`."""
    if members == 1:
        with loopback_etcd(data_dir, timeout=30) as etcd:
            yield etcd.endpoint
    else:
        with loopback_etcd_cluster(data_dir, members, timeout=30) as cluster:
            yield ",".join(member.endpoint for member in cluster)


async def run(args: argparse.Namespace) -> int:
    prefix = f"{TEMP_PREFIX}{os.getpid()}-"
    run_parent = RUN_TMPFS if RUN_TMPFS.is_dir() else None
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        tempfile.TemporaryDirectory(prefix=prefix, dir=run_parent) as machines,
        reaper([tmp, machines]) as reap,
    ):
        root = Path(tmp)
        etcd_parent = Path(machines) if args.etcd_tmpfs else root
        with etcd_on_loopback(etcd_parent / "etcd", args.etcd_members) as endpoint:
            for pid in child_pids("etcd"):
                reap(pid)
            return await measure(args, endpoint, root, Path(machines))


async def measure(args: argparse.Namespace, endpoint: str, root: Path, machines: Path) -> int:
    engines = args.engines if args.engines is not None else args.machines
    groups = plan_workers(args.machines, engines, args.processes)
    (peer_port,) = free_ports(1)
    config = {
        "endpoint": endpoint,
        "prefix": "/_coreos.com/fleet/",
        "agent_ttl": args.agent_ttl,
        "peer_port": peer_port,
        "engines": engines,
        "start_latency": args.start_latency,
        "stop_latency": args.stop_latency,
        "deadline": args.deadline + 60,
        "peer_refresh": args.peer_refresh,
    }
    fleet = await HollowFleet.start(groups, config, machines)
    bench = Run(args, endpoint, root, fleet)
    print(
        f"hollow: {args.machines} machines in {len(groups)} worker processes"
        f" ({', '.join(str(len(g)) for g in groups)}), {bench.units} units,"
        f" agent_ttl {args.agent_ttl:.0f}s, etcd {endpoint}"
        + (
            f", EXPERIMENT peer refresh every {args.peer_refresh:.0f}s" if args.peer_refresh else ""
        ),
        flush=True,
    )
    memory = asyncio.create_task(bench.watch_memory())
    work = asyncio.create_task(bench.main())
    try:
        async with asyncio.timeout(args.deadline):
            done, _ = await asyncio.wait([work, memory], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    except (TimeoutError, MemoryError, RuntimeError) as error:
        print(f"hollow: stopped: {error!r}", file=sys.stderr)
        return 1
    finally:
        for task in (work, memory):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(work, memory, return_exceptions=True)
        problems = await fleet.close()
        for reason, count in problems.items():
            print(f"hollow: on halting, {count} x {reason}", file=sys.stderr)
    if args.row:
        print("ROW\t" + "\t".join(f"{k}={v}" for k, v in bench.figures.items()))
    return 0


@contextlib.contextmanager
def reaper(directories: list[str]) -> Iterator[Callable[[int], None]]:
    """bench/hollow_reaper.py, told each pid to kill (etcd's) should this process die before
    it has cleaned up (SIGKILL, or its own hard deadline); yields the telling."""
    process = subprocess.Popen(
        [sys.executable, str(REAPER), *directories],
        stdin=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal to this process group does not reach it
    )
    assert process.stdin is not None
    stdin = process.stdin

    def reap(pid: int) -> None:
        stdin.write(f"pid {pid}\n")
        stdin.flush()

    try:
        yield reap
    finally:
        stdin.write("done\n")
        stdin.close()
        process.wait()


def stop_hard_after(seconds: float) -> None:
    """The last resort of a bounded run: if the event loop never comes back, exit from a
    thread; the reaper kills etcd and removes the temporary directories, the kernel ends the
    workers."""

    def stop() -> None:
        print(f"hollow: still running after {seconds:.0f}s; exiting", flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_hard_after(args.deadline + 90)
    logging.basicConfig(
        level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
