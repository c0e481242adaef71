"""One bad unit never stalls a machine, no accepted name leaks, and nothing but systemd speaks
for systemd: fleetd's agent on a real lab machine, fed assignments no engine would write.

fleetd runs with its engine off; the test writes `assigned/<machine>/<unit>` keys (and unit
bodies) itself, as an engine (or an older fleetctl's unit) could have left them. Everything is
observed where it happens: systemd in the machine, the unit files, the states in etcd.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from fleetd.client import ClientError, FleetClient
from fleetd.keys import Keys
from fleetd.model import Assignment, DesiredState, UnitState
from fleetd.registry import Registry, encode_assignment
from fleetd.unitfile import parse_unit_file
from fleetlab.etcd import EtcdServer
from fleetlab.lab import Lab

from .fleet import SLEEPER, FleetCluster

pytestmark = pytest.mark.cluster
UNITS = "/run/fleet/units"
SPOOFER = "/usr/lib/flotilla/src/tests/cluster/dbus_spoofer.py"
FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
TIMEOUT = 20.0
LONGEST = "l" * 247 + ".service"  # 255 bytes: systemd's longest name
TOO_LONG = "o" * 248 + ".service"  # 256 bytes: fleet took it, no file system or systemd does


@pytest.fixture
async def agent(lab: Lab) -> AsyncIterator[FleetCluster]:
    """fleetd on every machine with its engine off: the test places units itself."""
    async with Registry.open(lab.host_etcd_endpoint, Keys(), timeout=2.0) as registry:
        cluster = FleetCluster(lab, 3.0, registry, FleetClient(registry))
        for record in lab.require_state().machines:
            cluster.configure(record.name, disable_engine="true", agent_reconcile_interval="1s")
            lab.run(record.name, ["systemctl", "start", "fleetd"])
            cluster.ids[record.name] = record.machine_id
        deadline = time.monotonic() + 20
        while len(await cluster.client.machines()) < len(cluster.ids):
            assert time.monotonic() < deadline, "fleetd did not register every machine"
            await asyncio.sleep(0.1)
        yield cluster


def sleeper(tag: str) -> str:
    """A long-running unit, told apart from the others (and so hashed apart) by `tag`."""
    return f"[Service]\nEnvironment=TAG={tag}\nExecStart=/bin/sleep infinity\n"


def unit_hash(body: str) -> str:
    return hashlib.sha1(body.encode()).hexdigest()


async def assign(
    fleet: FleetCluster,
    machine: str,
    units: Mapping[str, tuple[str | None, DesiredState]],
) -> None:
    """Write unit bodies (None: none) and assignments to `machine`, in one transaction."""
    registry, machine_id = fleet.registry, fleet.ids[machine]
    bodies = {unit_hash(body): body for body, _ in units.values() if body is not None}
    ops = [registry.ops.put(registry.keys.unit_body(h), b.encode()) for h, b in bodies.items()]
    for name, (body, desired) in units.items():
        body_hash = unit_hash(body if body is not None else f"missing {name}")
        value = encode_assignment(Assignment(body_hash, desired))
        ops.append(registry.ops.put(registry.keys.assignment(machine_id, name), value))
    succeeded, _ = await registry.client.transaction(compare=[], success=ops, failure=[])
    assert succeeded


async def unassign(fleet: FleetCluster, machine: str) -> None:
    await fleet.registry.client.delete_prefix(fleet.registry.keys.assigned_to(fleet.ids[machine]))


async def states_of(fleet: FleetCluster, machine: str) -> dict[str, UnitState]:
    states = await fleet.registry.unit_states()
    return {unit: state for (unit, where), state in states.items() if where == fleet.ids[machine]}


async def wait_for(check: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    """The first true value of `check` (a function, or one returning an awaitable)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.2)


def files_in(fleet: FleetCluster, machine: str, directory: str = UNITS) -> list[str]:
    listing = fleet.lab.run(machine, ["ls", "-A", directory], check=False).stdout
    return sorted(listing.split())


def journal(fleet: FleetCluster, machine: str) -> str:
    return fleet.lab.journal_text(machine, ["-u", "fleetd", "-o", "cat"])


@pytest.mark.machines(1)
async def test_one_bad_unit_never_stalls_the_others(agent: FleetCluster) -> None:
    fleet = agent
    # A directory where the unit file would go: writing that one unit fails, and only it.
    fleet.lab.run("m1", ["mkdir", "-p", f"{UNITS}/blocked.service"])
    launched = DesiredState.LAUNCHED
    good = {"good-1.service": sleeper("1"), "good-2.service": sleeper("2"), LONGEST: sleeper("3")}
    bad = {
        ".dot.service": (SLEEPER, 'unit name cannot start in "."'),
        TOO_LONG: (SLEEPER, "unit name exceeds maximum length (255)"),
        "x.busname": (SLEEPER, 'invalid unit type: "busname"'),
        "ssh.service": (sleeper("ssh"), 'unit name "ssh.service" is reserved'),
        "nobody.service": (None, "its unit file "),
        # Not in fleet's table of reserved names, but the machine has units of its own there.
        "kmod-static-nodes.service": (
            sleeper("k"),
            "the machine has a unit file of its own for kmod-static-nodes.service (static)",
        ),
        "modprobe@fuse.service": (
            sleeper("m"),
            "the machine has a unit file of its own for modprobe@fuse.service",
        ),
        "blocked.service": (sleeper("b"), None),
    }
    await assign(
        fleet,
        "m1",
        {
            **{name: (body, launched) for name, body in good.items()},
            **{name: (body, launched) for name, (body, _) in bad.items()},
        },
    )
    for name in good:
        await wait_for(lambda name=name: fleet.active_on(name) == ["m1"], f"{name} to run")
    states = await wait_for(
        lambda: _all_published(fleet, "m1", good), "the good units' states in etcd"
    )
    assert {name: (s.active, s.sub) for name, s in states.items()} == {  # type: ignore[attr-defined]
        name: ("active", "running") for name in good
    }
    for name in bad.keys() - {"ssh.service"}:
        assert fleet.systemctl("m1", "is-active", name) != "active", name
    # The machine's own units are its own still (and its ssh.service runs, as it did).
    assert fleet.systemctl("m1", "show", "-p", "FragmentPath", "--value", "ssh.service") == (
        "/lib/systemd/system/ssh.service"
    )
    assert fleet.systemctl("m1", "is-active", "ssh.service") == "active"
    for name in ("kmod-static-nodes.service", "modprobe@fuse.service"):
        assert "sleep" not in fleet.systemctl("m1", "show", "-p", "ExecStart", name), name
    assert files_in(fleet, "m1") == sorted([*good, "blocked.service"])
    logged = journal(fleet, "m1")
    for name, (_, why) in bad.items():
        if why is not None:
            assert f"refusing to load {name}: {why}" in logged, name
    assert "writing blocked.service failed" in logged
    assert "agent pass failed" not in logged

    # Stopping and unloading go on around the bad units too.
    await assign(fleet, "m1", {name: (body, DesiredState.LOADED) for name, body in good.items()})
    for name in good:
        await wait_for(lambda name=name: not fleet.active_on(name), f"{name} to stop")
    await unassign(fleet, "m1")
    await wait_for(lambda: files_in(fleet, "m1") == ["blocked.service"], "the unit files to go")
    await wait_for(lambda: _none_published(fleet, "m1"), "the states to go from etcd")
    for name in good:
        assert fleet.systemctl("m1", "is-enabled", name) != "linked-runtime", name
    assert "agent pass failed" not in journal(fleet, "m1")


@pytest.mark.machines(1)
async def test_an_unreadable_assignment_leaves_its_unit_as_it_is(agent: FleetCluster) -> None:
    """A malformed assigned/ record (a bug elsewhere, a hand edit) is not an unassignment: the
    unit keeps running until the engine writes a readable one, which is then followed."""
    fleet = agent
    await assign(fleet, "m1", {"kept.service": (sleeper("kept"), DesiredState.LAUNCHED)})
    await wait_for(lambda: fleet.active_on("kept.service") == ["m1"], "kept.service to run")
    key = fleet.registry.keys.assignment(fleet.ids["m1"], "kept.service")
    await fleet.registry.client.put(key, b'{"hash": 7')
    await wait_for(
        lambda: "skipping malformed assignment" in journal(fleet, "m1"), "the agent to read it"
    )
    await asyncio.sleep(3)  # three agent passes
    assert fleet.active_on("kept.service") == ["m1"]
    assert files_in(fleet, "m1") == ["kept.service"]
    await assign(fleet, "m1", {"kept.service": (sleeper("kept"), DesiredState.LOADED)})
    await wait_for(lambda: not fleet.active_on("kept.service"), "kept.service to stop")


async def _all_published(
    fleet: FleetCluster, machine: str, units: Mapping[str, str]
) -> dict[str, UnitState] | None:
    states = await states_of(fleet, machine)
    wanted = {name: states[name] for name in units if name in states}
    done = len(wanted) == len(units) and all(s.active == "active" for s in wanted.values())
    return wanted if done else None


async def _none_published(fleet: FleetCluster, machine: str) -> bool:
    return not await states_of(fleet, machine)


@pytest.mark.machines(1)
async def test_a_hidden_unit_an_older_agent_started_is_unloaded_not_leaked(
    agent: FleetCluster,
) -> None:
    """The reported leak: `fleetctl start /tmp/.hidden.service` ran it, and after `destroy` it
    kept running, because the agent skipped dotfiles when it listed the units it had loaded.
    Here the machine is as that agent left it: file written, linked, started, assigned."""
    fleet = agent
    body = sleeper("hidden")
    script = (
        f"mkdir -p {UNITS} && printf '%s' \"$1\" > {UNITS}/.hidden.service"
        f" && systemctl link --runtime {UNITS}/.hidden.service"
        " && systemctl start .hidden.service"
        # An older agent's partial file, left by a crash: never taken for a unit.
        f" && : > {UNITS}/.old.service.partial"
    )
    fleet.lab.run("m1", ["sh", "-c", script, "sh", body])
    await assign(fleet, "m1", {".hidden.service": (body, DesiredState.LAUNCHED)})
    # fleet sees it: its state is published like any unit's.
    await wait_for(
        lambda: _published(fleet, "m1", ".hidden.service", "active"), "its state in etcd"
    )
    assert fleet.active_on(".hidden.service") == ["m1"]

    await unassign(fleet, "m1")  # what `fleetctl destroy .hidden.service` leads to
    await wait_for(lambda: not fleet.active_on(".hidden.service"), ".hidden.service to stop")
    await wait_for(lambda: ".hidden.service" not in files_in(fleet, "m1"), "its file to go")
    assert fleet.systemctl("m1", "is-enabled", ".hidden.service") != "linked-runtime"
    await wait_for(lambda: _none_published(fleet, "m1"), "its state to go from etcd")
    assert files_in(fleet, "m1") == [".old.service.partial"]
    assert "agent pass failed" not in journal(fleet, "m1")


async def _published(fleet: FleetCluster, machine: str, unit: str, active: str) -> bool:
    state = (await states_of(fleet, machine)).get(unit)
    return state is not None and state.active == active


@pytest.mark.machines(1)
async def test_signals_from_anyone_but_systemd_are_ignored(agent: FleetCluster) -> None:
    """Another client on the machine's bus sends systemd's PropertiesChanged and JobRemoved,
    addressed to fleetd and broadcast: fleet's states and the agent's stops do not change."""
    fleet = agent
    fleetd_pid = fleet.systemctl("m1", "show", "-p", "MainPID", "--value", "fleetd")
    await assign(fleet, "m1", {"web.service": (sleeper("web"), DesiredState.LAUNCHED)})
    await wait_for(lambda: _published(fleet, "m1", "web.service", "active"), "web to run")

    # A forged "failed" would be published at once (and put right by the next pass): the
    # state's key must not be written at all.
    key = fleet.registry.keys.state("web.service", fleet.ids["m1"])
    written = (await fleet.registry.client.get(key)).version
    spoof("m1", fleet, fleetd_pid, "properties", "web.service", "failed", "failed")
    await asyncio.sleep(2)
    assert (await fleet.registry.client.get(key)).version == written
    state = (await states_of(fleet, "m1"))["web.service"]
    assert (state.active, state.sub) == ("active", "running")
    assert fleet.active_on("web.service") == ["m1"]

    # A stop whose job takes 6 s: a forged "done" would have the agent remove the unit's file
    # while the unit is still stopping.
    slow = "[Service]\nExecStart=/bin/sleep infinity\nExecStop=/bin/sleep 6\n"
    await assign(fleet, "m1", {"slow.service": (slow, DesiredState.LAUNCHED)})
    await wait_for(lambda: fleet.active_on("slow.service") == ["m1"], "slow to run")
    await unassign(fleet, "m1")
    await wait_for(
        lambda: fleet.systemctl("m1", "is-active", "slow.service") == "deactivating",
        "slow to be stopping",
    )
    spoof("m1", fleet, fleetd_pid, "job-removed", "slow.service", "done")
    await asyncio.sleep(1.5)
    assert fleet.systemctl("m1", "is-active", "slow.service") == "deactivating"
    assert "slow.service" in files_in(fleet, "m1")  # the agent still waits for the real stop
    await wait_for(lambda: "slow.service" not in files_in(fleet, "m1"), "slow to be unloaded")


@pytest.mark.machines(1)
async def test_signals_are_followed_across_a_systemd_reexec(agent: FleetCluster) -> None:
    fleet = agent
    await assign(fleet, "m1", {"web.service": (sleeper("web"), DesiredState.LAUNCHED)})
    await wait_for(lambda: _published(fleet, "m1", "web.service", "active"), "web to run")
    fleet.lab.run("m1", ["systemctl", "daemon-reexec"])
    await asyncio.sleep(1)
    fleet.lab.run("m1", ["systemctl", "stop", "web.service"])  # by hand: fleet reports it
    await wait_for(
        lambda: _published(fleet, "m1", "web.service", "inactive"), "the stop to reach etcd"
    )
    assert "systemd's bus name is now" in journal(fleet, "m1")


def spoof(machine: str, fleet: FleetCluster, pid: str, *args: str) -> None:
    result = fleet.lab.run(machine, ["python3", SPOOFER, pid, *args], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["to"], result.stdout


# -- refused at submit time, never half-accepted ------------------------------------------------


@pytest.mark.parametrize(
    ("file", "argument", "message"),
    [
        (".hidden.service", ".hidden.service", 'unit name cannot start in "."'),
        # No file can have a 256-byte name: an instance of a template can.
        ("t@.service", "t@" + "i" * 246 + ".service", "unit name exceeds maximum length (255)"),
        ("fleetd.service", "fleetd.service", 'unit name "fleetd.service" is reserved: the'),
        ("ssh.service", "ssh.service", 'unit name "ssh.service" is reserved'),
        ("systemd-journald.service", "systemd-journald.service", "(part of systemd)"),
        ("flotilla-ssh-keys.service", "flotilla-ssh-keys.service", "(part of the Flotilla image)"),
    ],
)
async def test_fleetctl_refuses_names_the_machines_cannot_take(
    etcd: EtcdServer, tmp_path: Path, file: str, argument: str, message: str
) -> None:
    """fleetctl (etcd driver) refuses before it writes anything, with fleet's prefix."""
    (tmp_path / file).write_text(SLEEPER)
    env = {**os.environ, "FLEETCTL_DRIVER": "etcd", "FLEETCTL_ENDPOINT": etcd.endpoint}
    for command in ("submit", "start"):
        result = subprocess.run(
            [FLEETCTL, command, str(tmp_path / argument)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("Error creating units: "), result.stderr
        assert message in result.stderr
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as registry:
        assert (await registry.client.get_prefix(registry.keys.prefix.encode())).kvs == []


async def test_an_alias_onto_a_machine_unit_is_refused(etcd: EtcdServer) -> None:
    """[Install] Alias= links a unit under another name when it is enabled: not over sshd."""
    body = SLEEPER + "\n[Install]\nWantedBy=multi-user.target\nAlias=web2.service sshd.service\n"
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as registry:
        client = FleetClient(registry)
        with pytest.raises(ClientError) as caught:
            await client.submit({"ok.service": SLEEPER, "web.service": body})
        assert str(caught.value) == (
            'web.service: [Install] Alias=sshd.service: unit name "sshd.service" is reserved:'
            " the machines ship a unit of that name (the SSH server), which a fleet unit would"
            " replace"
        )
        assert (await registry.client.get_prefix(registry.keys.prefix.encode())).kvs == []
        # Nor as a new unit file for a unit that exists (fleetctl --replace).
        await client.submit({"web.service": SLEEPER})
        with pytest.raises(ClientError, match=r"Alias=sshd.service: unit name \"sshd.service\""):
            await client.replace("web.service", parse_unit_file(body), DesiredState.INACTIVE)
        assert (await registry.jobs())["web.service"].hash == parse_unit_file(SLEEPER).hash
