"""Benchmark: fleetctl as users run it, one process per command, through both drivers (etcd from
the host, fleet's API inside machine m1), on a 3-machine lab.

    .venv/bin/python bench/fleetctl_scale.py [--units N] [--large]

Prints, each next to its target (issue 13, part A):
- `fleetctl version` as a whole process (<= 0.15 s);
- `fleetctl list-units` with a few units on 3 machines (<= 0.3 s);
- the first unit: seconds from invoking `fleetctl start --no-block` until fleet reports the unit
  active, process start included (<= 0.5 s);
- `start --no-block`, `stop --no-block`, `unload --no-block` and `destroy` (blocking: until no
  machine has them) of 1,000 units in one command (<= 2 s each);
- with --large, `list-units` and `list-unit-files` at 1,000 and 10,000 units (issue 4: <= 1 s at
  10,000).

The host's fleetctl runs this checkout's code (PYTHONPATH), as the machines do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from fleetbench import REPO, SLEEPER, fleet_lab

from fleetd.client import FleetClient
from fleetd.model import UnitStatus
from fleetd.status import current_state
from fleetlab.lab import Lab

FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
SAMPLES = 5
FIRST_UNIT_SAMPLES = 5

# Runs in a machine: the wall-clock time a command was started at and how long it took, so that
# entering the machine (nsenter) is not counted, as it is not when a user runs fleetctl there.
TIMED_IN_MACHINE = """
import json, subprocess, sys, time
started = time.time()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True, cwd="/root/units")
print(json.dumps({"started": started, "seconds": time.time() - started,
                  "status": result.returncode, "stdout": result.stdout,
                  "stderr": result.stderr}))
"""


class Fleetctl:
    """One driver's fleetctl: `run` returns (wall-clock start, seconds, stdout)."""

    def __init__(self, lab: Lab, driver: str, host_dir: Path) -> None:
        self.lab, self.driver, self.host_dir = lab, driver, host_dir
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "FLEETCTL_DRIVER": "etcd",
            "FLEETCTL_ENDPOINT": lab.host_etcd_endpoint,
        }

    def write(self, name: str, text: str) -> None:
        if self.driver == "etcd":
            (self.host_dir / name).write_text(text)
        else:
            script = f"cat > /root/units/{name}"
            self.lab.run("m1", ["sh", "-c", script], input=text)

    def run(self, *args: str) -> tuple[float, float, str]:
        if self.driver == "etcd":
            started = time.time()
            result = subprocess.run(
                [FLEETCTL, *args],
                cwd=self.host_dir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            seconds = time.time() - started
            check(result.returncode, args, result.stderr)
            return started, seconds, result.stdout
        argv = ["python3", "-c", TIMED_IN_MACHINE, "fleetctl", *args]
        report = json.loads(self.lab.run("m1", argv, timeout=600).stdout)
        check(report["status"], args, report["stderr"])
        return report["started"], report["seconds"], report["stdout"]


class CommandFailed(Exception):
    """fleetctl exited non-zero; the message has the command and the end of its stderr."""


def check(status: int, args: tuple[str, ...], stderr: str) -> None:
    if status != 0:
        raise CommandFailed(f"fleetctl {' '.join(args)[:60]}... failed ({status}): {stderr[-300:]}")


def verdict(value: float, target: float) -> str:
    return f"(target <= {target:g} s) {'ok' if value <= target else 'OVER TARGET'}"


def median_seconds(fleetctl: Fleetctl, *args: str) -> float:
    return statistics.median(fleetctl.run(*args)[1] for _ in range(SAMPLES))


def report(label: str, seconds: float, target: float | None = None) -> None:
    suffix = f" {verdict(seconds, target)}" if target is not None else ""
    print(f"{label:<58} {seconds:6.2f}s{suffix}", flush=True)


async def until(
    client: FleetClient, condition: Callable[[dict[str, UnitStatus]], bool], poll: float
) -> float:
    """Wall-clock time at which `condition` first held (polled every `poll` seconds)."""
    await client.wait_until(condition, 300, poll=poll)
    return time.time()


async def first_unit(client: FleetClient, fleetctl: Fleetctl, index: int) -> float:
    """Invocation of `fleetctl start --no-block` until the unit is active (median of runs)."""
    samples = []
    for sample in range(FIRST_UNIT_SAMPLES):
        name = f"first-{fleetctl.driver.lower()}-{index}-{sample}.service"
        fleetctl.write(name, SLEEPER)
        command = asyncio.to_thread(fleetctl.run, "start", "--no-block", name)
        active = until(client, lambda u, n=name: n in u and bool(u[n].active_on()), 0.01)
        (started, _, _), active_at = await asyncio.gather(command, active)
        samples.append(active_at - started)
        fleetctl.run("destroy", name)
    return statistics.median(samples)


async def thousand(client: FleetClient, fleetctl: Fleetctl, count: int) -> None:
    """start, stop, unload (--no-block: the command's own work) and a blocking destroy of
    `count` units in one command each; the cluster settles between them (not timed)."""
    names = [f"many-{fleetctl.driver.lower()}-{i:05d}.service" for i in range(count)]
    await client.submit(dict.fromkeys(names, SLEEPER))

    def all_in(state: str) -> Callable[[dict[str, UnitStatus]], bool]:
        def reached(units: dict[str, UnitStatus]) -> bool:
            return all(n in units and current(units[n]) == state for n in names)

        return reached

    changes = (
        ("start", "launched", client.start),
        ("stop", "loaded", client.stop),
        ("unload", "inactive", client.unload),
    )
    for command, state, fallback in changes:
        label = f"{command} --no-block of {count} units, {fleetctl.driver} driver"
        await timed_command(
            fleetctl, label, partial(fallback, names), command, "--no-block", *names
        )
        await until(client, all_in(state), 0.2)
    await client.start(names)
    await until(client, all_in("launched"), 0.2)
    gone = asyncio.create_task(jobs_deleted(client, names))
    await asyncio.sleep(0.2)  # the watch is in place
    label = f"destroy of {count} launched units (blocking), {fleetctl.driver} driver"
    started = await timed_command(
        fleetctl, label, partial(client.destroy, names), "destroy", *names
    )
    deleted_at = await asyncio.wait_for(gone, 60)
    if started is not None:
        label = "  of which until every unit was removed from etcd"
        report(label, deleted_at - started, 2.0)


async def jobs_deleted(client: FleetClient, names: list[str]) -> float:
    """Wall-clock time at which the last of these units' jobs was deleted from etcd: the
    command's own part of a destroy (the rest is the machines unloading the units)."""
    registry, left = client.registry, set(names)
    async for event in registry.watch(registry.keys.jobs):
        if event.deleted:
            left.discard(event.key)
        if not left:
            return time.time()
    raise RuntimeError("the watch ended")


async def timed_command(
    fleetctl: Fleetctl, label: str, fallback: Callable[[], Awaitable[None]], *args: str
) -> float | None:
    """Time one command against the 2 s target (its wall-clock start is returned); when it
    fails, say so and make its change through the client instead, so that the next figures are
    still measured."""
    try:
        started, seconds, _ = await asyncio.to_thread(fleetctl.run, *args)
    except CommandFailed as error:
        print(f"{label:<58} FAILED: {error}", flush=True)
        await fallback()
        return None
    report(label, seconds, 2.0)
    return started


def current(status: UnitStatus) -> str:
    return current_state(status, False)


async def listings(client: FleetClient, drivers: list[Fleetctl], total: int) -> None:
    names = [f"listed-{i:05d}.service" for i in range(total)]
    have = len([n for n in await client.jobs() if n.startswith("listed-")])
    await client.submit(dict.fromkeys(names[have:], SLEEPER))
    for command in ("list-unit-files", "list-units"):
        for fleetctl in drivers:
            _, seconds, out = fleetctl.run(command, "--no-legend")
            target = 1.0 if total >= 10_000 else None
            label = f"{command} with {total} units, {fleetctl.driver} driver"
            report(f"{label} ({len(out.splitlines())} rows)", seconds, target)


async def run(count: int, large: bool, only: str | None) -> None:
    async with fleet_lab("benchctl", 3, 10.0) as (lab, client):
        lab.run("m1", ["mkdir", "-p", "/root/units"])
        with tempfile.TemporaryDirectory() as host_dir:
            drivers = [
                Fleetctl(lab, driver, Path(host_dir))
                for driver in ("etcd", "API")
                if only in (None, driver)
            ]
            for fleetctl in drivers:
                report(
                    f"fleetctl version, {fleetctl.driver} side",
                    median_seconds(fleetctl, "version"),
                    0.15,
                )
            await client.submit({f"few-{i}.service": SLEEPER for i in range(3)})
            await client.start([f"few-{i}.service" for i in range(3)])
            for fleetctl in drivers:
                seconds = median_seconds(fleetctl, "list-units")
                report(f"list-units, 3 machines, 3 units, {fleetctl.driver} driver", seconds, 0.3)
            for index, fleetctl in enumerate(drivers):
                seconds = await first_unit(client, fleetctl, index)
                report(
                    f"first unit active after start --no-block, {fleetctl.driver} driver",
                    seconds,
                    0.5,
                )
            for fleetctl in drivers:
                await thousand(client, fleetctl, count)
            if large:
                await listings(client, drivers, 1000)
                await listings(client, drivers, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000, help="units per multi-unit command")
    parser.add_argument("--large", action="store_true", help="listings at 1,000 and 10,000 units")
    parser.add_argument("--driver", choices=["etcd", "API"], help="only this driver")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.units, arguments.large, arguments.driver))


if __name__ == "__main__":
    main()
