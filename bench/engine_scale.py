"""Benchmark: the engine at scale. One scheduling pass over 10,000 units and 1,000 machines (the
pure `plan_cluster`), both placing everything from scratch and the steady-state pass that finds
nothing to do; and one registry snapshot read of that size from a real etcd on loopback.

    .venv/bin/python bench/engine_scale.py [--units 10000] [--machines 1000]

Targets (issue 3): the pass <= 1 s and the snapshot read <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from fleetd.cluster_plan import plan_cluster
from fleetd.keys import Keys
from fleetd.model import Assign, ClusterSnapshot, DesiredState, Job, JobRecord, Machine, Schedule
from fleetd.registry import (
    MAX_TXN_OPS,
    Registry,
    chunks,
    encode_assignment,
    encode_job,
    encode_machine,
)
from fleetd.unitfile import parse_unit_file, requirements
from fleetd.unitname import parse_unit_name
from fleetlab.etcd import loopback_etcd

REGIONS = ["us", "eu", "ap", "sa"]


def make_jobs(count: int) -> dict[str, Job]:
    """Mostly plain units; every 10th wants a region, every 50th conflicts with its kind."""
    jobs = {}
    for i in range(count):
        name = f"unit-{i:05d}.service"
        x_fleet = ""
        if i % 10 == 0:
            x_fleet = f"MachineMetadata=region={REGIONS[i % len(REGIONS)]}"
        elif i % 50 == 1:
            x_fleet = "Conflicts=unit-*1.service"
        text = "[Service]\nExecStart=/bin/sleep infinity\n" + (
            f"[X-Fleet]\n{x_fleet}\n" if x_fleet else ""
        )
        unit = parse_unit_file(text, name)
        jobs[name] = Job(
            name, unit.hash, DesiredState.LAUNCHED, requirements(unit, parse_unit_name(name))
        )
    return jobs


def make_machines(count: int) -> dict[str, Machine]:
    return {
        f"{i:032x}": Machine(f"{i:032x}", f"10.{i // 250}.{i % 250}.1", {"region": REGIONS[i % 4]})
        for i in range(count)
    }


def timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def settled(snapshot: ClusterSnapshot, tasks: list) -> ClusterSnapshot:  # type: ignore[type-arg]
    placements = {t.unit: t.machine for t in tasks if isinstance(t, Schedule)}
    assignments: dict[str, dict] = {}  # type: ignore[type-arg]
    for task in tasks:
        if isinstance(task, Assign):
            assignments.setdefault(task.machine, {})[task.unit] = task.assignment
    return ClusterSnapshot(snapshot.jobs, snapshot.machines, placements, assignments, {})


async def snapshot_read(state: ClusterSnapshot) -> float:
    with (
        tempfile.TemporaryDirectory() as directory,
        loopback_etcd(Path(directory) / "etcd") as etcd,
    ):
        async with Registry.open(etcd.endpoint, Keys(), timeout=30.0) as registry:
            keys, ops = registry.keys, registry.ops
            puts = [
                ops.put(keys.job(j.name), encode_job(JobRecord(j.name, j.hash, j.desired)))
                for j in state.jobs.values()
            ]
            puts += [
                ops.put(keys.machine(m.id), encode_machine(m)) for m in state.machines.values()
            ]
            puts += [ops.put(keys.placement(u), m.encode()) for u, m in state.placements.items()]
            puts += [
                ops.put(keys.assignment(m, u), encode_assignment(a))
                for m, units in state.assignments.items()
                for u, a in units.items()
            ]
            for batch in chunks(puts, MAX_TXN_OPS):
                await registry.client.transaction(compare=[], success=list(batch), failure=[])
            started = time.perf_counter()
            raw = await registry.snapshot()
            seconds = time.perf_counter() - started
            assert len(raw.jobs) == len(state.jobs) and len(raw.placements) == len(state.placements)
            return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--machines", type=int, default=1_000)
    args = parser.parse_args()
    jobs, machines = make_jobs(args.units), make_machines(args.machines)
    empty = ClusterSnapshot(jobs, machines, {}, {}, {})
    tasks, first = timed(lambda: plan_cluster(empty))
    state = settled(empty, tasks)
    again, steady = timed(lambda: plan_cluster(state))
    placed = sum(1 for t in tasks if isinstance(t, Schedule))
    print(
        f"plan_cluster, {args.units} units x {args.machines} machines, placing all: {first:.2f}s"
        f" ({placed} placed) (target <= 1 s) {'ok' if first <= 1 else 'OVER TARGET'}"
    )
    print(
        f"plan_cluster, steady state (nothing to do: {len(again)} tasks): {steady:.2f}s"
        f" (target <= 1 s) {'ok' if steady <= 1 else 'OVER TARGET'}"
    )
    seconds = asyncio.run(snapshot_read(state))
    total = (
        len(jobs)
        + len(machines)
        + len(state.placements)
        + sum(map(len, state.assignments.values()))
    )
    print(
        f"registry snapshot read from a real etcd ({total} keys): {seconds:.2f}s"
        f" (target <= 1 s) {'ok' if seconds <= 1 else 'OVER TARGET'}"
    )


if __name__ == "__main__":
    main()
