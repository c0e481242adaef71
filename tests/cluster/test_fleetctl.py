"""fleetctl (etcd driver) against fleetd on a lab: fleet's commands, lines and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetd.fleetctl.cli import main
from fleetd.keys import Keys
from fleetd.model import DesiredState, JobRecord, UnitState
from fleetd.registry import Registry
from fleetd.unitfile import parse_unit_file
from fleetlab.etcd import EtcdServer

from .fleet import FleetCluster

pytestmark = pytest.mark.cluster
FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
REPO = Path(__file__).resolve().parents[2]
# The venv's fleetctl script imports whichever checkout the venv was installed from: run it on
# this one's code.
HOST_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


class Fleetctl:
    """fleetctl through one driver: etcd from the host, or fleet's API inside machine m1 (the
    default there: unix:///var/run/fleet.sock). Unit files go where that fleetctl runs."""

    def __init__(self, fleet: FleetCluster, driver: str, host_dir: Path) -> None:
        self.fleet, self.driver, self.host_dir = fleet, driver, host_dir

    def write(self, name: str, text: str) -> None:
        if self.driver == "etcd":
            (self.host_dir / name).write_text(text)
        else:
            self.fleet.lab.run(
                "m1", ["sh", "-c", f"mkdir -p /root/units && cat > /root/units/{name}"], input=text
            )

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.driver == "etcd":
            env = {
                **HOST_ENV,
                "FLEETCTL_DRIVER": "etcd",
                "FLEETCTL_ENDPOINT": self.fleet.lab.host_etcd_endpoint,
            }
            return subprocess.run(
                [FLEETCTL, *args],
                cwd=self.host_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        script = 'cd /root/units 2>/dev/null || cd /root; exec fleetctl "$@"'
        return self.fleet.lab.run("m1", ["sh", "-c", script, "fleetctl", *args], check=False)


@pytest.fixture(params=["etcd", "API"])
def fleetctl(request: pytest.FixtureRequest, fleet: FleetCluster, tmp_path: Path) -> Fleetctl:
    return Fleetctl(fleet, request.param, tmp_path)


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_bare_fleetctl_prints_help_and_succeeds_as_fleets_does() -> None:
    bare = subprocess.run([FLEETCTL], capture_output=True, text=True, timeout=60, env=HOST_ENV)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("Usage: fleetctl") and "list-machines" in bare.stdout


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(main.commands))])
def test_dash_h_is_help_on_the_group_and_every_command(command: list[str]) -> None:
    short = CliRunner().invoke(main, [*command, "-h"], prog_name="fleetctl")
    assert short.exit_code == 0, short.output
    long = CliRunner().invoke(main, [*command, "--help"], prog_name="fleetctl")
    assert short.output == long.output
    assert short.output.startswith(f"Usage: fleetctl {' '.join(command)}".rstrip())


def test_ssh_hands_dash_h_to_the_remote_command() -> None:
    root = main.make_context("fleetctl", ["ssh"])
    ssh = main.commands["ssh"].make_context("ssh", ["m1", "ls", "-h", "--help"], parent=root)
    assert ssh.params["target"] == "m1"
    assert ssh.params["command"] == ("ls", "-h", "--help")


async def test_fleetctl_drives_units_through_their_life(
    fleet: FleetCluster, fleetctl: Fleetctl
) -> None:
    fleetctl.write(
        "hello.service", "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    )
    fleetctl.write("tick@.service", "[Service]\nExecStart=/bin/sleep %i\n")
    ids = {machine_id: name for name, machine_id in fleet.ids.items()}

    submitted = fleetctl("submit", "hello.service")
    assert submitted.stdout == "Unit hello.service inactive\n"
    started = fleetctl("start", "hello", "tick@7")
    assert started.returncode == 0, started.stderr
    lines = sorted(rows(started.stdout))  # printed as each unit gets there
    assert [line[:3] for line in lines] == [
        ["Unit", "hello.service", "launched"],
        ["Unit", "tick@7.service", "inactive"],  # created from its template, as fleet says
        ["Unit", "tick@7.service", "launched"],
    ]
    where = lines[0][4]  # <id8>.../<ip>
    machine = next(name for machine_id, name in ids.items() if where.startswith(machine_id[:8]))
    assert fleet.active_on("hello.service") == [machine]

    files = fleetctl("list-unit-files")
    assert rows(files.stdout)[0] == ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"]
    assert rows(files.stdout)[1][:4] == [
        "hello.service",
        rows(files.stdout)[1][1],
        "launched",
        "launched",
    ]
    assert "\t" in files.stdout  # tab-aligned like fleet's tabwriter
    units = rows(fleetctl("list-units", "--no-legend").stdout)
    assert units == [
        ["hello.service", where, "active", "running"],
        ["tick@7.service", units[1][1], "active", "running"],
    ]
    machines = rows(fleetctl("list-machines", "--full", "--no-legend").stdout)
    assert sorted(row[0] for row in machines) == sorted(fleet.ids.values())
    assert (
        fleetctl("cat", "hello").stdout
        == ("[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep infinity") + "\n"
    )

    stopped = fleetctl("stop", "hello")
    assert stopped.stdout == f"Unit hello.service loaded on {where}\n"
    assert fleet.systemctl(machine, "is-active", "hello.service") == "inactive"
    destroyed = fleetctl("destroy", "hello", "tick@7", "nosuch")
    assert destroyed.stdout == "Destroyed hello.service\nDestroyed tick@7.service\n"
    assert fleetctl("list-unit-files", "--no-legend").stdout == ""


async def test_fleetctl_errors(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    fleetctl.write(
        "mars.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=region=mars\n"
    )
    unplaceable = fleetctl("start", "mars.service")
    assert unplaceable.returncode == 1
    assert unplaceable.stderr == (
        "Error waiting for units: unit mars.service cannot be placed: "
        "no machine matches MachineMetadata region=mars\n"
    )
    # Reference §1.4, one by one: fleet's message, or our clearer one, and exit status 1.
    expected = {
        (
            "start",
            "nosuch.service",
        ): "Error creating units: unable to find Unit(nosuch.service) in Registry or on filesystem",
        (
            "start",
            "foo@1.service",
        ): "Error creating units: failed getting Unit(foo@1.service) from template: unable to "
        "find template Unit(foo@.service) in Registry or on filesystem",
        ("start", "tpl@.service"): 'cannot activate template "tpl@.service"',
        ("start", "broken.service"): "Error creating units: broken.service:1: ",
        ("start", "both.service"): "MachineID cannot be used with Global",
        ("start", "bad!.service"): "invalid character '!' in unit name",
        ("cat", "nosuch.service"): "Unit nosuch.service not found",
        ("status", "nosuch.service"): "Unit nosuch.service does not exist.",
        ("journal", "a.service", "b.service"): "One unit file must be provided.",
        ("stop", "tpl@.service"): "Unable to stop unit tpl@.service in state inactive",
    }
    fleetctl.write("tpl@.service", "[Service]\nExecStart=/bin/sleep %i\n")
    fleetctl.write("broken.service", "[Service\nExecStart=/bin/true\n")
    fleetctl.write(
        "both.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineID=abc\n"
    )
    fleetctl.write("bad!.service", "[Service]\nExecStart=/bin/true\n")
    for args, message in expected.items():
        result = fleetctl(*args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    assert "foo@1.service" not in fleetctl("list-unit-files").stdout  # nothing half-created
    assert fleetctl("stop", "nosuch").stderr == "Units not found in registry\n"
    bad_field = fleetctl("list-units", "--fields", "unit,colour")
    assert (bad_field.returncode, bad_field.stderr) == (
        1,
        'Invalid key in output format: "colour"\n',
    )
    assert fleetctl("no-such-command").returncode == 2
    # The host has no fleetd: the API driver says where it looked and what to check.
    no_api = subprocess.run(
        [FLEETCTL, "list-units"],
        capture_output=True,
        text=True,
        env={**HOST_ENV, "FLEETCTL_DRIVER": "API"},
    )
    assert no_api.returncode == 1
    assert no_api.stderr.startswith("error talking to fleet at unix:///var/run/fleet.sock")
    assert "is fleetd running?" in no_api.stderr


async def test_restart_and_replace(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    fleetctl.write("web.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    fleetctl.write(
        "agent.service", "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n"
    )
    assert fleetctl("start", "web.service").returncode == 0
    started = fleetctl("start", "agent.service")
    assert started.stdout == (
        "Unit agent.service inactive\n"  # created, as fleet says
        "Triggered global unit agent.service start\n"
    )
    await fleet.client.wait_until(lambda u: len(u["agent.service"].active_on()) == 3, 20)
    machine = fleet.active_on("web.service")[0]
    web_pid = fleet.main_pid(machine, "web.service")
    agent_pids = {m: fleet.main_pid(m, "agent.service") for m in ("m1", "m2", "m3")}

    restarted = fleetctl("restart", "web.service", "agent.service")
    assert restarted.returncode == 0, restarted.stderr
    assert fleet.active_on("web.service") == [machine]
    assert fleet.main_pid(machine, "web.service") != web_pid
    assert fleet.active_on("agent.service") == ["m1", "m2", "m3"]
    assert all(fleet.main_pid(m, "agent.service") != pid for m, pid in agent_pids.items())

    fleetctl.write("web.service", "[Service]\nExecStart=/bin/sleep 86400\n")
    kept = fleetctl("start", "web.service")
    assert "differs from local unit file web.service. Add --replace to override." in kept.stderr
    assert "sleep infinity" in fleetctl("cat", "web.service").stdout
    replaced = fleetctl("start", "--replace", "web.service")
    assert replaced.returncode == 0, replaced.stderr
    assert "sleep 86400" in fleetctl("cat", "web.service").stdout
    units = await fleet.client.wait_until(
        lambda u: any(
            s.hash == u["web.service"].hash and s.active == "active"
            for s in u["web.service"].states.values()
        ),
        20,
    )
    where = fleet.names[units["web.service"].machine]
    assert "sleep 86400" in fleet.systemctl(where, "show", "-p", "ExecStart", "web.service")


async def test_status_and_journal_reach_the_units_machines(fleet: FleetCluster) -> None:
    """Run inside m1 (API driver); units on other machines are reached over SSH."""
    fleetctl = Fleetctl(fleet, "API", Path("/nonexistent"))
    fleetctl.write(
        "remote.service",
        f"[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMachineID={fleet.ids['m3']}\n",
    )
    fleetctl.write(
        "everywhere.service", "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n"
    )
    assert fleetctl("start", "remote.service").returncode == 0
    fleetctl("start", "everywhere.service")
    await fleet.client.wait_until(lambda u: len(u["everywhere.service"].active_on()) == 3, 20)
    ssh = ["--ssh-username", "root", "--strict-host-key-checking=false"]

    status = fleetctl(*ssh, "status", "remote.service")
    assert status.returncode == 0, status.stderr
    assert "remote.service" in status.stdout and "Active: active (running)" in status.stdout
    everywhere = fleetctl(*ssh, "status", "everywhere.service")
    assert everywhere.stdout.count("Active: active (running)") == 3  # fleet's status did nothing
    journal = fleetctl(*ssh, "journal", "--lines", "5", "remote.service")
    assert journal.returncode == 0 and "Started remote.service" in journal.stdout

    assert (
        fleetctl(*ssh, "status", "nosuch.service").stderr == "Unit nosuch.service does not exist.\n"
    )
    # The lab hands every machine the others' host keys, so strict checking works...
    strict = fleetctl("--ssh-username", "root", "status", "remote.service")
    assert "Active: active (running)" in strict.stdout, strict.stderr
    # ...and a key that differs from the one remembered is refused.
    forge = (
        "rm -f /tmp/forged* && ssh-keygen -q -t ed25519 -N '' -f /tmp/forged"
        " && mkdir -p /root/.fleetctl"
        " && cp /etc/ssh/ssh_known_hosts /tmp/known"
        " && sed -i /^10.77.0.13,/d /etc/ssh/ssh_known_hosts"
        " && echo 10.77.0.13 $(cut -d' ' -f1,2 /tmp/forged.pub) > /root/.fleetctl/known_hosts"
    )
    fleet.lab.run("m1", ["sh", "-c", forge])
    changed = fleetctl("--ssh-username", "root", "status", "remote.service")
    restore = "rm /root/.fleetctl/known_hosts && mv /tmp/known /etc/ssh/ssh_known_hosts"
    fleet.lab.run("m1", ["sh", "-c", restore])
    assert changed.returncode != 0 and "Active:" not in changed.stdout
    # The same through the etcd driver, inside the machine too.
    etcd = ["--driver=etcd", "--endpoint", "http://10.77.0.1:2379", *ssh]
    assert "Active: active (running)" in fleetctl(*etcd, "status", "remote.service").stdout
    request = "GET /fleet/v1/machines HTTP/1.0\r\nHost: fleet\r\n\r\n"
    raw = fleet.lab.run("m1", ["fleetctl", "fd-forward", "/var/run/fleet.sock"], input=request)
    assert raw.stdout.startswith("HTTP/1.0 200") and fleet.ids["m2"] in raw.stdout
    assert "fleetctl version" in fleetctl("help").stdout


async def test_ssh_and_tunnel(fleet: FleetCluster) -> None:
    """Inside m1: fleetctl ssh to machines and units; --tunnel through m2 to m2's API."""
    fleetctl = Fleetctl(fleet, "API", Path("/nonexistent"))
    ssh = ["--ssh-username", "root", "--strict-host-key-checking=false"]
    on_m3 = fleetctl(*ssh, "ssh", fleet.ids["m3"][:6], "hostname")
    assert (on_m3.returncode, on_m3.stdout) == (0, "m3\n"), on_m3.stderr
    assert fleetctl(*ssh, "ssh", fleet.ids["m2"][:6], "--", "exit 3").returncode == 3
    both = fleetctl(*ssh, "ssh", "--machine", "x", "--unit", "y")
    assert both.stderr == "Both machine and unit flags provided, please specify only one.\n"
    assert fleetctl(*ssh, "ssh", "zzzz").stderr == "could not find matching unit or machine\n"

    names = [f"tun{i}.service" for i in range(11)]
    for name in names:
        fleetctl.write(name, "[Service]\nExecStart=/bin/sleep infinity\n")
    tunnelled = fleetctl(*ssh, "--tunnel", "10.77.0.12", "start", *names)
    assert tunnelled.returncode == 0, tunnelled.stderr
    assert len([line for line in tunnelled.stdout.splitlines() if " launched on " in line]) == 11
    unit_ssh = fleetctl(*ssh, "ssh", "tun3.service", "hostname")
    units = await fleet.client.units()
    assert unit_ssh.stdout.strip() == fleet.names[units["tun3.service"].machine]
    broken = fleetctl(*ssh, "--tunnel", "10.77.0.99", "--ssh-timeout", "2", "list-units")
    assert broken.returncode == 1 and "(tunnel via 10.77.0.99)" in broken.stderr


async def test_a_hostile_machine_address_in_etcd_never_reaches_ssh(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    """Whoever can write to etcd writes machine records: an "IP" that is an ssh option must be
    refused by ssh, status and journal before any ssh runs (before, ssh ran it as ProxyCommand
    on the operator's machine)."""
    marker = tmp_path / "pwned"
    hostile = f"-oProxyCommand=touch {marker}"
    machine_id = "0badc0de" + "0" * 24
    unit_text = "[Service]\nExecStart=/bin/sleep infinity\n"
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as registry:
        await registry.client.put(
            registry.keys.machine(machine_id),
            json.dumps({"id": machine_id, "ip": hostile, "metadata": {}}).encode(),
        )
        unit = parse_unit_file(unit_text, "web.service")
        job = JobRecord("web.service", unit.hash, DesiredState.LAUNCHED)
        await registry.create_jobs([(job, unit.serialize())], replace=False)
        await registry.client.put(registry.keys.placement("web.service"), machine_id.encode())
        # ...and loaded there, or fleetctl refuses before any address is used ("does not
        # appear to be loaded", fleet's words for a unit whose current state is inactive).
        lease = await registry.grant_lease(60)
        running = UnitState("loaded", "active", "running", unit.hash)
        await registry.write_states({"web.service": running}, [], machine_id, lease)
    env = {**HOST_ENV, "FLEETCTL_DRIVER": "etcd", "FLEETCTL_ENDPOINT": etcd.endpoint}
    refusal = (
        f"Machine {machine_id} has no valid IP address in etcd ({hostile!r});"
        " refusing to pass it to ssh.\n"
    )
    ssh = ["--strict-host-key-checking=false", "--ssh-timeout", "2"]
    for command in (
        ["ssh", machine_id[:8], "hostname"],
        ["ssh", "--unit", "web.service", "hostname"],
        ["status", "web.service"],
        ["journal", "web.service"],
    ):
        result = subprocess.run(
            [FLEETCTL, *ssh, *command], capture_output=True, text=True, env=env, timeout=60
        )
        assert (result.returncode, result.stderr) == (1, refusal), command
        assert not marker.exists(), command
