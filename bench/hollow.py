"""Benchmark: fleet at scale with hollow machines (bench/hollow_machine.py) against a real etcd.

    .venv/bin/python bench/hollow.py --machines 1000 [--units 10000] [--agent-ttl 10]

Starts its own etcd on loopback (a free port, its data in a temporary directory removed at the
end), registers N hollow machines in this process, and measures, with fleetctl run as a process
(etcd driver): `start` of all units until all are active, `list-units` and `list-unit-files`,
the engine's passes, steady-state CPU of etcd and of this process with etcd's database size, the
crash of 1 machine and of 10% at once until their units are active elsewhere, and `destroy` of
all units. Every wait is bounded; the whole run stops after --deadline seconds at the latest, or
when this process holds more than --max-rss MiB. Prints one line per figure, and with --row a
tab-separated line for the scale table in bench/README.md.

Targets (issue 13) at 1,000 machines x 10,000 units: all active <= 30 s after start;
list-units <= 1 s; failover of 1 machine <= agent_ttl + 2 s, of 10% <= agent_ttl + 5 s;
etcd <= 50% of one core at rest; no false failover at rest.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hollow_machine import HollowMachine, HollowSettings
from bench.hollow_measure import (
    CpuWindow,
    EnginePasses,
    child_pids,
    etcd_metric,
    fleetctl,
    rss_mib,
    summary,
    wait_until,
)
from bench.hollow_systemd import Latencies
from fleetd.keys import Keys
from fleetlab.etcd import free_ports, loopback_etcd, loopback_etcd_cluster

TEMP_PREFIX = "flotilla-hollow-"
# A machine's fleetd keeps its run state (lease id, fencing deadline, peers) in /run, a tmpfs:
# the hollow ones keep theirs on one too, or the deadline written after every keepalive costs
# the process a disk journal commit per machine (a quarter of its CPU at rest at 300 machines).
RUN_TMPFS = Path("/dev/shm")
BOOT_TOGETHER = 50  # machines started at once (as after a power cut of a rack, not a data centre)
UNIT_BODY = "[Unit]\nDescription=hollow unit\n\n[Service]\nExecStart=/bin/sleep infinity\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--units", type=int, help="units in all [default: 10 per machine]")
    parser.add_argument("--agent-ttl", type=float, default=10.0)
    parser.add_argument("--start-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--stop-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--engines", type=int, help="machines that run the engine [default: all]")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds at rest measured")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--max-rss", type=float, default=6144.0, help="MiB for this process")
    parser.add_argument("--row", action="store_true", help="also print a tab-separated row")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--etcd-members", type=int, default=1, choices=(1, 3, 5))
    args = parser.parse_args(argv)
    if args.machines < 2 or (args.units is not None and args.units < 1):
        parser.error("--machines must be at least 2 and --units at least 1")
    return args


class Run:
    def __init__(
        self, args: argparse.Namespace, endpoint: str, root: Path, machines_root: Path
    ) -> None:
        self.args = args
        self.endpoint = endpoint
        self.root = root
        self.units = args.units if args.units is not None else 10 * args.machines
        self.names = [f"hollow-{i:05d}.service" for i in range(self.units)]
        self.figures: dict[str, str] = {}
        self.passes = EnginePasses()
        engines = args.engines if args.engines is not None else args.machines
        (peer_port,) = free_ports(1)
        self.machines = [
            HollowMachine(
                i,
                HollowSettings(
                    endpoint,
                    Keys("/_coreos.com/fleet/"),
                    agent_ttl=args.agent_ttl,
                    peer_port=peer_port,
                    engine=i < engines,
                    latencies=Latencies(args.start_latency, args.stop_latency),
                ),
                machines_root,
            )
            for i in range(args.machines)
        ]

    def note(self, key: str, text: str) -> None:
        self.figures[key] = text
        print(f"{key:<34} {text}", flush=True)

    def active(self) -> int:
        return sum(len(m.active_units()) for m in self.machines if m.alive)

    def leader(self) -> HollowMachine | None:
        for machine in self.machines:
            if machine.alive and machine.engine and machine.engine.leading_since is not None:
                return machine
        return None

    async def boot(self) -> None:
        started = time.monotonic()
        for first in range(0, len(self.machines), BOOT_TOGETHER):
            await asyncio.gather(*(m.start() for m in self.machines[first : first + BOOT_TOGETHER]))
        for machine in self.machines:
            if machine.engine is not None:
                self.passes.instrument(machine.engine)
        registered = await wait_until(
            "every machine registered",
            lambda: all(m.heart and m.heart.registered.is_set() for m in self.machines),
            60 + len(self.machines) / 10,
        )
        await wait_until("an engine leads", lambda: self.leader() is not None, 30)
        self.note(
            "machines registered",
            f"{time.monotonic() - started:.2f}s ({registered:.2f}s after the last start)",
        )

    async def start_all(self) -> None:
        units_dir = self.root / "unit-files"
        units_dir.mkdir()
        for name in self.names:
            (units_dir / name).write_text(UNIT_BODY)
        self.passes.take()
        command = asyncio.create_task(
            fleetctl(self.endpoint, ["start", "--no-block", *self.names], units_dir, 300)
        )
        seconds = await wait_until("all units active", lambda: self.active() == self.units, 300)
        command_seconds, _ = await command
        self.note(
            "start: all active", f"{seconds:.2f}s (fleetctl returned after {command_seconds:.2f}s)"
        )
        self.note("engine passes during start", summary(self.passes.take()))

    async def listings(self) -> None:
        for command in ("list-units", "list-unit-files"):
            seconds, out = await fleetctl(self.endpoint, [command, "--no-legend"], self.root, 120)
            self.note(command, f"{seconds:.2f}s ({len(out.splitlines())} rows)")

    async def steady(self) -> None:
        """At rest: CPU of etcd and of this process, etcd's db, and no unit moves meanwhile."""
        placement = {m.index: m.active_units() for m in self.machines}
        lost_before = sum(bool(m.heart and m.heart.lost_lease) for m in self.machines)
        members = {f"etcd{i}": pid for i, pid in enumerate(child_pids("etcd"))}
        window = CpuWindow({**members, "hollow": os.getpid()})
        await asyncio.sleep(self.args.steady)
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
        self.note(
            "steady CPU hollow process",
            f"{shares['hollow']:.0%} of a core ({len(self.machines)} fleetds)",
        )
        moved = sum(placement[m.index] != m.active_units() for m in self.machines)
        lost = sum(bool(m.heart and m.heart.lost_lease) for m in self.machines) - lost_before
        self.note(
            "false failovers at rest",
            f"{moved} machines changed units, {lost} leases lost ({self.args.steady:.0f}s)",
        )
        first = self.endpoint.split(",")[0]
        size = etcd_metric(first, "etcd_mvcc_db_total_size_in_bytes")
        in_use = etcd_metric(first, "etcd_mvcc_db_total_size_in_use_in_bytes")
        self.note(
            "etcd db size",
            f"{(size or 0) / 2**20:.1f} MiB ({(in_use or 0) / 2**20:.1f} MiB in use)",
        )
        self.note("hollow process RSS", f"{rss_mib(os.getpid()):.0f} MiB")

    async def failover(self, label: str, count: int) -> None:
        """Crash `count` machines that hold units (never the leader) until all run again."""
        leader = self.leader()
        candidates = [m for m in self.machines if m.alive and m is not leader and m.active_units()]
        victims = random.Random(self.args.seed + count).sample(
            candidates, min(count, len(candidates))
        )
        self.passes.take()
        await asyncio.gather(*(m.crash() for m in victims))
        limit = self.args.agent_ttl * 3 + 60
        seconds = await wait_until(label, lambda: self.active() == self.units, limit)
        ttl = self.args.agent_ttl
        self.note(
            label,
            f"{seconds:.2f}s = agent_ttl + {seconds - ttl:.2f}s ({len(victims)} machines)",
        )
        self.note(f"engine passes during {label.split(':')[0]}", summary(self.passes.take()))

    async def destroy_all(self) -> None:
        started = time.monotonic()
        command_seconds, _ = await fleetctl(self.endpoint, ["destroy", *self.names], self.root, 300)
        seconds = await wait_until("all units gone", lambda: self.active() == 0, 300)
        self.note(
            "destroy: all gone",
            f"{time.monotonic() - started:.2f}s (fleetctl {command_seconds:.2f}s,"
            f" then {seconds:.2f}s)",
        )

    async def watch_memory(self) -> None:
        while rss_mib(os.getpid()) < self.args.max_rss:
            await asyncio.sleep(1)
        raise MemoryError(f"this process holds more than {self.args.max_rss:.0f} MiB; stopping")

    async def main(self) -> None:
        for step in (
            self.boot,
            self.start_all,
            self.listings,
            self.steady,
            lambda: self.failover("failover of 1 machine", 1),
            lambda: self.failover("failover of 10% at once", max(1, len(self.machines) // 10)),
            self.destroy_all,
        ):
            await step()

    async def close(self) -> None:
        stuck = await asyncio.gather(*(m.halt() for m in self.machines), return_exceptions=True)
        problems = collections.Counter(str(reason) for reason in stuck if reason is not None)
        for reason, count in problems.items():
            print(f"hollow: {count} machines did not stop cleanly: {reason}", file=sys.stderr)


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
    ):
        root = Path(tmp)
        with etcd_on_loopback(root / "etcd", args.etcd_members) as endpoint:
            bench = Run(args, endpoint, root, Path(machines))
            print(
                f"hollow: {args.machines} machines, {bench.units} units,"
                f" agent_ttl {args.agent_ttl:.0f}s, etcd {endpoint}",
                flush=True,
            )
            memory = asyncio.create_task(bench.watch_memory())
            work = asyncio.create_task(bench.main())
            try:
                async with asyncio.timeout(args.deadline):
                    done, _ = await asyncio.wait(
                        [work, memory], return_when=asyncio.FIRST_COMPLETED
                    )
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
                await bench.close()
            if args.row:
                print("ROW\t" + "\t".join(f"{k}={v}" for k, v in bench.figures.items()))
    return 0


def stop_hard_after(seconds: float) -> None:
    """The last resort of a bounded run: if the event loop never comes back, kill etcd (its
    data directory is temporary) and exit, from a thread."""

    def stop() -> None:
        print(f"hollow: still running after {seconds:.0f}s; killing etcd and exiting", flush=True)
        for etcd in child_pids("etcd"):
            os.kill(etcd, signal.SIGKILL)
        for parent in (Path(tempfile.gettempdir()), RUN_TMPFS):
            for leftover in parent.glob(f"{TEMP_PREFIX}{os.getpid()}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        os._exit(2)

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_hard_after(args.deadline + 60)
    logging.basicConfig(
        level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a channel and a socket per machine
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
