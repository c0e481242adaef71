"""fleetctl (etcd driver) against fleetd on a lab: fleet's commands, lines and tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fleet import FleetCluster

pytestmark = pytest.mark.cluster
FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))


def fleetctl(fleet: FleetCluster, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLEETCTL_DRIVER": "etcd",
        "FLEETCTL_ENDPOINT": fleet.lab.host_etcd_endpoint,
    }
    return subprocess.run(
        [FLEETCTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


async def test_fleetctl_drives_units_through_their_life(
    fleet: FleetCluster, tmp_path: Path
) -> None:
    (tmp_path / "hello.service").write_text(
        "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    )
    (tmp_path / "tick@.service").write_text("[Service]\nExecStart=/bin/sleep %i\n")
    ids = {machine_id: name for name, machine_id in fleet.ids.items()}

    submitted = fleetctl(fleet, tmp_path, "submit", "hello.service")
    assert submitted.stdout == "Unit hello.service inactive\n"
    started = fleetctl(fleet, tmp_path, "start", "hello", "tick@7")
    assert started.returncode == 0, started.stderr
    lines = sorted(rows(started.stdout))  # printed as each unit gets there
    assert [line[:3] for line in lines] == [
        ["Unit", "hello.service", "launched"],
        ["Unit", "tick@7.service", "launched"],
    ]
    where = lines[0][4]  # <id8>.../<ip>
    machine = next(name for machine_id, name in ids.items() if where.startswith(machine_id[:8]))
    assert fleet.active_on("hello.service") == [machine]

    files = fleetctl(fleet, tmp_path, "list-unit-files")
    assert rows(files.stdout)[0] == ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"]
    assert rows(files.stdout)[1][:4] == [
        "hello.service",
        rows(files.stdout)[1][1],
        "launched",
        "launched",
    ]
    assert "\t" in files.stdout  # tab-aligned like fleet's tabwriter
    units = rows(fleetctl(fleet, tmp_path, "list-units", "--no-legend").stdout)
    assert units == [
        ["hello.service", where, "active", "running"],
        ["tick@7.service", units[1][1], "active", "running"],
    ]
    machines = rows(fleetctl(fleet, tmp_path, "list-machines", "--full", "--no-legend").stdout)
    assert sorted(row[0] for row in machines) == sorted(fleet.ids.values())
    assert (
        fleetctl(fleet, tmp_path, "cat", "hello").stdout
        == ("[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep infinity") + "\n"
    )

    stopped = fleetctl(fleet, tmp_path, "stop", "hello")
    assert stopped.stdout == f"Unit hello.service loaded on {where}\n"
    assert fleet.systemctl(machine, "is-active", "hello.service") == "inactive"
    destroyed = fleetctl(fleet, tmp_path, "destroy", "hello", "tick@7", "nosuch")
    assert destroyed.stdout == "Destroyed hello.service\nDestroyed tick@7.service\n"
    assert fleetctl(fleet, tmp_path, "list-unit-files", "--no-legend").stdout == ""


async def test_fleetctl_errors(fleet: FleetCluster, tmp_path: Path) -> None:
    (tmp_path / "mars.service").write_text(
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=region=mars\n"
    )
    unplaceable = fleetctl(fleet, tmp_path, "start", "mars.service")
    assert unplaceable.returncode == 1
    assert unplaceable.stderr == (
        "Error waiting for units: unit mars.service cannot be placed: "
        "no machine matches MachineMetadata region=mars\n"
    )
    missing = fleetctl(fleet, tmp_path, "start", "nosuch.service")
    assert missing.returncode == 1 and missing.stderr.startswith("Error creating units: ")
    assert fleetctl(fleet, tmp_path, "stop", "nosuch").stderr == "Units not found in registry\n"
    bad_field = fleetctl(fleet, tmp_path, "list-units", "--fields", "unit,colour")
    assert (bad_field.returncode, bad_field.stderr) == (
        1,
        'Invalid key in output format: "colour"\n',
    )
    assert fleetctl(fleet, tmp_path, "no-such-command").returncode == 2
    no_api = subprocess.run(
        [FLEETCTL, "list-units"],
        capture_output=True,
        text=True,
        env={**os.environ, "FLEETCTL_DRIVER": "API"},
    )
    assert no_api.returncode == 1 and "--driver=etcd" in no_api.stderr


async def test_restart_and_replace(fleet: FleetCluster, tmp_path: Path) -> None:
    (tmp_path / "web.service").write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    (tmp_path / "agent.service").write_text(
        "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n"
    )
    assert fleetctl(fleet, tmp_path, "start", "web.service").returncode == 0
    started = fleetctl(fleet, tmp_path, "start", "agent.service")
    assert started.stdout == "Triggered global unit agent.service start\n"
    await fleet.client.wait_until(lambda u: len(u["agent.service"].active_on()) == 3, 20)
    machine = fleet.active_on("web.service")[0]
    web_pid = fleet.main_pid(machine, "web.service")
    agent_pids = {m: fleet.main_pid(m, "agent.service") for m in ("m1", "m2", "m3")}

    restarted = fleetctl(fleet, tmp_path, "restart", "web.service", "agent.service")
    assert restarted.returncode == 0, restarted.stderr
    assert fleet.active_on("web.service") == [machine]
    assert fleet.main_pid(machine, "web.service") != web_pid
    assert fleet.active_on("agent.service") == ["m1", "m2", "m3"]
    assert all(fleet.main_pid(m, "agent.service") != pid for m, pid in agent_pids.items())

    (tmp_path / "web.service").write_text("[Service]\nExecStart=/bin/sleep 86400\n")
    kept = fleetctl(fleet, tmp_path, "start", "web.service")
    assert "differs from local unit file web.service. Add --replace to override." in kept.stderr
    assert "sleep infinity" in fleetctl(fleet, tmp_path, "cat", "web.service").stdout
    replaced = fleetctl(fleet, tmp_path, "start", "--replace", "web.service")
    assert replaced.returncode == 0, replaced.stderr
    assert "sleep 86400" in fleetctl(fleet, tmp_path, "cat", "web.service").stdout
    units = await fleet.client.wait_until(
        lambda u: any(
            s.hash == u["web.service"].hash and s.active == "active"
            for s in u["web.service"].states.values()
        ),
        20,
    )
    where = fleet.names[units["web.service"].machine]
    assert "sleep 86400" in fleet.systemctl(where, "show", "-p", "ExecStart", "web.service")
