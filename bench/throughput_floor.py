"""Benchmark: 300 units on 3 machines through fleet, next to the floor: the same 300 trivial
units started directly through systemd on the three machines, with no fleet.

    .venv/bin/python bench/throughput_floor.py [--units 300] [--samples 3]

Fleet: `fleetctl start --no-block` of all the units in one command (a process on the host, etcd
driver), until systemd on every machine has the last of them active. Floor: on each machine at
once, the same unit files written to /run/systemd/system, one `systemctl daemon-reload` and one
`systemctl start --no-block` of that machine's share. Both are timed by systemd itself (each
unit's ActiveEnterTimestampMonotonic: lab machines share the host's monotonic clock), not by
polling. Target (issue 13, part A): fleet within floor + 0.5 s. Where the rest goes: the
command's own time, and when each machine's first and last unit became active.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fleetbench import SLEEPER, active_units, fleet_lab
from fleetctl_scale import Fleetctl

from fleetd.client import FleetClient
from fleetlab.lab import Lab

MACHINES = 3
SLACK_SECONDS = 0.5
SETTLE_SECONDS = 3.0  # the previous sample's units are gone from systemd too


@dataclass(frozen=True)
class Spans:
    """Seconds after the command was invoked: when it returned, and each machine's first and
    last unit active."""

    command: float
    machines: dict[str, tuple[float, float]]

    @property
    def last(self) -> float:
        return max(last for _, last in self.machines.values())

    def describe(self) -> str:
        spans = ", ".join(f"{m} {a:.2f}-{b:.2f}" for m, (a, b) in sorted(self.machines.items()))
        return f"command returned {self.command:.2f}; active per machine {spans}"


def activation_times(lab: Lab, machine: str, names: list[str]) -> list[float]:
    """systemd's monotonic seconds at which each of `names` last became active."""
    argv = ["systemctl", "show", "--property=ActiveEnterTimestampMonotonic", "--value", *names]
    values = lab.run(machine, argv).stdout.split()
    return [int(value) / 1e6 for value in values]


def spans_since(lab: Lab, invoked: float, command: float, placed: dict[str, list[str]]) -> Spans:
    machines = {}
    for machine, names in placed.items():
        times = activation_times(lab, machine, names)
        machines[machine] = (min(times) - invoked, max(times) - invoked)
    return Spans(command, machines)


async def all_active(lab: Lab, pattern: str, count: int) -> dict[str, list[str]]:
    """Wait until systemd runs `count` units matching `pattern`; which machine runs which."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        placed = {m: sorted(active_units(lab, m, pattern)) for m in lab.running_machines()}
        if sum(len(names) for names in placed.values()) == count:
            return {m: names for m, names in placed.items() if names}
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{pattern}: not all {count} units active after 120 s")


async def through_fleet(
    lab: Lab, client: FleetClient, fleetctl: Fleetctl, sample: int, count: int
) -> Spans:
    names = [f"tp-fleet-{sample}-{i:04d}.service" for i in range(count)]
    for name in names:
        fleetctl.write(name, SLEEPER)
    invoked = time.monotonic()
    _, seconds, _ = await asyncio.to_thread(fleetctl.run, "start", "--no-block", *names)
    placed = await all_active(lab, f"tp-fleet-{sample}-*", count)
    spans = spans_since(lab, invoked, seconds, placed)
    await client.destroy(names)
    await client.wait_until(lambda units: not any(n in units for n in names), 60, poll=0.2)
    return spans


FLOOR_SCRIPT = """
set -e
cd /run/systemd/system
for name in "$@"; do printf '%s' "$UNIT" > "$name"; done
systemctl daemon-reload
systemctl start --no-block "$@"
"""


FLOOR_CLEANUP = 'systemctl stop "$@"; cd /run/systemd/system; rm -f "$@"; systemctl daemon-reload'


async def through_systemd(lab: Lab, sample: int, count: int) -> Spans:
    names = [f"tp-floor-{sample}-{i:04d}.service" for i in range(count)]
    machines = lab.running_machines()
    shares = {m: names[index :: len(machines)] for index, m in enumerate(machines)}

    def start(machine: str) -> None:
        argv = ["env", f"UNIT={SLEEPER}", "sh", "-c", FLOOR_SCRIPT, "floor", *shares[machine]]
        lab.run(machine, argv)

    invoked = time.monotonic()
    await asyncio.gather(*(asyncio.to_thread(start, m) for m in machines))
    command = time.monotonic() - invoked
    placed = await all_active(lab, f"tp-floor-{sample}-*", count)
    spans = spans_since(lab, invoked, command, placed)
    for machine, share in shares.items():
        lab.run(machine, ["sh", "-c", FLOOR_CLEANUP, "clean", *share])
    return spans


async def run(count: int, samples: int) -> None:
    async with fleet_lab("benchfloor", MACHINES, 10.0) as (lab, client):
        with tempfile.TemporaryDirectory() as host_dir:
            fleetctl = Fleetctl(lab, "etcd", Path(host_dir))
            fleet, floor = [], []
            for sample in range(samples):  # alternated, so a noisy moment hits both
                await asyncio.sleep(SETTLE_SECONDS)
                floor.append(await through_systemd(lab, sample, count))
                print(f"  floor sample {sample}: {floor[-1].describe()}", flush=True)
                await asyncio.sleep(SETTLE_SECONDS)
                fleet.append(await through_fleet(lab, client, fleetctl, sample, count))
                print(f"  fleet sample {sample}: {fleet[-1].describe()}", flush=True)
    floor_seconds = statistics.median(spans.last for spans in floor)
    fleet_seconds = statistics.median(spans.last for spans in fleet)
    target = floor_seconds + SLACK_SECONDS
    verdict = "ok" if fleet_seconds <= target else "OVER TARGET"
    print(
        f"{count} units on {MACHINES} machines, last active after the command (median of"
        f" {samples}): fleet {fleet_seconds:.2f}s, systemd directly (floor) {floor_seconds:.2f}s"
        f" (target <= floor + {SLACK_SECONDS} = {target:.2f}s) {verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--samples", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.units, arguments.samples))


if __name__ == "__main__":
    main()
