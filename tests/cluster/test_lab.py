"""fleetlab on real systemd machines: boot, reach, kill, start, partition, heal, down; fleetd
as `fleetlab up --fleetd` runs it."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from pathlib import Path

import pytest

from fleetd.client import FleetClient
from fleetd.status_line import registered_machine
from fleetlab import network
from fleetlab.fleet import fleet_client, start_fleetd
from fleetlab.lab import Lab, LabError

pytestmark = pytest.mark.cluster


def can_ping(lab: Lab, source: str, address: str) -> bool:
    result = lab.run(source, ["ping", "-c", "1", "-W", "1", address], check=False)
    return result.returncode == 0


def etcd_reachable(lab: Lab, machine: str) -> bool:
    argv = [
        "etcdctl",
        "--dial-timeout=1s",
        "--command-timeout=2s",
        f"--endpoints={lab.layout.etcd_endpoint}",
        "endpoint",
        "health",
    ]
    return lab.run(machine, argv, check=False).returncode == 0


def ip_of(lab: Lab, machine: str) -> str:
    record = lab.require_state().machine(machine)
    assert record is not None
    return record.ip


def test_every_machine_boots_to_running(lab: Lab) -> None:
    for status in lab.status():
        if status.state == "degraded":
            failed = lab.run(status.name, ["systemctl", "--failed", "--no-legend"]).stdout
            pytest.fail(f"{status.name} is degraded; failed units:\n{failed}")
        assert status.state == "running", status
        assert status.connected


def test_machines_have_their_own_identity(lab: Lab) -> None:
    seen_ids = set()
    for record in lab.require_state().machines:
        assert lab.run(record.name, ["hostname"]).stdout.strip() == record.name
        machine_id = lab.run(record.name, ["cat", "/etc/machine-id"]).stdout.strip()
        assert machine_id == record.machine_id
        seen_ids.add(machine_id)
        address = lab.run(record.name, ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
        assert f" {record.ip}/24 " in address
    assert len(seen_ids) == 3


def test_machines_see_only_their_own_processes(lab: Lab) -> None:
    pids = lab.run("m1", ["ps", "-e", "-o", "pid=,comm="]).stdout.split("\n")
    assert pids[0].split() == ["1", "systemd"]
    assert not any("etcd" in line for line in pids)


def test_machines_reach_each_other_and_etcd_by_ip(lab: Lab) -> None:
    for source, target in itertools.permutations(["m1", "m2", "m3"], 2):
        assert can_ping(lab, source, ip_of(lab, target)), f"{source} cannot reach {target}"
    for machine in ("m1", "m2", "m3"):
        assert etcd_reachable(lab, machine), f"{machine} cannot reach etcd"


def test_only_root_reaches_the_labs_etcd_from_the_host(lab: Lab) -> None:
    """etcd has no authentication in the lab: another user on the host could run units as
    root on every machine through the forwarded port."""
    port = lab.require_state().etcd_host_port
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    as_root = subprocess.run(["/usr/bin/python3", "-c", connect], capture_output=True, text=True)
    assert as_root.returncode == 0, as_root.stderr
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    as_nobody = subprocess.run(
        [*nobody, "/usr/bin/python3", "-c", connect], capture_output=True, text=True
    )
    assert "ConnectionRefusedError" in as_nobody.stderr


def test_machines_have_no_route_out(lab: Lab) -> None:
    routes = lab.run("m1", ["ip", "route", "show"]).stdout
    assert "default" not in routes
    assert lab.run("m1", ["ip", "route", "get", "192.0.2.1"], check=False).returncode != 0


def test_machine_sees_the_project_source_read_only(lab: Lab) -> None:
    assert (
        lab.run("m1", ["python3", "-c", "import fleetlab.layout, aetcd, dbus_fast"]).returncode == 0
    )
    write = lab.run("m1", ["touch", "/usr/lib/flotilla/src/written-by-a-machine"], check=False)
    assert write.returncode != 0 and "Read-only" in write.stderr


def test_kill_makes_the_machine_vanish_and_start_brings_it_back(lab: Lab) -> None:
    before = lab.run("m2", ["cat", "/etc/machine-id"]).stdout
    lab.kill("m2")
    assert {s.name: s.state for s in lab.status()}["m2"] == "down"
    assert not can_ping(lab, "m1", ip_of(lab, "m2"))
    with pytest.raises(LabError, match="is down"):
        lab.run("m2", ["true"])
    assert lab.start("m2") in ("running", "degraded")
    assert lab.run("m2", ["cat", "/etc/machine-id"]).stdout == before
    assert lab.run("m2", ["hostname"]).stdout.strip() == "m2"
    assert can_ping(lab, "m1", ip_of(lab, "m2"))


def test_stop_powers_off_cleanly_and_the_journal_stays_readable(lab: Lab) -> None:
    lab.stop("m3")
    assert {s.name: s.state for s in lab.status()}["m3"] == "down"
    assert "Reached target poweroff.target" in lab.journal_text("m3")
    assert lab.start("m3") in ("running", "degraded")


async def wait_listed(client: FleetClient, machine_id: str, listed: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (machine_id in await client.machines()) != listed:
        assert time.monotonic() < deadline, f"{machine_id} listed={not listed} after {timeout}s"
        await asyncio.sleep(0.1)


@pytest.mark.machines(2)
async def test_fleetd_comes_back_on_every_boot_after_kill_and_after_stop(lab: Lab) -> None:
    agent_ttl = 3.0
    start_fleetd(lab, agent_ttl)  # what `fleetlab up --fleetd` does
    record = lab.require_state().machine("m2")
    assert record is not None
    async with fleet_client(lab) as client:
        for power_off in (lab.kill, lab.stop):
            power_off("m2")
            await wait_listed(client, record.machine_id, listed=False, timeout=agent_ttl + 10)
            lab.start("m2")
            fleetd = lab.run("m2", ["systemctl", "is-active", "fleetd.service"], check=False)
            assert fleetd.stdout.strip() == "active", f"after {power_off.__name__}: {fleetd}"
            # Booted means fleetd is up; registering takes it well under one agent_ttl.
            await wait_listed(client, record.machine_id, listed=True, timeout=agent_ttl)
            # And it says so to systemd (the update agent's health check reads this).
            shown = lab.run("m2", ["systemctl", "show", "-P", "StatusText", "fleetd.service"])
            assert registered_machine(shown.stdout.strip()) == record.machine_id, shown.stdout


def test_partition_cuts_off_only_that_machine_and_heal_restores_it(lab: Lab) -> None:
    lab.partition("m3")
    assert not can_ping(lab, "m3", ip_of(lab, "m1"))
    assert not etcd_reachable(lab, "m3")
    assert can_ping(lab, "m1", ip_of(lab, "m2"))
    assert etcd_reachable(lab, "m1") and etcd_reachable(lab, "m2")
    assert {s.name: s.connected for s in lab.status()} == {"m1": True, "m2": True, "m3": False}
    lab.heal("m3")
    assert can_ping(lab, "m3", ip_of(lab, "m1"))
    assert etcd_reachable(lab, "m3")


def lab_leftovers(lab: Lab) -> list[str]:
    """Everything of this lab the host can still see: mounts, namespaces, links, processes."""
    found = [
        line
        for line in Path("/proc/mounts").read_text().splitlines()
        if str(lab.layout.state_dir) in line or f"/run/netns/{lab.layout.netns}" in line
    ]
    found += [ns for ns in network.list_netns() if lab.layout.owns_netns(ns)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [line for line in links.splitlines() if lab.layout.netns in line]
    if lab.layout.cgroup.exists():
        found.append(str(lab.layout.cgroup))
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    table = lab.layout.firewall_table
    found += [line for line in tables.splitlines() if line.endswith(f" {table}")]
    if lab.layout.state_dir.exists():
        found.append(str(lab.layout.state_dir))
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cgroup = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if f"fleetlab/{lab.name}/" in cgroup or str(lab.layout.state_dir) in cmdline:
            found.append(f"process {proc.name}: {cmdline!r}")
    return found


def test_down_leaves_nothing_behind(rootfs: Path) -> None:
    from tests.conftest import REPO, unique_lab_name

    lab = Lab(unique_lab_name())
    lab.up(2, rootfs, REPO)
    lab.partition("m2")
    assert lab_leftovers(lab)
    lab.down()
    assert lab_leftovers(lab) == []
