"""fleetd as a service: signals, configuration reloads, etcd missing at start-up, journal fields."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from .fleet import FleetCluster, unit

pytestmark = pytest.mark.cluster


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.mark.machines(2)
async def test_sigterm_leaves_the_cluster_and_exits_0(fleet: FleetCluster) -> None:
    fleet.systemctl("m2", "stop", "fleetd.service")
    assert fleet.systemctl("m2", "show", "-p", "ExecMainStatus", "--value", "fleetd.service") == "0"
    assert fleet.systemctl("m2", "show", "-p", "Result", "--value", "fleetd.service") == "success"
    machines = await fleet.client.machines()
    assert fleet.ids["m2"] not in machines  # the lease was revoked, not left to expire


@pytest.mark.machines(2)
async def test_sighup_reloads_the_configuration(fleet: FleetCluster) -> None:
    fleet.configure("m1", metadata="region=us,role=web")
    fleet.systemctl("m1", "kill", "--signal=HUP", "fleetd.service")

    async def metadata_updated() -> bool:
        machines = await fleet.client.machines()
        return machines.get(fleet.ids["m1"]) is not None and (
            dict(machines[fleet.ids["m1"]].metadata).get("role") == "web"
        )

    await eventually(metadata_updated)
    assert "Reloading configuration" in fleet.lab.journal_text("m1", ["-u", "fleetd"])
    assert fleet.systemctl("m1", "show", "-p", "NRestarts", "--value", "fleetd.service") == "0"


@pytest.mark.machines(2)
async def test_fleetd_waits_for_an_unreachable_etcd_and_says_so(fleet: FleetCluster) -> None:
    fleet.systemctl("m2", "stop", "fleetd.service")
    fleet.lab.stop_etcd()
    fleet.systemctl("m2", "start", "fleetd.service")
    await asyncio.sleep(3)
    assert fleet.systemctl("m2", "is-active", "fleetd.service") == "active"
    assert fleet.systemctl("m2", "show", "-p", "NRestarts", "--value", "fleetd.service") == "0"
    assert "cannot reach etcd" in fleet.lab.journal_text("m2", ["-u", "fleetd"])
    fleet.lab.start_etcd()

    async def registered() -> bool:
        return fleet.ids["m2"] in await fleet.client.machines()

    await eventually(registered)


@pytest.mark.machines(1)
async def test_task_logs_name_the_unit_and_machine_in_the_journal(fleet: FleetCluster) -> None:
    await fleet.client.start(["logged.service"], {"logged.service": unit()})
    await fleet.client.wait_until(lambda u: u["logged.service"].active_on(), 20)
    by_field = fleet.lab.journal_text("m1", ["FLEET_UNIT=logged.service"])
    assert "agent task=StartUnit unit=logged.service" in by_field
    assert "engine task=Schedule unit=logged.service" in by_field
    # OBJECT_SYSTEMD_UNIT puts fleetd's lines about a unit next to systemd's own.
    by_unit = fleet.lab.journal_text("m1", ["-u", "logged.service"])
    assert "agent task=StartUnit" in by_unit and "Started logged.service" in by_unit
    by_machine = fleet.lab.journal_text("m1", [f"FLEET_MACHINE={fleet.ids['m1']}"])
    assert "registered machine" in by_machine
