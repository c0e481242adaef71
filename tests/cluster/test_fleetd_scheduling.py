"""fleetd on real systemd machines and a real etcd: placement, constraints, unit lifecycle.

Every check of where a unit runs asks systemd on the machines, not only what fleet reports.
"""

from __future__ import annotations

import re

import pytest

from fleetd.client import ClientError
from fleetd.model import DesiredState

from .fleet import FleetCluster, never_twice, unit

pytestmark = pytest.mark.cluster
TIMEOUT = 20


async def test_a_unit_runs_on_exactly_one_machine_and_its_state_is_published(
    fleet: FleetCluster,
) -> None:
    await fleet.client.start(["hello.service"], {"hello.service": unit()})
    units = await fleet.client.wait_until(lambda u: u["hello.service"].active_on(), TIMEOUT)
    status = units["hello.service"]
    assert fleet.active_on("hello.service") == [fleet.names[status.machine]]
    state = status.states[status.machine]
    assert (state.load, state.active, state.sub) == ("loaded", "active", "running")
    assert state.hash == status.hash
    where = fleet.names[status.machine]
    assert fleet.systemctl(where, "is-enabled", "hello.service") == "linked-runtime"


async def test_global_units_run_on_every_matching_machine(fleet: FleetCluster) -> None:
    files = {
        "everywhere.service": unit("Global=true"),
        "eu-only.service": unit("Global=true\nMachineMetadata=region=eu"),
    }
    await fleet.client.start(list(files), files)
    await fleet.client.wait_until(
        lambda u: (
            len(u["everywhere.service"].active_on()) == 3
            and len(u["eu-only.service"].active_on()) == 2
        ),
        TIMEOUT,
    )
    assert fleet.active_on("everywhere.service") == ["m1", "m2", "m3"]
    assert fleet.active_on("eu-only.service") == ["m2", "m3"]


async def test_x_fleet_constraints_are_honoured(fleet: FleetCluster) -> None:
    files = {
        "pinned.service": unit(f"MachineID={fleet.ids['m2'][:8]}"),
        "fast-eu.service": unit('MachineMetadata="region=eu" "disk=ssd"'),
        "web.service": unit("MachineMetadata=region=us"),
        "web-log.service": unit("MachineOf=web.service"),
        "db-a.service": unit("Conflicts=db-*.service"),
        "db-b.service": unit(),
    }
    await fleet.client.start(list(files), files)
    units = await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in files), TIMEOUT)
    where = {name: fleet.machine_of(units, name) for name in files}
    assert where["pinned.service"] == "m2"
    assert where["fast-eu.service"] == "m3"
    assert where["web.service"] == where["web-log.service"] == "m1"
    assert where["db-a.service"] != where["db-b.service"]
    for name, machine in where.items():
        assert fleet.active_on(name) == [machine]


async def test_replaces_moves_the_replaced_unit_away(fleet: FleetCluster) -> None:
    old = unit("MachineMetadata=disk=ssd")  # m1 or m3
    await fleet.client.start(["old.service"], {"old.service": old})
    units = await fleet.client.wait_until(lambda u: u["old.service"].active_on(), TIMEOUT)
    first = fleet.machine_of(units, "old.service")
    region = "us" if first == "m1" else "eu"
    new = unit(f"Replaces=old.service\nMachineMetadata=region={region}\nMachineMetadata=disk=ssd")
    with never_twice(fleet, ["old.service"]):
        await fleet.client.start(["new.service"], {"new.service": new})
        units = await fleet.client.wait_until(
            lambda u: (
                u["new.service"].active_on()
                and u["old.service"].active_on()
                and fleet.names[u["old.service"].active_on()[0]] != first
            ),
            TIMEOUT,
        )
    assert fleet.machine_of(units, "new.service") == first
    assert fleet.active_on("old.service") == [fleet.machine_of(units, "old.service")]


async def test_template_instances(fleet: FleetCluster) -> None:
    await fleet.client.submit({"echo@.service": "[Service]\nExecStart=/bin/sleep infinity %i\n"})
    with pytest.raises(ClientError, match=re.escape('cannot activate template "echo@.service"')):
        await fleet.client.start(["echo@.service"])
    await fleet.client.start(["echo@1.service", "echo@2.service"])
    units = await fleet.client.wait_until(
        lambda u: u["echo@1.service"].active_on() and u["echo@2.service"].active_on(), TIMEOUT
    )
    machine = fleet.machine_of(units, "echo@2.service")
    assert "sleep infinity 2" in fleet.lab.run(machine, ["ps", "-eo", "args"]).stdout


async def test_unplaceable_unit_stays_pending_with_the_reason(fleet: FleetCluster) -> None:
    await fleet.client.start(
        ["mars.service"], {"mars.service": unit("MachineMetadata=region=mars")}
    )
    units = await fleet.client.wait_until(lambda u: u["mars.service"].reason is not None, TIMEOUT)
    assert units["mars.service"].reason == "no machine matches MachineMetadata region=mars"
    assert units["mars.service"].machine is None


async def test_stop_unload_destroy_leave_nothing_behind(fleet: FleetCluster) -> None:
    await fleet.client.start(["tidy.service"], {"tidy.service": unit()})
    units = await fleet.client.wait_until(lambda u: u["tidy.service"].active_on(), TIMEOUT)
    machine = fleet.machine_of(units, "tidy.service")

    await fleet.client.stop(["tidy.service"])
    await fleet.client.wait_until(lambda u: not u["tidy.service"].active_on(), TIMEOUT)
    assert fleet.systemctl(machine, "is-active", "tidy.service") == "inactive"
    assert fleet.lab.run(machine, ["test", "-f", "/run/fleet/units/tidy.service"]).returncode == 0

    await fleet.client.unload(["tidy.service"])
    await fleet.client.wait_until(lambda u: not u["tidy.service"].states, TIMEOUT)
    assert fleet.lab.run(machine, ["systemctl", "cat", "tidy.service"], check=False).returncode != 0
    assert not fleet.lab.run(machine, ["ls", "/run/fleet/units"]).stdout.strip()

    await fleet.client.destroy(["tidy.service"])
    assert "tidy.service" not in await fleet.client.units()
    leftovers = [key for key in await etcd_keys(fleet) if "tidy.service" in key]
    assert leftovers == []


async def test_desired_state_changes_reach_systemd(fleet: FleetCluster) -> None:
    await fleet.client.load(["lazy.service"], {"lazy.service": unit()})
    units = await fleet.client.wait_until(lambda u: bool(u["lazy.service"].states), TIMEOUT)
    assert units["lazy.service"].desired == DesiredState.LOADED
    machine = fleet.machine_of(units, "lazy.service")
    assert fleet.systemctl(machine, "is-active", "lazy.service") == "inactive"
    await fleet.client.start(["lazy.service"])
    await fleet.client.wait_until(lambda u: u["lazy.service"].active_on(), TIMEOUT)
    assert fleet.active_on("lazy.service") == [machine]


async def test_bad_units_are_refused_and_nothing_is_written(fleet: FleetCluster) -> None:
    before = await etcd_keys(fleet)
    with pytest.raises(ClientError, match="MachineID cannot be used with Global"):
        await fleet.client.submit(
            {"ok.service": unit(), "bad.service": unit("MachineID=abc\nGlobal=true")}
        )
    with pytest.raises(ClientError, match=r"invalid character"):
        await fleet.client.submit({"bad/name.service": unit()})
    with pytest.raises(ClientError, match="garbage"):
        await fleet.client.submit({"junk.service": "[Service]\ngarbage\n"})
    assert await etcd_keys(fleet) == before


async def etcd_keys(fleet: FleetCluster) -> list[str]:
    result = await fleet.registry.client.get_prefix(fleet.registry.keys.prefix.encode())
    return sorted(
        kv.key.decode()
        for kv in result.kvs
        if b"/machine/" not in kv.key and b"/engine/" not in kv.key
    )
