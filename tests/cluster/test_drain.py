"""fleetctl drain and undrain on a lab: a drained machine's units move to the others one at a
time and never run twice (systemd on every machine sampled throughout); refusals write nothing;
--force leaves a unit that can run nowhere else, and says why; undrain; list-machines' STATE."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fleetd.cluster_plan import DRAIN_STAYS
from flotilla.update.fleet import FleetOverEtcd

from .fleet import FleetCluster, never_twice, unit
from .test_fleetctl import Fleetctl

pytestmark = pytest.mark.cluster
UNITS = ["a.service", "b.service", "c.service"]


@pytest.fixture(params=["etcd", "API"])
def fleetctl(request: pytest.FixtureRequest, fleet: FleetCluster, tmp_path: Path) -> Fleetctl:
    return Fleetctl(fleet, request.param, tmp_path)


@contextmanager
def at_most_one_between_machines(fleet: FleetCluster, units: list[str]) -> Iterator[None]:
    """Sample systemd everywhere: fail if two units are ever both running nowhere (a drain
    moves one at a time, so at most one is between its old machine and its new one)."""
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            nowhere = [name for name in units if not fleet.active_on(name)]
            if len(nowhere) > 1:
                seen.append(f"{time.strftime('%X')} running nowhere: {nowhere}")
            stop.wait(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
    assert not seen, "more than one unit was on its way at once:\n" + "\n".join(seen)


def state_column(listing: str) -> dict[str, str]:
    rows = [line.split() for line in listing.splitlines()]
    assert rows[0][-1] == "STATE"
    return {row[0][:8]: row[-1] for row in rows[1:]}


async def test_a_drained_machines_units_move_one_at_a_time_and_never_twice(
    fleet: FleetCluster, tmp_path: Path
) -> None:
    fleetctl = Fleetctl(fleet, "etcd", tmp_path)
    m1, m2, m3 = (fleet.ids[name] for name in ("m1", "m2", "m3"))
    for other in (m2, m3):  # so that every unit starts on m1
        assert fleetctl("drain", "--no-block", other[:6]).returncode == 0
    for name in UNITS:
        fleetctl.write(name, unit())
    started = fleetctl("start", *UNITS)
    assert started.returncode == 0, started.stderr
    assert {fleet.machine_of(await fleet.client.units(), name) for name in UNITS} == {"m1"}
    for other in (m2, m3):
        undrained = fleetctl("undrain", other).stdout
        assert undrained.startswith(f"Machine {other[:8]}.../") and undrained.endswith(
            " undrained\n"
        )
    assert "STATE" not in fleetctl("list-machines").stdout  # an ordinary cluster's listing

    with never_twice(fleet, UNITS, every=0.3), at_most_one_between_machines(fleet, UNITS):
        drained = fleetctl("drain", "--block-attempts", "20", m1[:8])
    assert drained.returncode == 0, drained.stderr
    lines = drained.stdout.splitlines()
    assert lines[0].startswith(f"Machine {m1[:8]}.../") and "marked for draining" in lines[0]
    assert sorted(line.split()[1] for line in lines[1:]) == UNITS
    assert all(" moved to " in line and m1[:8] not in line for line in lines[1:])
    units = await fleet.client.units()
    for name in UNITS:
        assert fleet.active_on(name) == [fleet.machine_of(units, name)] != ["m1"]
    states = state_column(fleetctl("list-machines").stdout)
    assert states == {m1[:8]: "drained", m2[:8]: "schedulable", m3[:8]: "schedulable"}
    again = fleetctl("drain", m1)  # drained already: no error, nothing to wait for
    assert again.returncode == 0 and "already marked for draining" in again.stdout
    assert fleetctl("undrain", m1).returncode == 0
    assert {fleet.machine_of(await fleet.client.units(), n) for n in UNITS} != {"m1"}  # stay
    events = await fleet.client.registry.events()
    assert any(b'"machine.drained"' in page and m1.encode() in page for page in events[0])


async def test_drain_refusals_force_and_undrain(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    m2 = fleet.ids["m2"]
    fleetctl.write("pinned.service", unit(f"MachineID={m2}"))
    assert fleetctl("start", "pinned.service").returncode == 0

    unknown = fleetctl("drain", "ffffffff")
    assert (unknown.returncode, unknown.stderr) == (1, "Machine ffffffff not found\n")
    refused = fleetctl("drain", m2[:8])
    assert refused.returncode == 1
    assert f"refusing to drain machine {m2}: unit pinned.service can run on no other " in (
        refused.stderr
    )
    assert "is not MachineID" in refused.stderr
    assert await fleet.client.registry.drains() == {}  # nothing written

    forced = fleetctl("drain", "--force", "--block-attempts", "5", m2[:8])
    assert forced.returncode == 0, forced.stderr
    assert f"Unit pinned.service stays on {m2[:8]}.../" in forced.stdout
    assert set(await fleet.client.registry.drains()) == {m2}
    units = await fleet.client.wait_until(
        lambda u: (u["pinned.service"].reason or "").startswith(DRAIN_STAYS), 10
    )
    assert units["pinned.service"].machine == m2 and fleet.active_on("pinned.service") == ["m2"]
    listing = fleetctl("list-machines", "--fields", "machine,state", "--no-legend").stdout
    assert f"{m2[:8]}...\tdrained" in listing.splitlines()
    assert fleetctl("list-machines", "-o", "json").stdout.count('"state": "schedulable"') == 2

    assert fleetctl("undrain", m2[:8]).stdout.endswith(" undrained\n")
    not_drained = fleetctl("undrain", m2)
    assert not_drained.returncode == 0
    assert not_drained.stdout.endswith(" is not drained\n")
    assert fleetctl("undrain", "ffffffff").returncode == 1
    await fleet.client.wait_until(lambda u: not u["pinned.service"].reason, 10)


async def test_the_update_coordinators_drain_moves_units_and_its_undrain_clears_the_mark(
    fleet: FleetCluster, tmp_path: Path
) -> None:
    """flotilla-update drains through fleet's etcd driver in its own process, on fleet.conf's
    etcd: the units move away and never run twice; undrain takes the mark away."""
    conf = tmp_path / "fleet.conf"
    conf.write_text(f"etcd_servers={fleet.lab.host_etcd_endpoint}\n")
    await fleet.client.start(UNITS, dict.fromkeys(UNITS, unit()))
    units = await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in UNITS), 30)
    machine = units[UNITS[0]].machine
    assert machine is not None
    coordinator_fleet = FleetOverEtcd(conf)
    with never_twice(fleet, UNITS, every=0.3):
        await coordinator_fleet.drain(machine)
    assert set(await fleet.client.registry.drains()) == {machine}
    name = fleet.names[machine]
    for unit_name in UNITS:
        assert len(on := fleet.active_on(unit_name)) == 1 and on != [name]
    await coordinator_fleet.undrain(machine)
    assert await fleet.client.registry.drains() == {}
