"""Shared pieces of the fleet benchmarks: a lab with fleetd, and systemd's view of units."""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fleetd.client import FleetClient
from fleetlab.fleet import fleet_client, start_fleetd
from fleetlab.lab import Lab
from imagebuild.rootfs import build_rootfs

REPO = Path(__file__).resolve().parents[1]
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


@asynccontextmanager
async def fleet_lab(
    name: str, machines: int, agent_ttl: float, **settings: str
) -> AsyncIterator[tuple[Lab, FleetClient]]:
    """A lab running fleetd (`settings`: more fleet.conf keys); removed afterwards."""
    lab = Lab(name)
    lab.down()
    lab.up(machines, build_rootfs(), REPO)
    try:
        start_fleetd(lab, agent_ttl, **settings)
        async with fleet_client(lab) as client:
            yield lab, client
    finally:
        lab.down()


def active_units(lab: Lab, machine: str, pattern: str) -> set[str]:
    """Units matching `pattern` that systemd on `machine` says are active."""
    argv = ["systemctl", "list-units", "--state=active", "--plain", "--no-legend", pattern]
    result = lab.run(machine, argv, check=False)
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def loaded_units(lab: Lab, machine: str, pattern: str) -> set[str]:
    argv = ["systemctl", "list-units", "--all", "--plain", "--no-legend", pattern]
    result = lab.run(machine, argv, check=False)
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def describe(values: Sequence[float]) -> str:
    return (
        f"p50 {statistics.median(values):.2f}s  p95 {percentile(values, 0.95):.2f}s  "
        f"max {max(values):.2f}s  (n={len(values)})"
    )
