"""The event history on a lab, through `fleetctl events` with both drivers: a killed machine's
unit moves and the event says from where, to where and why; the history survives fleetd
restarts; the keyspace stays within each machine's limit while units churn; --follow shows new
events live; bad filters fail clearly."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest

from fleetd.events import Event, EventFilter, decode_page
from fleetd.events_store import EventReader
from fleetd.model import DesiredState

from .fleet import FleetCluster, unit
from .test_fleetctl import FLEETCTL, HOST_ENV, Fleetctl, fleetctl
from .test_fleetd_failover import wait_active_elsewhere

__all__ = ["fleetctl"]  # the fixture, parametrized over both drivers
pytestmark = pytest.mark.cluster
EU = "MachineMetadata=region=eu"  # m2 or m3: never m1, where the API driver's fleetctl runs


def json_events(fleetctl: Fleetctl, *args: str) -> list[dict[str, object]]:
    done = fleetctl("events", "--output", "json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def wait_for_events(
    fleetctl: Fleetctl, wanted: str, *args: str, timeout: float = 20
) -> list[dict[str, object]]:
    """The events once one of kind `wanted` is among them."""
    deadline = time.monotonic() + timeout
    while True:
        found = json_events(fleetctl, *args)
        if any(event["kind"] == wanted for event in found):
            return found
        assert time.monotonic() < deadline, f"no {wanted} event after {timeout}s: {found}"
        await asyncio.sleep(0.5)


async def start_in_eu(fleet: FleetCluster, name: str) -> str:
    await fleet.client.start([name], {name: unit(EU)})
    units = await fleet.client.wait_until(lambda u: u[name].active_on(), 20)
    return fleet.machine_of(units, name)


async def test_a_killed_machines_unit_moved_and_the_event_says_why(
    fleet: FleetCluster, fleetctl: Fleetctl
) -> None:
    name = "mover.service"
    old = await start_in_eu(fleet, name)
    fleet.lab.kill(old)
    new, _ = await wait_active_elsewhere(fleet, name, old, 30)
    found = await wait_for_events(fleetctl, "unit.moved", "--unit", "mover")
    kinds = [event["kind"] for event in found]
    assert kinds.index("unit.placed") < kinds.index("unit.moved")
    moved = next(event for event in found if event["kind"] == "unit.moved")
    assert (moved["from"], moved["to"]) == (fleet.ids[old], fleet.ids[new])
    assert "went away" in str(moved["reason"])
    started = await wait_for_events(fleetctl, "unit.started", "--machine", fleet.ids[new][:8])
    assert any(e["kind"] == "unit.started" and e["unit"] == name for e in started)
    about_old = await wait_for_events(fleetctl, "machine.expired", "--machine", fleet.ids[old])
    assert [e["kind"] for e in about_old if e["machine"] == fleet.ids[old]][-1] == (
        "machine.expired"
    )
    table = fleetctl("events", "--unit", name)
    assert table.returncode == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines()]
    assert lines[0] == ["TIME", "KIND", "UNIT", "MACHINE", "DETAIL"]
    assert any(
        row[1] == "unit.moved" and f"{fleet.ids[old][:8]} -> {fleet.ids[new][:8]}:" in " ".join(row)
        for row in lines[1:]
    )


async def test_the_history_survives_fleetd_restarts(fleet: FleetCluster) -> None:
    name = "steady.service"
    await start_in_eu(fleet, name)
    async with asyncio.timeout(20):
        while not any(e.kind == "unit.started" for e in await history(fleet)):
            await asyncio.sleep(0.3)
    before = await history(fleet)
    for machine in fleet.running_machines():  # a crash: systemd restarts fleetd, nothing moves
        fleet.systemctl(machine, "kill", "--signal=KILL", "fleetd.service")
    await asyncio.sleep(3 * fleet.ttl)
    after = await history(fleet)
    assert [e.id for e in after[: len(before)]] == [e.id for e in before]
    # A restarted fleetd does not tell again the start of a unit that never stopped.
    starts = [e for e in after if e.kind == "unit.started" and e.unit == name]
    assert len(starts) == 1, [(e.time, e.kind, e.unit, e.machine, e.reason) for e in after]
    # A graceful stop is a machine leaving, not a lease expiring.
    fleet.systemctl("m3", "stop", "fleetd.service")
    await asyncio.sleep(2 * fleet.ttl)
    about_m3 = [e.kind for e in await history(fleet) if e.machine == fleet.ids["m3"]]
    assert "machine.left" in about_m3 and "machine.expired" not in about_m3, about_m3


async def history(fleet: FleetCluster) -> list[Event]:
    return (await EventReader(fleet.registry).read(EventFilter()))[0]


async def test_the_keyspace_stays_within_each_machines_limit_while_units_churn(
    fleet: FleetCluster,
) -> None:
    limit = 15
    for machine in fleet.running_machines():
        fleet.configure(machine, events_limit=str(limit))
        fleet.systemctl(machine, "restart", "fleetd.service")
    await asyncio.sleep(2 * fleet.ttl)
    names = [f"churn{n}.service" for n in range(6)]
    bodies = {name: unit() for name in names}
    for _ in range(4):  # each round: placed + started, then stopped, per unit
        await fleet.client.start(names, bodies)
        await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in names), 30)
        await fleet.client.set_desired(names, DesiredState.INACTIVE)
        await fleet.client.wait_until(lambda u: not any(u[n].active_on() for n in names), 30)
    await asyncio.sleep(1)
    counts, keys = {}, {}
    for machine, machine_id in fleet.ids.items():
        pages = await fleet.registry.event_pages(machine_id)
        counts[machine] = sum(len(decode_page(raw)) for _, raw in pages)
        keys[machine] = len(pages)
    print(f"events per machine after churn: {counts}, in {keys} keys")
    assert all(0 < count <= limit for count in counts.values()), counts
    # The leader wrote a placement per unit and round (24): more than it keeps.
    placed = [e for e in await history(fleet) if e.kind == "unit.placed"]
    assert len(placed) < len(names) * 4


async def test_follow_prints_new_events_live(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    name = "live.service"
    await fleet.client.submit({name: unit(EU)})  # a unit the cluster knows, with no events yet
    args = ["events", "--follow", "--output", "json", "--unit", name, "--since", "1s"]
    follower = asyncio.create_task(asyncio.to_thread(follow_for, fleetctl, args, FOLLOW_SECONDS))
    await asyncio.sleep(3)  # the follower is connected
    await start_in_eu(fleet, name)
    printed = await asyncio.wait_for(follower, FOLLOW_SECONDS + 20)
    kinds = [json.loads(line)["kind"] for line in printed.splitlines()]
    assert "unit.placed" in kinds and "unit.started" in kinds, printed


FOLLOW_SECONDS = 12


def follow_for(fleetctl: Fleetctl, args: list[str], seconds: float) -> str:
    """What `fleetctl events --follow` printed before it was interrupted (as a user's Ctrl-C
    would) after `seconds`: on the host for the etcd driver, on m1 for the API."""
    if fleetctl.driver == "API":
        command = ["timeout", "-s", "INT", str(seconds), "fleetctl", *args]
        return fleetctl.fleet.lab.run("m1", command, check=False).stdout
    env = {**HOST_ENV, "FLEETCTL_DRIVER": "etcd"}
    env["FLEETCTL_ENDPOINT"] = fleetctl.fleet.lab.host_etcd_endpoint
    child = subprocess.Popen([FLEETCTL, *args], env=env, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = child.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGINT)
        try:
            out, _ = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # never let a stuck follower hang the suite
            child.kill()
            out, _ = child.communicate()
            stuck = f"fleetctl {' '.join(args)} ignored SIGINT; it printed {out!r}"
            raise AssertionError(stuck) from None
    return out


BAD_FILTERS = [
    (["--since", "10x"], "invalid --since '10x'"),
    (["--unit", "no-such"], "unknown unit no-such.service"),
    (["--machine", "zzzz"], "unknown machine zzzz"),
    (["--output", "yaml"], "Invalid value for '--output'"),
]


def test_bad_filters_fail_clearly(fleetctl: Fleetctl) -> None:
    for args, message in BAD_FILTERS:
        done = fleetctl("events", *args)
        assert done.returncode != 0, args
        assert message in done.stderr, (args, done.stderr)
        assert done.stdout == "", args
