"""fleetctl where it used to differ from fleet v1.0 (reference §1), through both drivers: the
lifecycle commands, messages and states, help and deprecated flags, lazy creation."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import pytest

from fleetd.fleetctl.lifecycle import SIGN_WARNING

from .fleet import FleetCluster
from .test_fleetctl import FLEETCTL, HOST_ENV, Fleetctl, fleetctl, rows

__all__ = ["fleetctl"]  # the fixture, parametrized over both drivers
pytestmark = pytest.mark.cluster
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


def etcd_endpoint(fleetctl: Fleetctl) -> list[str]:
    """The lab's etcd as this fleetctl reaches it (the host's forward, or the lab's bridge)."""
    if fleetctl.driver == "etcd":
        return ["--endpoint", fleetctl.fleet.lab.host_etcd_endpoint]
    return ["--endpoint", "http://10.77.0.1:2379"]


async def published(fleet: FleetCluster, name: str) -> list[str]:
    return sorted(m for unit, m in await fleet.registry.unit_states() if unit == name)


async def test_lifecycle_commands_as_fleets(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    fleetctl.write("hello.service", SLEEPER)

    # --sign: fleet's deprecation warning and exit 2, before anything is done.
    for command in ("submit", "load", "start"):
        signed = fleetctl(command, "--sign", "hello.service")
        assert (signed.returncode, signed.stderr) == (2, SIGN_WARNING + "\n"), command
    assert fleetctl("list-unit-files", "--no-legend").stdout == ""

    # start creates (`Unit <n> inactive`, as fleet prints for units it creates), then launches;
    # `hello` is read from ./hello.service, as fleet appends the suffix to the path too.
    started = fleetctl("start", "hello")
    assert started.returncode == 0, started.stderr
    lines = started.stdout.splitlines()
    assert lines[0] == "Unit hello.service inactive"
    assert lines[1].startswith("Unit hello.service launched on ")
    where = lines[1].split()[-1]
    machine = fleet.active_on("hello.service")[0]
    pid = fleet.main_pid(machine, "hello.service")

    # Already launched: nothing done, nothing waited for; said in the debug log, as fleet.
    again = fleetctl("--debug", "start", "hello.service")
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    assert "Unit(hello.service) already launched, skipping." in again.stderr
    assert fleet.main_pid(machine, "hello.service") == pid

    # stop and unload decide from the current state: a unit already there is skipped.
    stopped = fleetctl("stop", "hello")
    assert stopped.stdout == f"Unit hello.service loaded on {where}\n"
    assert stopped.stderr == "Successfully stopped units [hello.service].\n"
    skipped = fleetctl("--debug", "stop", "hello")
    assert (skipped.returncode, skipped.stdout) == (0, "")
    assert "Unit(hello.service) already loaded, skipping." in skipped.stderr
    assert skipped.stderr.endswith("Successfully stopped units [].\n")
    unloaded = fleetctl("unload", "hello")
    assert unloaded.stdout == "Unit hello.service inactive\n"
    unskipped = fleetctl("unload", "hello")
    assert (unskipped.returncode, unskipped.stdout) == (0, "")
    inactive = fleetctl("stop", "hello")
    assert inactive.returncode == 1
    assert inactive.stderr == "Unable to stop unit hello.service in state inactive\n"

    # destroy waits until no machine has the unit loaded; --no-block does not wait.
    fleetctl.write("other.service", SLEEPER)
    assert fleetctl("start", "hello", "other").returncode == 0
    destroyed = fleetctl("destroy", "--block-attempts", "15", "hello")
    assert (destroyed.returncode, destroyed.stdout) == (0, "Destroyed hello.service\n")
    assert await published(fleet, "hello.service") == []
    unblocked = fleetctl("destroy", "--no-block", "other")
    assert (unblocked.returncode, unblocked.stdout) == (0, "Destroyed other.service\n")
    assert fleetctl("destroy", "--no-block", "other").stderr == "Units not found in registry\n"


async def test_replace_as_fleets_and_in_place(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    fleetctl.write("web.service", SLEEPER)
    assert fleetctl("start", "web.service").returncode == 0
    first = fleet.active_on("web.service")[0]
    elsewhere = next(name for name in ("m1", "m2", "m3") if name != first)

    # --replace as fleet's: a new unit under the old name, back to inactive, then placed
    # again, here where its new file says.
    fleetctl.write(
        "web.service",
        f"[Service]\nExecStart=/bin/sleep 86400\n[X-Fleet]\nMachineID={fleet.ids[elsewhere]}\n",
    )
    replaced = fleetctl("start", "--replace", "web.service")
    assert replaced.returncode == 0, replaced.stderr
    lines = replaced.stdout.splitlines()
    assert lines[0] == "Unit web.service inactive"
    assert lines[1].startswith("Unit web.service launched on ")
    assert fleet.active_on("web.service") == [elsewhere]

    # --replace-in-place: the same machine, the same desired state, the new file loaded there.
    fleetctl.write(
        "web.service",
        f"[Service]\nExecStart=/bin/sleep 7777\n[X-Fleet]\nMachineID={fleet.ids[elsewhere]}\n",
    )
    in_place = fleetctl("start", "--replace-in-place", "web.service")
    assert (in_place.returncode, in_place.stdout) == (0, ""), in_place.stderr
    deadline = time.monotonic() + 20
    while "7777" not in fleet.systemctl(elsewhere, "show", "-p", "ExecStart", "web.service"):
        assert time.monotonic() < deadline, "the new unit file was not loaded in place"
        await asyncio.sleep(0.2)
    assert fleet.active_on("web.service") == [elsewhere]


async def test_messages_and_states_as_fleets(fleet: FleetCluster, fleetctl: Fleetctl) -> None:
    # A launched unit that failed: launched in DSTATE and STATE, failed in ACTIVE.
    fleetctl.write("fails.service", "[Service]\nExecStart=/bin/false\n")
    started = fleetctl("start", "fails.service")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 20
    while (units := rows(fleetctl("list-units", "--no-legend").stdout)) == [] or units[0][
        2
    ] != "failed":
        assert time.monotonic() < deadline, units
        await asyncio.sleep(0.2)
    assert units[0][:1] == ["fails.service"] and units[0][2:] == ["failed", "failed"]
    files = rows(fleetctl("list-unit-files", "--no-legend").stdout)
    assert files[0][0] == "fails.service" and files[0][2:4] == ["launched", "launched"]

    # journal of an inactive unit, in fleet's words.
    fleetctl.write("idle.service", SLEEPER)
    assert fleetctl("submit", "idle.service").returncode == 0
    journal = fleetctl("journal", "idle.service")
    assert (journal.returncode, journal.stderr) == (
        1,
        "Unit idle.service does not appear to be running.\n",
    )

    # list-machines that cannot reach the cluster: fleet's error and its possible issues.
    unreachable = (
        ["--endpoint", "http://127.0.0.1:9", "--request-timeout", "1"]
        if fleetctl.driver == "etcd"
        else ["--endpoint", "unix:///nonexistent/fleet.sock"]
    )
    failed = fleetctl(*unreachable, "list-machines")
    assert failed.returncode == 1
    assert failed.stderr.startswith("Error retrieving list of active machines from fleet API (")
    assert failed.stderr.endswith(
        ")\nPossible issues:\n  etcd is unhealthy and/or lost quorum\n"
        "  connection cannot be established to any etcd servers\n"
    )


async def test_debug_and_deprecated_flags_as_fleets(
    fleet: FleetCluster, fleetctl: Fleetctl
) -> None:
    debug = fleetctl("--debug", "list-machines", "--no-legend")
    assert debug.returncode == 0 and len(rows(debug.stdout)) == 3
    expected = "etcd: reading machines" if fleetctl.driver == "etcd" else "GET http://fleet/"
    assert expected in debug.stderr
    # --experimental-api=false is fleet's old way to say --driver=etcd: it wins over --driver.
    old_switch = fleetctl(
        "--debug",
        "--driver=API",
        "--experimental-api=false",
        *etcd_endpoint(fleetctl),
        "list-machines",
    )
    assert old_switch.returncode == 0, old_switch.stderr
    assert "etcd: reading machines" in old_switch.stderr
    assert len(rows(old_switch.stdout)) == 4
    assert fleetctl("--experimental-api", "list-machines").returncode == 0
    # The old TLS flags are the new ones under their old names.
    for old, new in (("--etcd-cafile", "--ca-file"), ("--etcd-certfile", "--cert-file")):
        by_old = fleetctl(f"{old}=/nonexistent/file.pem", "list-machines")
        by_new = fleetctl(f"{new}=/nonexistent/file.pem", "list-machines")
        # The API checks its TLS files at once; etcd over http:// has no use for them.
        assert by_old.returncode == by_new.returncode == (1 if fleetctl.driver == "API" else 0)
        assert (by_old.stdout, by_old.stderr) == (by_new.stdout, by_new.stderr)


async def test_lazy_creation_reads_the_registry_first(
    fleet: FleetCluster, fleetctl: Fleetctl
) -> None:
    fleetctl.write(
        "tpl@.service", "[Unit]\nDescription=registry\n\n[Service]\nExecStart=/bin/sleep %i\n"
    )
    assert fleetctl("submit", "tpl@.service").returncode == 0
    fleetctl.write(
        "tpl@.service", "[Unit]\nDescription=local\n\n[Service]\nExecStart=/bin/sleep %i\n"
    )
    # The instance is made from the registry's template, not from the differing local file.
    started = fleetctl("start", "tpl@600")
    assert started.returncode == 0, started.stderr
    assert "Description=registry" in fleetctl("cat", "tpl@600").stdout
    # A unit the registry has is used as it is, with fleet's warning about the local file.
    kept = fleetctl("submit", "tpl@.service")
    assert "WARNING: Unit tpl@.service in registry differs from local unit file" in kept.stderr


def unit_list_reads(fleetctl: Fleetctl, debug_log: str) -> int:
    """How many times a command read the list of units, from its --debug lines."""
    if fleetctl.driver == "etcd":
        reads = ("etcd: reading units", "etcd: reading unit files", "etcd: reading jobs")
        return sum(line.split(" ", 3)[-1].startswith(reads) for line in debug_log.splitlines())
    return len(re.findall(r"GET \S+/fleet/v1/units(\?\S*)?: \d+$", debug_log, re.MULTILINE))


def complete(fleetctl: Fleetctl, words: str) -> list[str]:
    """The names bash completion gets for the last word of `words`."""
    env = {"_FLEETCTL_COMPLETE": "bash_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    if fleetctl.driver == "etcd":
        etcd = {
            "FLEETCTL_DRIVER": "etcd",
            "FLEETCTL_ENDPOINT": fleetctl.fleet.lab.host_etcd_endpoint,
        }
        result = subprocess.run(
            [FLEETCTL], env={**HOST_ENV, **etcd, **env}, capture_output=True, text=True, timeout=30
        )
    else:
        assignments = [f"{name}={value}" for name, value in env.items()]
        result = fleetctl.fleet.lab.run("m1", ["env", *assignments, "fleetctl"], check=False)
    assert (result.returncode, result.stderr) == (0, "")
    return [line.partition(",")[2] for line in result.stdout.splitlines() if line]


async def test_flags_output_and_completion_for_scripts_and_shells(
    fleet: FleetCluster, fleetctl: Fleetctl
) -> None:
    fleetctl.write("hello.service", "[Unit]\nDescription=Hi\n\n" + SLEEPER)
    fleetctl.write("everywhere.service", SLEEPER + "[X-Fleet]\nGlobal=true\n")
    assert fleetctl("start", "hello", "everywhere").returncode == 0
    await fleet.client.wait_until(lambda u: len(u["everywhere.service"].active_on()) == 3, 20)

    # Root flags after the command, as fleet's (cobra's persistent flags) are taken.
    after = fleetctl("list-machines", "--driver=etcd", *etcd_endpoint(fleetctl), "--debug")
    assert after.returncode == 0, after.stderr
    assert "etcd: reading machines" in after.stderr and len(rows(after.stdout)) == 4

    # --output json: one document with every field, full ids and hashes.
    units = await fleet.client.units()
    hello = units["hello.service"]
    listed = json.loads(fleetctl("list-units", "--output", "json").stdout)
    assert {(u["unit"], u["machine"]) for u in listed["units"]} == {
        ("hello.service", hello.machine),
        *(("everywhere.service", machine_id) for machine_id in fleet.ids.values()),
    }
    row = next(u for u in listed["units"] if u["unit"] == "hello.service")
    machines = await fleet.client.machines()
    assert row == {
        "unit": "hello.service",
        "machine": hello.machine,
        "ip": machines[hello.machine].ip,
        "load": "loaded",
        "active": "active",
        "sub": "running",
        "hash": hello.hash,
    }
    files = json.loads(fleetctl("list-unit-files", "-o", "json").stdout)["unit_files"]
    assert files == [
        {
            "unit": "everywhere.service",
            "hash": units["everywhere.service"].hash,
            "desired": "launched",
            "state": None,
            "global": True,
            "machine": None,
            "ip": None,
            "description": None,
            "reason": None,
        },
        {
            "unit": "hello.service",
            "hash": hello.hash,
            "desired": "launched",
            "state": "launched",
            "global": False,
            "machine": hello.machine,
            "ip": machines[hello.machine].ip,
            "description": "Hi",
            "reason": None,
        },
    ]
    listed_machines = json.loads(fleetctl("list-machines", "--output=json").stdout)["machines"]
    assert [m["machine"] for m in listed_machines] == sorted(fleet.ids.values())
    assert listed_machines[0]["metadata"] == dict(machines[listed_machines[0]["machine"]].metadata)
    assert fleetctl("list-machines", "--output", "yaml").returncode == 2

    # Each command reads the units once: stop (which asks which units are global), restart,
    # list-unit-files.
    stopped = fleetctl("--debug", "stop", "--no-block", "hello")
    assert stopped.returncode == 0, stopped.stderr
    assert unit_list_reads(fleetctl, stopped.stderr) == 1
    listing = fleetctl("--debug", "list-unit-files")
    assert unit_list_reads(fleetctl, listing.stderr) == 1

    # Shell completion of unit and machine names, read through the driver.
    assert complete(fleetctl, "fleetctl status ") == ["everywhere.service", "hello.service"]
    assert complete(fleetctl, "fleetctl stop he") == ["hello.service"]
    assert complete(fleetctl, "fleetctl start he") == ["hello.service", "he"]  # and local files
    m2 = fleet.ids["m2"]
    assert complete(fleetctl, f"fleetctl ssh --machine {m2[:6]}") == [m2]
    assert complete(fleetctl, f"fleetctl ssh {m2[:6]}") == [m2]
