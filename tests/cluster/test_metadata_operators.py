"""MachineMetadata operators on a lab: `disk>=100` and `region!=east` place units where the
machines' metadata says, a malformed expression is refused by fleetctl (both drivers) and by
the API with its position, and listings show metadata and expressions as written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO

from .fleet import FleetCluster, unit
from .test_api import SLEEPER, call
from .test_fleetctl import Fleetctl, rows

pytestmark = pytest.mark.cluster
TIMEOUT = 20
# Set through the API's metadata keys (PATCH /machines), over fleet.conf's region and disk.
METADATA = {
    "m1": {"region": "east", "disk": "50"},
    "m2": {"region": "east", "disk": "200"},
    "m3": {"region": "west", "disk": "500.5"},
}


@pytest.fixture(params=["etcd", "API"])
async def fleetctl(
    request: pytest.FixtureRequest,
    fleet: FleetCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Fleetctl:
    # The host's fleetctl (etcd driver) must import this tree's fleetd, not an editable
    # install of another checkout; the machines already run this tree.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    await label(fleet)
    return Fleetctl(fleet, request.param, tmp_path)


async def label(fleet: FleetCluster) -> None:
    changes = [
        (fleet.ids[name], key, value)
        for name, pairs in METADATA.items()
        for key, value in pairs.items()
    ]
    await fleet.registry.set_metadata(changes)


async def test_operators_place_units_by_machine_metadata(
    fleet: FleetCluster, fleetctl: Fleetctl
) -> None:
    files = {
        "big-east.service": unit('MachineMetadata="disk>=100" "region=east"'),
        "not-east.service": unit("MachineMetadata=region!=east"),
        "small.service": unit("MachineMetadata=disk<100"),
    }
    for name, text in files.items():
        fleetctl.write(name, text)
    started = fleetctl("start", *files)
    assert started.returncode == 0, started.stderr
    units = await fleet.client.wait_until(lambda u: all(u[n].active_on() for n in files), TIMEOUT)
    where = {name: fleet.machine_of(units, name) for name in files}
    assert where == {"big-east.service": "m2", "not-east.service": "m3", "small.service": "m1"}
    for name, machine in where.items():
        assert fleet.active_on(name) == [machine]
    assert fleetctl("cat", "big-east").stdout.endswith(
        '[X-Fleet]\nMachineMetadata="disk>=100" "region=east"\n'
    )

    machines = rows(fleetctl("list-machines", "--full", "--fields", "machine,metadata").stdout)
    assert machines[0] == ["MACHINE", "METADATA"]
    assert sorted(machines[1:]) == sorted(
        [
            [fleet.ids["m1"], "disk=50,region=east"],
            [fleet.ids["m2"], "disk=200,region=east"],
            [fleet.ids["m3"], "disk=500.5,region=west"],
        ]
    )
    ips = rows(fleetctl("list-machines", "--fields", "machine,ip,metadata", "--no-legend").stdout)
    assert sorted(row[2] for row in ips) == [
        "disk=200,region=east",
        "disk=50,region=east",
        "disk=500.5,region=west",
    ]

    # The reason names the expression and what each machine has instead.
    fleetctl.write("huge.service", unit("MachineMetadata=disk>=1000"))
    huge = fleetctl("start", "huge.service")
    assert huge.returncode == 1
    short = sorted((fleet.ids[name][:8], METADATA[name]["disk"]) for name in METADATA)
    has = "; ".join(f"{machine} has disk={disk}" for machine, disk in short)
    assert huge.stderr == (
        "Error waiting for units: unit huge.service cannot be placed: "
        f"no machine matches MachineMetadata disk>=1000 ({has})\n"
    )


@pytest.mark.parametrize(
    ("expression", "position"),
    [
        ("disk>=", "character 7: a number must follow '>='"),
        ("ram<=abc", "character 6: 'abc' is not a number"),
    ],
)
async def test_a_malformed_expression_is_refused_with_its_position(
    fleet: FleetCluster, fleetctl: Fleetctl, expression: str, position: str
) -> None:
    fleetctl.write("bad.service", unit(f"MachineMetadata={expression}"))
    for command in ("submit", "load", "start"):
        refused = fleetctl(command, "bad.service")
        assert refused.returncode == 1, (command, refused.stdout)
        assert refused.stderr.startswith(
            f'Error creating units: bad.service: MachineMetadata "{expression}": {position}'
        ), (command, refused.stderr)
    assert "bad.service" not in fleetctl("list-unit-files").stdout
    assert "bad.service" not in await fleet.client.units()


@pytest.fixture
async def api(fleet: FleetCluster) -> AsyncIterator[aiohttp.ClientSession]:
    socket = f"/proc/{fleet.lab.running_pid('m1')}/root/run/fleet.sock"
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket)) as session:
        yield session


def with_metadata(value: str) -> list[dict[str, str]]:
    return [*SLEEPER, {"section": "X-Fleet", "name": "MachineMetadata", "value": value}]


async def test_the_api_refuses_a_malformed_expression_and_shows_one_as_written(
    fleet: FleetCluster, api: aiohttp.ClientSession
) -> None:
    await label(fleet)
    status, body = await call(
        api,
        "PUT",
        "/units/bad.service",
        {"desiredState": "launched", "options": with_metadata("a<<3")},
    )
    assert status == 400
    assert body == {
        "error": {
            "code": 400,
            "message": "bad.service: MachineMetadata \"a<<3\": character 3: unexpected '<': "
            "a value cannot contain '=', '<' or '>'",
        }
    }
    options = with_metadata("disk>=100.5")
    assert (
        await call(
            api, "PUT", "/units/big.service", {"desiredState": "launched", "options": options}
        )
    )[0] == 201
    units = await fleet.client.wait_until(lambda u: u["big.service"].active_on(), TIMEOUT)
    assert fleet.machine_of(units, "big.service") in ("m2", "m3")
    status, entity = await call(api, "GET", "/units/big.service")
    assert status == 200 and entity["options"] == options  # type: ignore[index]
