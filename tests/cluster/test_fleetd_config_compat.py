"""fleetd on a lab machine as a fleet user runs it: a fleet.conf with fleet's keys Flotilla does
not act on and an unknown key starts fleetd with warnings in the journal, and SIGUSR1 dumps the
agent's and the engine's state to the journal."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from .fleet import FleetCluster, unit

pytestmark = pytest.mark.cluster
DUMP_PREFIX = "state dump: "


def fleetd_messages(fleet: FleetCluster, machine: str) -> list[str]:
    return fleet.lab.journal_text(machine, ["-u", "fleetd", "-o", "cat"]).splitlines()


async def journal_line(fleet: FleetCluster, machine: str, prefix: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in fleetd_messages(fleet, machine) if line.startswith(prefix)]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no line starting {prefix!r} in fleetd's journal"
        await asyncio.sleep(0.2)


@pytest.mark.machines(1)
async def test_sigusr1_dumps_the_agent_and_engine_state_to_the_journal(
    fleet: FleetCluster,
) -> None:
    await fleet.client.start(["dumped.service"], {"dumped.service": unit()})
    await fleet.client.wait_until(lambda u: u["dumped.service"].active_on(), 20)
    fleet.systemctl("m1", "kill", "--kill-whom=main", "--signal=USR1", "fleetd.service")

    dump = json.loads((await journal_line(fleet, "m1", DUMP_PREFIX)).removeprefix(DUMP_PREFIX))
    agent, engine = dump["agent"], dump["engine"]
    assert agent["machine"] == fleet.ids["m1"]
    dumped = agent["units"]["dumped.service"]
    assert dumped["desired"] == "launched" and dumped["started"] is True
    assert dumped["state"] == "loaded/active/running"
    assert dumped["loaded_hash"] == dumped["assigned_hash"]
    assert engine["enabled"] is True and engine["leader"] is True  # the only machine leads
    assert engine["last_pass"] is not None
    assert fleet.systemctl("m1", "is-active", "fleetd.service") == "active"  # and runs on


@pytest.mark.machines(1)
async def test_fleet_conf_with_fleets_keys_and_an_unknown_key_starts_with_warnings(
    fleet: FleetCluster,
) -> None:
    fleet.configure("m1", token_limit="50", enable_grpc="true", colour="blue")
    conf = fleet.lab.run("m1", ["cat", "/etc/fleet/fleet.conf"]).stdout.splitlines()
    colour_line = conf.index("colour=blue") + 1
    fleet.systemctl("m1", "restart", "fleetd.service")

    # Logged before READY=1, so by the time `restart` returns; journald may take a moment.
    await journal_line(fleet, "m1", f"/etc/fleet/fleet.conf:{colour_line}: unknown key")
    messages = fleetd_messages(fleet, "m1")
    compatibility = [m for m in messages if "is accepted for compatibility with fleet" in m]
    assert len([m for m in compatibility if "token_limit" in m]) == 1, compatibility
    assert len([m for m in compatibility if "enable_grpc" in m]) == 1, compatibility
    assert all("has no effect" in m for m in compatibility)
    unknown = [m for m in messages if "unknown key 'colour'" in m]
    assert unknown == [f"/etc/fleet/fleet.conf:{colour_line}: unknown key 'colour', ignored"]
    assert fleet.systemctl("m1", "is-active", "fleetd.service") == "active"
    deadline = time.monotonic() + 20
    while fleet.ids["m1"] not in await fleet.client.machines():
        assert time.monotonic() < deadline, "fleetd did not register with this fleet.conf"
        await asyncio.sleep(0.1)
