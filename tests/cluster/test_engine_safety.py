"""The engine fails safe: when most machines lose etcd while etcd itself is up, their units
stay where they run (the few machines that still reach etcd must not start them again); a unit
whose job or unit file cannot be read is left as it is, never taken for destroyed."""

from __future__ import annotations

import asyncio
import json

import pytest

from fleetd.guard import PEER_REFRESH_SECONDS

from .fleet import SLEEPER, FleetCluster, never_twice, unit

pytestmark = pytest.mark.cluster


@pytest.mark.machines(5)
@pytest.mark.agent_ttl(3)
async def test_most_machines_cut_off_from_etcd_keep_their_units_and_none_run_twice(
    fleet: FleetCluster,
) -> None:
    names = [f"split{i}.service" for i in range(8)]
    await fleet.client.start(names, {name: unit() for name in names})
    units = await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in names), 30)
    where = {name: fleet.machine_of(units, name) for name in names}
    await asyncio.sleep(PEER_REFRESH_SECONDS + 1)  # every machine has learnt all its peers
    # m2-m5 still see each other but neither etcd nor m1: to them etcd looks down for all.
    cut = ["m2", "m3", "m4", "m5"]
    with never_twice(fleet, names, every=0.25):
        fleet.lab.split(cut)
        await asyncio.sleep(4 * fleet.ttl)
        for name in names:
            assert fleet.active_on(name) == [where[name]], f"{name} moved or stopped"
        units = await fleet.client.units()
        kept = [n for n in names if where[n] in cut]
        assert kept, "no unit ran on the cut-off machines"
        for name in kept:
            assert "recently known machines reach etcd" in (units[name].reason or "")
        fleet.lab.unsplit(cut)
        await fleet.client.wait_until(lambda u: all(u[n].reason is None for n in names), 30)
        await asyncio.sleep(2 * fleet.ttl)
    # After the heal a machine that reconnects late sees its peers reach etcd and fences (its
    # lease expired long ago): its units may move then, but each runs exactly once.
    assert all(len(fleet.active_on(name)) == 1 for name in names)
    leader = fleet.lab.journal_text("m1", ["-u", "fleetd"])
    assert "not moving" in leader, "m1 should have led and withheld rescheduling"


async def test_a_unit_whose_file_vanished_keeps_running_and_others_still_schedule(
    fleet: FleetCluster,
) -> None:
    await fleet.client.start(["orphan.service"], {"orphan.service": unit()})
    units = await fleet.client.wait_until(lambda u: u["orphan.service"].active_on(), 20)
    where = fleet.machine_of(units, "orphan.service")
    pid = fleet.main_pid(where, "orphan.service")
    keys, etcd = fleet.registry.keys, fleet.registry.client
    job = json.loads((await etcd.get(keys.job("orphan.service"))).value)
    await etcd.delete(keys.unit_body(job["hash"]))
    await etcd.put(keys.job("garbled.service"), b"{not json")
    other = "[Unit]\nDescription=a different unit file\n" + SLEEPER
    await fleet.client.start(["after.service"], {"after.service": other})
    await fleet.client.wait_until(lambda u: u["after.service"].active_on(), 20)
    # A fresh engine (fleetd restarted where it leads, keeping its lease) has no cached copy.
    leader = fleet.names[await fleet.registry.leader() or ""]
    fleet.systemctl(leader, "kill", "--signal=KILL", "fleetd.service")
    units = await fleet.client.wait_until(lambda u: u["orphan.service"].reason is not None, 30)
    assert "missing from etcd" in (units["orphan.service"].reason or "")
    await asyncio.sleep(2 * fleet.ttl)
    assert fleet.active_on("orphan.service") == [where]
    assert fleet.main_pid(where, "orphan.service") == pid


async def test_a_unit_moving_between_live_machines_stops_before_it_starts_again(
    fleet: FleetCluster,
) -> None:
    old, new = fleet.ids["m1"], fleet.ids["m2"]
    await fleet.registry.set_metadata([(old, "role", "web"), (new, "role", "")])
    slow_stop = SLEEPER + "ExecStop=/bin/sleep 2\n"
    body = unit("MachineMetadata=role=web", service=slow_stop)
    await fleet.client.start(["mover.service"], {"mover.service": body})
    await fleet.client.wait_until(lambda u: u["mover.service"].active_on(), 20)
    assert fleet.active_on("mover.service") == ["m1"]
    with never_twice(fleet, ["mover.service"], every=0.1):
        await fleet.registry.set_metadata([(old, "role", ""), (new, "role", "web")])
        await fleet.client.wait_until(lambda u: u["mover.service"].active_on() == [new], 30)
        assert fleet.active_on("mover.service") == ["m2"]


async def test_machines_that_leave_gracefully_do_not_count_as_vanished(
    fleet: FleetCluster,
) -> None:
    names = [f"stay{i}.service" for i in range(6)]
    await fleet.client.start(names, {name: unit() for name in names})
    await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in names), 20)
    for machine in ("m1", "m2"):  # two of three leave: one machine is not half of three
        fleet.systemctl(machine, "stop", "fleetd.service")
    last = fleet.ids["m3"]
    units = await fleet.client.wait_until(
        lambda u: all(u[n].active_on() == [last] for n in names), 20
    )
    assert all(units[n].reason is None for n in names)
    members = await fleet.registry.client.get_prefix(fleet.registry.keys.members)
    assert [kv.key.decode().rsplit("/", 1)[1] for kv in members.kvs] == [last]


async def test_a_second_fleetd_with_a_machine_id_in_use_is_refused(fleet: FleetCluster) -> None:
    await fleet.client.start(
        ["mine.service"], {"mine.service": unit("MachineID=" + fleet.ids["m1"])}
    )
    await fleet.client.wait_until(lambda u: u["mine.service"].active_on(), 20)
    clone = "/etc/fleet/cloned-machine-id"  # m2 pretends to be m1, as a cloned disk would
    fleet.lab.run("m2", ["sh", "-c", f"echo {fleet.ids['m1']} > {clone}"])
    fleet.configure("m2", machine_id_file=clone)
    fleet.systemctl("m2", "restart", "fleetd.service")
    await asyncio.sleep(2 * fleet.ttl)
    machines = await fleet.client.machines()
    assert machines[fleet.ids["m1"]].ip == fleet.lab.require_state().machine("m1").ip
    assert fleet.ids["m2"] not in machines
    assert fleet.active_on("mine.service") == ["m1"]
    journal = fleet.lab.journal_text("m2", ["-u", "fleetd"])
    assert "is already registered by a live fleetd" in journal
