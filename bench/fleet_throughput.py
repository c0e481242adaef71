"""Benchmark: how fast fleetd places, starts and destroys units, and what it costs at rest.

    .venv/bin/python bench/fleet_throughput.py [--quick]

Prints: the first unit running after `start` (through an in-process client: fleetd's part;
fleetctl's process start included, as users see it, is in fleetctl_scale.py); 100 and 1,000
units started in one request on 3 and 10 machines, seconds until systemd runs them all;
destroying 1,000 units until they are gone from systemd and etcd; fleetd's CPU and memory with
1,000 units running on 10 machines and nothing changing. Targets from issue 3 are printed next
to each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from fleetbench import SLEEPER, active_units, fleet_lab, loaded_units

from fleetd.client import FleetClient
from fleetlab.lab import Lab

IDLE_SETTLE_SECONDS = 10.0
IDLE_SAMPLE_SECONDS = 30.0


def verdict(value: float, target: float) -> str:
    return f"(target <= {target:g}) {'ok' if value <= target else 'OVER TARGET'}"


async def first_unit_latency(client: FleetClient) -> float:
    started = time.monotonic()
    await client.start(["first.service"], {"first.service": SLEEPER})
    await client.wait_until(lambda u: u["first.service"].active_on(), 20, poll=0.01)
    seconds = time.monotonic() - started
    await client.destroy(["first.service"])
    return seconds


async def start_many(lab: Lab, client: FleetClient, count: int) -> float:
    names = [f"bulk-{i:04d}.service" for i in range(count)]
    started = time.monotonic()
    await client.start(names, dict.fromkeys(names, SLEEPER))
    await client.wait_until(
        lambda u: sum(1 for n in names if u[n].active_on()) == count, 120, poll=0.1
    )
    seconds = time.monotonic() - started
    running = sum(len(active_units(lab, m, "bulk-*")) for m in lab.running_machines())
    assert running == count, f"systemd runs {running} of {count} units"
    return seconds


async def destroy_all(lab: Lab, client: FleetClient) -> float:
    names = list(await client.units())
    started = time.monotonic()
    await client.destroy(names)
    while any(loaded_units(lab, m, "bulk-*") for m in lab.running_machines()):
        await asyncio.sleep(0.1)
    while await fleet_keys(client):
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def fleet_keys(client: FleetClient) -> list[bytes]:
    keys = client.registry.keys
    found = []
    for prefix in (keys.jobs, keys.placements, keys.assignments, keys.states):
        result = await client.registry.client.get_prefix(prefix, keys_only=True)
        found += [kv.key for kv in result.kvs]
    return found


def fleetd_pids(lab: Lab) -> list[int]:
    pids = []
    for machine in lab.running_machines():
        procs = lab.layout.machine(machine).cgroup / "system.slice/fleetd.service/cgroup.procs"
        pids += [int(pid) for pid in procs.read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def idle_cost(lab: Lab) -> tuple[float, float]:
    await asyncio.sleep(IDLE_SETTLE_SECONDS)
    pids = fleetd_pids(lab)
    before = sum(cpu_seconds(pid) for pid in pids)
    await asyncio.sleep(IDLE_SAMPLE_SECONDS)
    used = sum(cpu_seconds(pid) for pid in pids) - before
    return 100 * used / IDLE_SAMPLE_SECONDS, sum(pss_mb(pid) for pid in pids) / len(pids)


async def run(sizes: list[tuple[int, int]], settings: dict[str, str]) -> None:
    for machines, count in sizes:
        async with fleet_lab("benchtp", machines, 10.0, **settings) as (lab, client):
            if (machines, count) == sizes[0]:
                seconds = await first_unit_latency(client)
                # fleetd's part only; with fleetctl's process start: bench/fleetctl_scale.py
                print(
                    f"first unit active after start (in-process client): {seconds:.2f}s"
                    f" {verdict(seconds, 0.5)}",
                    flush=True,
                )
            seconds = await start_many(lab, client, count)
            target = 7.0 if (machines, count) == (10, 1000) else float("inf")
            print(
                f"{count:>5} units on {machines:>2} machines active in {seconds:.2f}s"
                f" {verdict(seconds, target) if target != float('inf') else ''}",
                flush=True,
            )
            if (machines, count) == (10, 1000):
                cpu, memory = await idle_cost(lab)
                print(
                    f"idle, 1000 units on 10 machines: all fleetd together {cpu:.1f}% of one core"
                    f" {verdict(cpu, 5.0)}; {memory:.1f} MB PSS per fleetd",
                    flush=True,
                )
                seconds = await destroy_all(lab, client)
                print(
                    f" 1000 units destroyed (gone from systemd and etcd) in {seconds:.2f}s"
                    f" {verdict(seconds, 10.0)}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 100 units on 3 machines")
    parser.add_argument(
        "--events-off",
        action="store_true",
        help="fleetd records no events (events_limit=0): what recording costs, by difference",
    )
    parser.add_argument(
        "--size",
        action="append",
        metavar="MACHINES:UNITS",
        help="only these sizes (repeatable), e.g. 3:1000",
    )
    args = parser.parse_args()
    sizes = [(3, 100)] if args.quick else [(3, 100), (3, 1000), (10, 100), (10, 1000)]
    if args.size:
        sizes = [(int(m), int(u)) for m, u in (size.split(":") for size in args.size)]
    settings = {"events_limit": "0"} if args.events_off else {}
    print(f"event recording: {'off' if args.events_off else 'on (the default)'}", flush=True)
    asyncio.run(run(sizes, settings))


if __name__ == "__main__":
    main()
