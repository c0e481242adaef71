"""fleetd on a lab whose etcd has three members: when the member every fleetd uses dies, fleetd
goes on with the other two, keeps its lease, and no unit moves or restarts."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from fleetlab.etcd import add_lab_etcd_member

from .fleet import FleetCluster, never_twice, unit

pytestmark = pytest.mark.cluster
UNITS = [f"steady{index}.service" for index in range(6)]


async def grow_etcd_and_point_fleetd_at_every_member(fleet: FleetCluster) -> list[str]:
    """The etcd client URLs, the first (the lab's own etcd) first."""
    lab = fleet.lab
    host_port = lab.require_state().etcd_host_port
    endpoints = [lab.layout.etcd_endpoint]
    endpoints += [add_lab_etcd_member(lab.layout, host_port, index) for index in (1, 2)]
    for machine in fleet.running_machines():
        fleet.configure(machine, etcd_servers=",".join(endpoints))  # the lab's first member first
        fleet.systemctl(machine, "restart", "fleetd.service")  # no units yet: nothing moves
    deadline = time.monotonic() + 20
    while len(await fleet.client.machines()) < len(fleet.running_machines()):
        assert time.monotonic() < deadline, "fleetd did not register again on every machine"
        await asyncio.sleep(0.1)
    return endpoints


def machines_registered(fleet: FleetCluster, endpoints: list[str]) -> list[str]:
    """The machine ids etcd holds, read from inside m1 through the given members."""
    argv = ["fleetctl", "--driver=etcd", "--endpoint", ",".join(endpoints)]
    argv += ["list-machines", "--full", "--no-legend", "--fields=machine"]
    return sorted(fleet.lab.run("m1", argv).stdout.split())


async def test_losing_the_etcd_member_in_use_moves_and_restarts_no_unit(
    fleet: FleetCluster,
) -> None:
    endpoints = await grow_etcd_and_point_fleetd_at_every_member(fleet)
    await fleet.client.start(UNITS, {name: unit() for name in UNITS})
    await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in UNITS), 30)
    placed = {name: fleet.active_on(name) for name in UNITS}
    pids = {name: fleet.main_pid(where[0], name) for name, where in placed.items()}
    with never_twice(fleet, UNITS):
        fleet.lab.stop_etcd()  # SIGKILL of the first member (which leads etcd, too)
        await asyncio.sleep(4 * fleet.ttl)
    # Every fleetd kept its lease alive through the other members: all are still registered.
    assert machines_registered(fleet, endpoints[1:]) == sorted(fleet.ids.values())
    for name, where in placed.items():
        assert fleet.active_on(name) == where, f"{name} moved"
        assert fleet.main_pid(where[0], name) == pids[name], f"{name} restarted"
    for machine in fleet.running_machines():
        journal = fleet.lab.journal_text(machine, ["-u", "fleetd.service"])
        assert "expired; registering again" not in journal, f"fleetd on {machine} lost its lease"
        fenced = [line for line in journal.splitlines() if re.search(r"\]: fencing:", line)]
        assert not fenced, f"fleetd on {machine} fenced its units: {fenced}"
