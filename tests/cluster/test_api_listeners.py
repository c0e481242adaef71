"""fleetd's API listeners on lab machines, where systemd is PID 1: fleet.socket starting fleetd
(real socket activation), a TCP ListenStream= drop-in refused without TLS unless the risk is
accepted, and the fleet group's access to the API socket."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable

import pytest

from .fleet import FleetCluster

pytestmark = pytest.mark.cluster
DENIED = "permission denied on /var/run/fleet.sock: add yourself to the fleet group or use sudo"
DROP_IN = "/etc/systemd/system/fleet.socket.d/30-tcp.conf"
Result = subprocess.CompletedProcess[str]


def fleetctl(fleet: FleetCluster, machine: str, *args: str, user: str = "") -> Result:
    argv = ["/usr/bin/fleetctl", *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return fleet.lab.run(machine, argv, check=False)


async def until(run: Callable[[], Result], done: Callable[[Result], bool]) -> Result:
    deadline = time.monotonic() + 30
    while not done(result := run()):
        assert time.monotonic() < deadline, f"never happened; last: {result.stderr}"
        await asyncio.sleep(0.3)
    return result


def succeeded(result: Result) -> bool:
    return result.returncode == 0


def socket_activation(fleet: FleetCluster, machine: str) -> None:
    """fleetd stopped, fleet.socket listening: the next client starts fleetd through it."""
    fleet.systemctl(machine, "stop", "fleetd.service")
    fleet.lab.run(machine, ["rm", "-f", "/run/fleet.sock"])  # fleetd's own, from before
    fleet.systemctl(machine, "daemon-reload")
    assert fleet.lab.run(machine, ["systemctl", "enable", "--now", "fleet.socket"]).returncode == 0


@pytest.mark.machines(2)
async def test_fleet_socket_starts_fleetd_and_serves_fleetctl(fleet: FleetCluster) -> None:
    socket_activation(fleet, "m1")
    assert fleet.systemctl("m1", "is-active", "fleetd.service") == "inactive"
    # The first connection starts fleetd, which answers 503 until it has registered.
    listing = await until(lambda: fleetctl(fleet, "m1", "list-machines"), succeeded)
    assert len(listing.stdout.splitlines()) == 3  # header + 2 machines
    triggered = fleet.systemctl("m1", "show", "-p", "TriggeredBy", "--value", "fleetd.service")
    assert triggered == "fleet.socket"
    assert "serving the API on unix:/run/fleet.sock" in fleet.lab.journal_text(
        "m1", ["-u", "fleetd"]
    )
    mode = fleet.lab.run("m1", ["stat", "-c", "%a %U %G", "/run/fleet.sock"]).stdout.split()
    assert mode == ["660", "root", "fleet"]
    # fleet's name for the service is an alias of ours.
    assert fleet.systemctl("m1", "is-active", "fleet.service") == "active"
    assert fleet.systemctl("m1", "show", "-p", "Id", "--value", "fleet.service") == (
        "fleetd.service"
    )
    # A reload keeps the sockets systemd handed over (fleetd serves copies of them).
    fleet.systemctl("m1", "kill", "--signal=HUP", "fleetd.service")
    await until(
        lambda: fleet.lab.run("m1", ["journalctl", "-u", "fleetd", "-o", "cat"], check=False),
        lambda r: "Reloading configuration" in r.stdout,
    )
    assert (await until(lambda: fleetctl(fleet, "m1", "list-units"), succeeded)).returncode == 0
    assert fleet.systemctl("m1", "show", "-p", "NRestarts", "--value", "fleetd.service") == "0"
    # A restart gets the same socket back from systemd: clients never see it missing.
    fleet.systemctl("m1", "restart", "fleet.service")
    assert (await until(lambda: fleetctl(fleet, "m1", "list-units"), succeeded)).returncode == 0


@pytest.mark.machines(2)
async def test_a_tcp_drop_in_is_refused_without_tls_unless_the_risk_is_accepted(
    fleet: FleetCluster,
) -> None:
    record = fleet.lab.require_state().machine("m1")
    assert record is not None
    address = f"{record.ip}:49153"
    script = f"mkdir -p {DROP_IN.rpartition('/')[0]} && cat > {DROP_IN}"
    fleet.lab.run("m1", ["sh", "-c", script], input=f"[Socket]\nListenStream={address}\n")
    socket_activation(fleet, "m1")
    fleet.systemctl("m1", "start", "fleetd.service")
    over_tcp = ["--endpoint", f"http://{address}", "list-machines"]

    refused = await until(
        lambda: fleetctl(fleet, "m2", *over_tcp), lambda r: "api_insecure_tcp" in r.stderr
    )
    assert refused.returncode == 1
    assert f"fleetd refuses the API on tcp:{address}" in refused.stderr
    # The unix socket from the same fleet.socket serves as usual.
    assert (await until(lambda: fleetctl(fleet, "m1", "list-machines"), succeeded)).stdout
    assert f"fleetd refuses the API on tcp:{address}" in fleet.lab.journal_text(
        "m1", ["-u", "fleetd"]
    )

    fleet.configure("m1", api_insecure_tcp="true")
    fleet.systemctl("m1", "restart", "fleetd.service")
    listing = await until(lambda: fleetctl(fleet, "m2", *over_tcp), succeeded)
    assert len(listing.stdout.splitlines()) == 3
    journal = fleet.lab.journal_text("m1", ["-u", "fleetd"])
    assert f"SECURITY WARNING: the fleet API is served WITHOUT TLS on tcp:{address}" in journal


@pytest.mark.machines(1)
async def test_the_fleet_group_uses_fleetctl_without_sudo_and_others_are_told_why(
    fleet: FleetCluster,
) -> None:
    """fleetd's own socket (no fleet.socket here) is for root and the fleet group."""
    fleet.lab.run("m1", ["useradd", "--create-home", "--groups", "fleet", "alice"])
    fleet.lab.run("m1", ["useradd", "--create-home", "bob"])
    listing = fleetctl(fleet, "m1", "list-machines", user="alice")
    assert listing.returncode == 0, listing.stderr
    assert fleet.ids["m1"][:8] in listing.stdout
    denied = fleetctl(fleet, "m1", "list-machines", user="bob")
    # In fleet's words for list-machines ("Error retrieving list of active machines ..."),
    # with the cause said exactly: not "is fleetd running?".
    assert denied.returncode == 1 and f"({DENIED})" in denied.stderr, denied.stderr
