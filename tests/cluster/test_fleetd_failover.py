"""fleetd when things break: machines die, the leader dies, fleetd dies, the network splits,
etcd goes away. A sampler checks systemd on every machine every 0.5 s throughout: a non-global
unit must never be active on two machines at once."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fleetd.guard import PEER_REFRESH_SECONDS
from fleetd.machine_plan import RUNNING_STATES as RUNNING

from .fleet import SLEEPER, FleetCluster, never_twice, unit

pytestmark = pytest.mark.cluster

SAMPLE_EVERY = 0.25  # never_twice's period where a double run would be short


async def start_one(fleet: FleetCluster, name: str, x_fleet: str = "") -> str:
    """Start a unit; the machine it runs on."""
    await fleet.client.start([name], {name: unit(x_fleet)})
    units = await fleet.client.wait_until(lambda u: u[name].active_on(), 20)
    return fleet.machine_of(units, name)


async def wait_active_elsewhere(
    fleet: FleetCluster, name: str, old: str, timeout: float
) -> tuple[str, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        where = [m for m in fleet.active_on(name) if m != old]
        if where:
            return where[0], time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} not active anywhere but {old} after {timeout}s")


async def wait_stopped_on(fleet: FleetCluster, name: str, machine: str, within: float) -> float:
    """Seconds until systemd on `machine` no longer runs `name`; fails after `within`."""
    started = time.monotonic()
    while fleet.systemctl(machine, "is-active", name) in RUNNING:
        elapsed = time.monotonic() - started
        assert elapsed < within, f"{name} still runs on {machine} after {elapsed:.1f}s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def wait_running_once(fleet: FleetCluster, name: str, timeout: float) -> str:
    """The one machine running `name` once the cluster settled: the same one for a TTL."""
    deadline = time.monotonic() + timeout
    while True:
        where = fleet.active_on(name)
        if len(where) == 1:
            await asyncio.sleep(fleet.ttl)
            if fleet.active_on(name) == where:
                return where[0]
        assert time.monotonic() < deadline, f"{name} runs on {where}, not on one machine"
        await asyncio.sleep(0.2)


def fleetd_pid(fleet: FleetCluster, machine: str) -> str:
    return fleet.systemctl(machine, "show", "-p", "MainPID", "--value", "fleetd.service")


def backstop_fenced(fleet: FleetCluster, machine: str) -> bool:
    journal = fleet.lab.journal_text(machine, ["-u", "fleetd-backstop"])
    return bool(re.search(r"fleetd-backstop\[\d+\]: fencing: fleetd has not renewed", journal))


@contextmanager
def starved(fleet: FleetCluster, machine: str, run: float, every: float) -> Iterator[None]:
    """fleetd's cgroup gets `run` seconds of CPU time `every` seconds, as a cpu.max quota or a
    CPU hog of higher weight would leave it. The lab's machines have no cpu controller, so the
    cgroup freezer does the throttling; it holds a fleetd that systemd restarts meanwhile too."""
    freeze = "/sys/fs/cgroup/system.slice/fleetd.service/cgroup.freeze"
    loop = (
        f"while :; do echo 1 > {freeze}; sleep {every - run}; echo 0 > {freeze}; sleep {run}; done"
    )
    fleet.lab.run(machine, ["systemd-run", "--unit=starver", "--", "sh", "-c", loop])
    try:
        yield
    finally:
        fleet.systemctl(machine, "stop", "starver.service")
        fleet.lab.run(machine, ["sh", "-c", f"echo 0 > {freeze}"], check=False)


@contextmanager
def crash_looping(fleet: FleetCluster, machine: str) -> Iterator[None]:
    """fleetd dies as soon as systemd starts it, over and over."""
    loop = "while :; do systemctl kill --signal=KILL fleetd.service 2>/dev/null; sleep 0.1; done"
    fleet.lab.run(machine, ["systemd-run", "--unit=crasher", "--", "sh", "-c", loop])
    try:
        yield
    finally:
        fleet.systemctl(machine, "stop", "crasher.service")


async def test_killed_machine_units_start_elsewhere(fleet: FleetCluster) -> None:
    victim = await start_one(fleet, "web.service")
    with never_twice(fleet, ["web.service"]):
        fleet.lab.kill(victim)
        where, seconds = await wait_active_elsewhere(fleet, "web.service", victim, fleet.ttl + 10)
    assert where != victim
    # How fast is bench/fleet_failover.py's question; here only that it happens after the lease
    # could expire, never before.
    assert seconds >= 0.5 * fleet.ttl, f"moved after {seconds:.1f}s, before the lease could expire"


async def test_killing_the_leaders_machine_hands_leadership_over(fleet: FleetCluster) -> None:
    leader_id = await fleet.registry.leader()
    leader = fleet.names[leader_id]
    pinned = await start_one(fleet, "on-leader.service", f"MachineID={leader_id}")
    assert pinned == leader
    other = await start_one(fleet, "movable.service", f"MachineID={leader_id[:8]}")
    assert other == leader
    fleet.lab.kill(leader)
    deadline = time.monotonic() + fleet.ttl + 10
    while (new_leader := await fleet.registry.leader()) in (None, leader_id):
        assert time.monotonic() < deadline, "no new engine leader"
        await asyncio.sleep(0.1)
    assert fleet.names[new_leader] != leader
    # Scheduling goes on under the new leader.
    assert await start_one(fleet, "after.service") != leader
    units = await fleet.client.wait_until(lambda u: u["on-leader.service"].reason is not None, 20)
    assert "MachineID" in units["on-leader.service"].reason


async def test_sigkill_and_restart_of_fleetd_restarts_no_unit(fleet: FleetCluster) -> None:
    machine = await start_one(fleet, "steady.service")
    pid = fleet.main_pid(machine, "steady.service")
    fleet.systemctl(machine, "kill", "--signal=KILL", "fleetd.service")
    # systemd restarts fleetd (Restart=always); it must adopt the running unit, not restart it.
    deadline = time.monotonic() + 15
    while fleet.systemctl(machine, "show", "-p", "NRestarts", "--value", "fleetd.service") == "0":
        assert time.monotonic() < deadline, "fleetd was not restarted"
        await asyncio.sleep(0.1)
    await asyncio.sleep(2 * fleet.ttl)
    assert fleet.systemctl(machine, "is-active", "fleetd.service") == "active"
    assert fleet.main_pid(machine, "steady.service") == pid
    assert fleet.active_on("steady.service") == [machine]


async def test_graceful_stop_moves_units_at_once(fleet: FleetCluster) -> None:
    machine = await start_one(fleet, "mover.service")
    with never_twice(fleet, ["mover.service"]):
        started = time.monotonic()
        fleet.systemctl(machine, "stop", "fleetd.service")
        where, _ = await wait_active_elsewhere(fleet, "mover.service", machine, fleet.ttl + 10)
    assert time.monotonic() - started < fleet.ttl, "a graceful stop should not wait for the TTL"
    assert where != machine


async def test_a_leave_whose_unit_will_not_stop_leaves_the_lease_to_expire(
    fleet: FleetCluster,
) -> None:
    """A graceful stop revokes the lease only once its units are stopped: one that systemd
    will not stop (here RefuseManualStop; at a poweroff, systemd's own stop jobs) keeps the
    machine registered until the backstop has it down, and only then does the unit move."""
    name = "stubborn.service"
    body = "[Unit]\nRefuseManualStop=yes\n\n" + SLEEPER
    await fleet.client.start([name], {name: body})
    units = await fleet.client.wait_until(lambda u: u[name].active_on(), 20)
    machine = fleet.machine_of(units, name)
    with never_twice(fleet, [name], every=SAMPLE_EVERY):
        fleet.systemctl(machine, "stop", "fleetd.service")
        assert fleet.ids[machine] in await fleet.client.machines()  # the lease was not revoked
        where, _ = await wait_active_elsewhere(fleet, name, machine, fleet.ttl + 15)
    assert where != machine
    journal = fleet.lab.journal_text(machine, ["-u", "fleetd"])
    assert "leaving with units still running (stubborn.service)" in journal


@pytest.mark.agent_ttl(5)
async def test_partitioned_machine_stops_its_units_and_they_run_once_after_heal(
    fleet: FleetCluster,
) -> None:
    cut = await start_one(fleet, "solo.service")
    everywhere = await fleet.client.start(["all.service"], {"all.service": unit("Global=true")})
    assert everywhere is None
    await fleet.client.wait_until(lambda u: len(u["all.service"].active_on()) == 3, 20)
    with never_twice(fleet, ["solo.service"]):
        started = time.monotonic()
        fleet.lab.partition(cut)
        while fleet.systemctl(cut, "is-active", "solo.service") == "active":
            assert time.monotonic() - started < fleet.ttl, (
                "the cut-off machine kept its unit past its TTL"
            )
            await asyncio.sleep(0.1)
        await wait_active_elsewhere(fleet, "solo.service", cut, fleet.ttl + 10)
        # Global units are not fenced: they never run anywhere else.
        assert fleet.systemctl(cut, "is-active", "all.service") == "active"
        fleet.lab.heal(cut)
        await asyncio.sleep(2 * fleet.ttl)
    assert len(fleet.active_on("solo.service")) == 1
    assert cut not in fleet.active_on("solo.service")


@pytest.mark.agent_ttl(3)
async def test_etcd_outage_for_three_ttls_stops_and_moves_nothing(fleet: FleetCluster) -> None:
    names = [f"keep{i}.service" for i in range(3)]
    await fleet.client.start(names, {name: unit() for name in names})
    units = await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in names), 20)
    where = {name: fleet.machine_of(units, name) for name in names}
    pids = {name: fleet.main_pid(where[name], name) for name in names}
    with never_twice(fleet, names):
        fleet.lab.stop_etcd()
        await asyncio.sleep(3 * fleet.ttl)
        for name in names:
            assert fleet.active_on(name) == [where[name]], f"{name} stopped during the etcd outage"
        fleet.lab.start_etcd()
        await asyncio.sleep(3 * fleet.ttl)
    units = await fleet.client.units()
    assert {name: fleet.machine_of(units, name) for name in names} == where
    assert {name: fleet.main_pid(where[name], name) for name in names} == pids
    for machine in ("m1", "m2", "m3"):
        journal = fleet.lab.journal_text(machine, ["-u", "fleetd"])
        assert not re.search(r"fleetd\[\d+\]: fencing:", journal), journal


@pytest.mark.agent_ttl(3)
async def test_stopped_fleetd_stops_its_units_before_they_run_elsewhere(
    fleet: FleetCluster,
) -> None:
    """fleetd's main process SIGSTOPped for 2 TTLs. Its watchdog (0.4 TTL) has systemd replace
    it; if the lease deadline passes first, the backstop stops its units. Either way the unit
    never runs twice, and runs once afterwards."""
    frozen = await start_one(fleet, "frozen.service")
    pid = fleetd_pid(fleet, frozen)
    with never_twice(fleet, ["frozen.service"], every=SAMPLE_EVERY):
        fleet.lab.run(frozen, ["kill", "-STOP", pid])
        await asyncio.sleep(2 * fleet.ttl)
        fleet.lab.run(frozen, ["kill", "-CONT", pid], check=False)  # gone if replaced
        await wait_running_once(fleet, "frozen.service", 4 * fleet.ttl)
    assert fleet.systemctl(frozen, "is-active", "fleetd.service") == "active"


@pytest.mark.agent_ttl(3)
async def test_starved_fleetd_stops_its_units_before_they_run_elsewhere(
    fleet: FleetCluster,
) -> None:
    """fleetd gets 10 ms of CPU every TTL: its lease expires and the unit moves, but the
    backstop stopped it first."""
    starving = await start_one(fleet, "starving.service")
    with never_twice(fleet, ["starving.service"], every=SAMPLE_EVERY):
        with starved(fleet, starving, run=0.01, every=fleet.ttl):
            await wait_stopped_on(fleet, "starving.service", starving, within=fleet.ttl)
            where, _ = await wait_active_elsewhere(
                fleet, "starving.service", starving, fleet.ttl + 10
            )
        # Fed again, fleetd (replaced by systemd meanwhile) catches up and leaves it there.
        assert await wait_running_once(fleet, "starving.service", 4 * fleet.ttl) == where
    assert backstop_fenced(fleet, starving)


@pytest.mark.agent_ttl(3)
async def test_units_of_a_killed_fleetd_systemd_cannot_restart_stop_within_the_ttl(
    fleet: FleetCluster,
) -> None:
    orphaned = await start_one(fleet, "orphan.service")
    with never_twice(fleet, ["orphan.service"], every=SAMPLE_EVERY):
        fleet.systemctl(orphaned, "mask", "--runtime", "fleetd.service")
        fleet.systemctl(orphaned, "kill", "--signal=KILL", "fleetd.service")
        await wait_stopped_on(fleet, "orphan.service", orphaned, within=fleet.ttl)
        where, _ = await wait_active_elsewhere(fleet, "orphan.service", orphaned, fleet.ttl + 10)
        assert fleet.systemctl(orphaned, "is-active", "fleetd.service") != "active"
        fleet.systemctl(orphaned, "unmask", "--runtime", "fleetd.service")
        fleet.systemctl(orphaned, "start", "fleetd.service")
        assert await wait_running_once(fleet, "orphan.service", 4 * fleet.ttl) == where
    assert backstop_fenced(fleet, orphaned)


@pytest.mark.agent_ttl(3)
async def test_crash_looping_fleetd_stops_its_units_and_systemd_never_gives_up(
    fleet: FleetCluster,
) -> None:
    looping = await start_one(fleet, "looped.service")
    with never_twice(fleet, ["looped.service"], every=SAMPLE_EVERY):
        with crash_looping(fleet, looping):
            await wait_stopped_on(fleet, "looped.service", looping, within=fleet.ttl)
            where, _ = await wait_active_elsewhere(fleet, "looped.service", looping, fleet.ttl + 10)
            # A start a second, past systemd's default start limit (5 starts in 10 s, which a
            # busy lab machine may stay under, hence the setting too)...
            limit = fleet.systemctl(
                looping, "show", "-p", "StartLimitIntervalUSec", "--value", "fleetd.service"
            )
            assert limit in ("0", "infinity"), f"systemd gives up on fleetd: {limit}"
            deadline = time.monotonic() + 30
            while int(fleet.systemctl(looping, "show", "-p", "NRestarts", "--value", "fleetd")) < 8:
                assert time.monotonic() < deadline, "systemd stopped restarting fleetd"
                await asyncio.sleep(0.5)
        # ...so that fleetd is back by itself once whatever killed it is gone.
        deadline = time.monotonic() + 15
        while fleet.systemctl(looping, "is-active", "fleetd.service") != "active":
            assert time.monotonic() < deadline, "fleetd did not come back by itself"
            await asyncio.sleep(0.2)
        assert await wait_running_once(fleet, "looped.service", 4 * fleet.ttl) == where
    assert backstop_fenced(fleet, looping)


async def test_the_backstop_stands_down_when_fleetd_leaves_or_does_not_fence(
    fleet: FleetCluster,
) -> None:
    def has_deadline(machine: str) -> bool:
        return (
            fleet.lab.run(machine, ["test", "-e", "/run/fleet/deadline"], check=False).returncode
            == 0
        )

    assert all(has_deadline(machine) for machine in ("m1", "m2", "m3"))
    fleet.configure("m2", fencing="false")
    fleet.systemctl("m2", "restart", "fleetd.service")
    fleet.systemctl("m3", "stop", "fleetd.service")  # leaves the cluster
    await fleet.client.start(
        ["kept.service"], {"kept.service": unit(f"MachineID={fleet.ids['m2']}")}
    )
    await fleet.client.wait_until(lambda u: u["kept.service"].active_on(), 20)
    await asyncio.sleep(2 * fleet.ttl)
    assert has_deadline("m1")
    assert not has_deadline("m2")
    assert not has_deadline("m3")
    assert fleet.active_on("kept.service") == ["m2"]
    assert not backstop_fenced(fleet, "m2")
    assert not backstop_fenced(fleet, "m3")


@pytest.mark.agent_ttl(5)
async def test_fencing_follows_a_new_address(fleet: FleetCluster) -> None:
    """m1 takes its address from its interface (no public_ip) and gets a new one, as from a
    DHCP server: fleetd publishes it and answers its peers there, so an etcd outage right
    after stops nothing (a peer that does not answer counts as being on etcd's side)."""
    old = fleet.lab.require_state().machine("m1").ip  # type: ignore[union-attr]
    new = old.rsplit(".", 1)[0] + f".{int(old.rsplit('.', 1)[1]) + 100}"
    fleet.configure("m1", public_ip="")
    fleet.systemctl("m1", "restart", "fleetd.service")
    # Deleting the old address first: it would take a second one in its subnet with it.
    renumber = f"ip addr del {old}/24 dev eth0 && ip addr add {new}/24 dev eth0"
    fleet.lab.run("m1", ["sh", "-c", renumber])
    deadline = time.monotonic() + 30
    while (machine := (await fleet.client.machines()).get(fleet.ids["m1"])) is None or (
        machine.ip != new
    ):
        assert time.monotonic() < deadline, f"m1 is not published at {new}"
        await asyncio.sleep(0.2)
    await asyncio.sleep(PEER_REFRESH_SECONDS + 1)  # every peer has the new address
    names = {f"on-{name}.service": name for name in ("m1", "m2", "m3")}
    await fleet.client.start(
        list(names), {u: unit(f"MachineID={fleet.ids[m]}") for u, m in names.items()}
    )
    await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in names), 20)
    fleet.lab.stop_etcd()
    await asyncio.sleep(3 * fleet.ttl)
    running = {name: fleet.active_on(name) for name in names}
    fleet.lab.start_etcd()
    assert running == {name: [machine] for name, machine in names.items()}


async def test_fleetd_refuses_a_bad_config(fleet: FleetCluster) -> None:
    result = fleet.lab.run("m1", ["fleetd", "--agent_ttl=soon"], check=False)
    assert result.returncode == 1
    assert "agent_ttl: invalid duration 'soon'" in result.stderr
