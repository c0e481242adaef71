"""fleet's HTTP API v1 as fleetd serves it on /var/run/fleet.sock inside a lab machine.

The host reaches the machine's socket through /proc/<pid>/root: no network is involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fleetd.api import UNREACHABLE
from fleetd.api_model import encode_token
from fleetd.model import DesiredState, JobRecord
from fleetd.unitfile import parse_unit_file

from .certificates import make_certificates
from .fleet import FleetCluster

pytestmark = pytest.mark.cluster
BASE = "http://fleet/fleet/v1"
SLEEPER = [{"section": "Service", "name": "ExecStart", "value": "/bin/sleep infinity"}]


@pytest.fixture
async def api(fleet: FleetCluster) -> AsyncIterator[aiohttp.ClientSession]:
    # /var/run is an absolute symlink to /run, which would resolve on the host: go to /run.
    socket = f"/proc/{fleet.lab.running_pid('m1')}/root/run/fleet.sock"
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket)) as session:
        yield session


async def call(
    api: aiohttp.ClientSession,
    method: str,
    path: str,
    body: object = None,
    content_type: str = "application/json",
) -> tuple[int, object]:
    data = None if body is None else __import__("json").dumps(body)
    headers = {"Content-Type": content_type} if body is not None else {}
    async with api.request(method, BASE + path, data=data, headers=headers) as response:
        assert response.headers["Server"].startswith("fleetd/")
        text = await response.text()
        return response.status, (await response.json(content_type=None)) if text else None


async def test_units_through_the_api(fleet: FleetCluster, api: aiohttp.ClientSession) -> None:
    assert await call(
        api, "PUT", "/units/web.service", {"desiredState": "launched", "options": SLEEPER}
    ) == (201, None)
    units = await fleet.client.wait_until(lambda u: u["web.service"].active_on(), 20)
    status, unit = await call(api, "GET", "/units/web.service")
    assert status == 200
    assert unit == {
        "name": "web.service",
        "options": SLEEPER,
        "desiredState": "launched",
        "currentState": "launched",
        "machineID": units["web.service"].machine,
    }
    assert await call(api, "PUT", "/units/web.service", {"desiredState": "loaded"}) == (204, None)
    status, states = await call(api, "GET", "/state?unitName=web.service")
    assert status == 200 and states["states"][0]["name"] == "web.service"  # type: ignore[index]
    status, machines = await call(api, "GET", "/machines")
    assert sorted(m["id"] for m in machines["machines"]) == sorted(fleet.ids.values())  # type: ignore[index]
    assert await call(api, "DELETE", "/units/web.service") == (204, None)
    assert await call(api, "DELETE", "/units/web.service") == (
        404,
        {"error": {"code": 404, "message": "unit does not exist"}},
    )


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "message"),
    [
        (
            "/units/new.service",
            {"desiredState": "launched"},
            "application/json",
            409,
            "unit does not exist and options field empty",
        ),
        (
            "/units/a.service",
            {"name": "b.service", "options": SLEEPER},
            "application/json",
            400,
            'name in URL "a.service" differs from unit name in request body "b.service"',
        ),
        (
            "/units/bad!.service",
            {"options": SLEEPER},
            "application/json",
            400,
            "invalid character '!' in unit name",
        ),
        (
            "/units/t@.service",
            {"desiredState": "launched", "options": SLEEPER},
            "application/json",
            400,
            'cannot activate template "t@.service"',
        ),
        (
            "/units/x.service",
            {"options": SLEEPER},
            "text/plain",
            415,
            "Content-Type must be application/json",
        ),
    ],
)
async def test_bad_requests_get_fleets_errors(
    api: aiohttp.ClientSession,
    path: str,
    body: object,
    content_type: str,
    status: int,
    message: str,
) -> None:
    assert await call(api, "PUT", path, body, content_type) == (
        status,
        {"error": {"code": status, "message": message}},
    )


async def test_existing_unit_needs_a_desired_state_and_pages_hold_a_hundred(
    fleet: FleetCluster, api: aiohttp.ClientSession
) -> None:
    names = [f"page{i:03d}.service" for i in range(150)]
    await fleet.client.submit(dict.fromkeys(names, "[Service]\nExecStart=/bin/true\n"))
    assert await call(api, "PUT", "/units/page000.service", {}) == (
        409,
        {"error": {"code": 409, "message": "must provide DesiredState to update existing unit"}},
    )
    status, first = await call(api, "GET", "/units")
    assert status == 200 and len(first["units"]) == 100  # type: ignore[index]
    token = first["nextPageToken"]  # type: ignore[index]
    assert token == encode_token(1)
    status, second = await call(api, "GET", f"/units?nextPageToken={token}")
    assert len(second["units"]) == 50 and "nextPageToken" not in second  # type: ignore[index]
    assert await call(api, "GET", "/units?nextPageToken=EwBMLg==") == (
        400,
        {"error": {"code": 400, "message": "token limit must be 100"}},
    )


async def test_reason_of_an_unplaceable_unit(
    fleet: FleetCluster, api: aiohttp.ClientSession
) -> None:
    options = [*SLEEPER, {"section": "X-Fleet", "name": "MachineMetadata", "value": "region=mars"}]
    assert (
        await call(
            api, "PUT", "/units/mars.service", {"desiredState": "launched", "options": options}
        )
    )[0] == 201
    await fleet.client.wait_until(lambda u: u["mars.service"].reason is not None, 20)
    assert await call(api, "GET", "/units/mars.service/reason") == (
        200,
        {"name": "mars.service", "reason": "no machine matches MachineMetadata region=mars"},
    )


async def test_machine_metadata_set_through_the_api_steers_scheduling(
    fleet: FleetCluster, api: aiohttp.ClientSession
) -> None:
    m2 = fleet.ids["m2"]
    options = [*SLEEPER, {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=db"}]
    await call(api, "PUT", "/units/db.service", {"desiredState": "launched", "options": options})
    await fleet.client.wait_until(lambda u: u["db.service"].reason is not None, 20)
    patch = [{"op": "add", "path": f"/{m2}/metadata/role", "value": {"value": "db"}}]
    assert await call(api, "PATCH", "/machines", patch) == (204, None)
    units = await fleet.client.wait_until(lambda u: u["db.service"].active_on(), 20)
    assert fleet.names[units["db.service"].machine] == "m2"
    _, machines = await call(api, "GET", "/machines")
    assert {m["id"]: m.get("metadata") for m in machines["machines"]}[m2] == {  # type: ignore[index]
        "region": "eu",
        "disk": "hdd",
        "role": "db",
    }
    # Removing the key moves nothing off by itself here (no other machine has it) but the
    # unit can no longer run on m2: it becomes pending again.
    remove = [{"op": "remove", "path": f"/{m2}/metadata/role"}]
    assert await call(api, "PATCH", "/machines", remove) == (204, None)
    await fleet.client.wait_until(lambda u: u["db.service"].machine is None, 20)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            [{"op": "move", "path": "/x/metadata/a", "value": {"value": "b"}}],
            "invalid op: expect add, remove, or replace",
        ),
        (
            [{"op": "add", "path": "/x/meta/a", "value": {"value": "b"}}],
            "machine metadata path invalid",
        ),
        (
            [{"op": "add", "path": "/x/metadata/a"}],
            "invalid value: add and replace require a value",
        ),
    ],
)
async def test_bad_metadata_patches_change_nothing(
    fleet: FleetCluster, api: aiohttp.ClientSession, ops: list[object], message: str
) -> None:
    ok = {"op": "add", "path": f"/{fleet.ids['m1']}/metadata/ok", "value": {"value": "yes"}}
    assert await call(api, "PATCH", "/machines", [ok, *ops]) == (
        400,
        {"error": {"code": 400, "message": message}},
    )
    assert "ok" not in (await fleet.client.machines())[fleet.ids["m1"]].metadata


@pytest.mark.machines(1)
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/machines", "GET and PATCH"),
        ("POST", "/units/x.service", "GET, PUT and DELETE"),
        ("PUT", "/units", "GET"),
        ("DELETE", "/state", "GET"),
        ("PUT", "/state/x.service", "GET"),
    ],
)
async def test_wrong_method_is_405_in_fleets_words(
    api: aiohttp.ClientSession, method: str, path: str, allowed: str
) -> None:
    status, body = await call(api, method, path, {})
    assert (status, body) == (
        405,
        {"error": {"code": 405, "message": f"only {allowed} supported against this resource"}},
    )


@pytest.mark.machines(1)
async def test_root_is_405_and_discovery_describes_the_api(api: aiohttp.ClientSession) -> None:
    async with api.get("http://fleet/") as response:
        assert response.status == 405
    status, document = await call(api, "GET", "/discovery")
    assert status == 200
    assert document["kind"] == "discovery#restDescription"  # type: ignore[index]
    assert document["rootUrl"] == "$ENDPOINT/"  # type: ignore[index]
    assert set(document["resources"]) == {"Machines", "Units", "UnitState"}  # type: ignore[index]
    assert (await call(api, "POST", "/discovery", {}))[0] == 400  # fleet's, not 405


@pytest.mark.machines(2)
async def test_state_of_one_unit(fleet: FleetCluster, api: aiohttp.ClientSession) -> None:
    body = {"desiredState": "launched", "options": SLEEPER}
    assert (await call(api, "PUT", "/units/one.service", body))[0] == 201
    units = await fleet.client.wait_until(lambda u: u["one.service"].active_on(), 20)
    status, state = await call(api, "GET", "/state/one.service")
    assert status == 200
    assert state == {
        "name": "one.service",
        "hash": units["one.service"].hash,
        "machineID": units["one.service"].machine,
        "systemdLoadState": "loaded",
        "systemdActiveState": "active",
        "systemdSubState": "running",
    }
    assert await call(api, "GET", "/state/none.service") == (
        404,
        {"error": {"code": 404, "message": "unit state does not exist"}},
    )


async def test_prometheus_metrics(fleet: FleetCluster, api: aiohttp.ClientSession) -> None:
    await call(api, "PUT", "/units/m.service", {"desiredState": "launched", "options": SLEEPER})
    await fleet.client.wait_until(lambda u: u["m.service"].active_on(), 20)
    async with api.get("http://fleet/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert "fleetd_machines 3.0" in text
    assert 'fleetd_units{desired="launched"} 1.0' in text
    assert "fleetd_units_active 1.0" in text
    assert (
        'fleetd_tasks_total{loop="engine",task="Schedule"}' in text
        or "fleetd_engine_leader" in text
    )
    # fleet's names, next to ours: the etcd calls this fleetd made, and its engine passes.
    assert 'fleet_registry_operation_duration_second_count{ops="get_all"}' in text
    assert "fleet_engine_reconcile_duration_second_count" in text
    assert "fleet_engine_leader_start_time" in text


@pytest.mark.machines(2)
async def test_tcp_api_requires_a_client_certificate(fleet: FleetCluster, tmp_path: Path) -> None:
    make_certificates(tmp_path, "IP:10.77.0.11")
    for machine in ("m1", "m2"):
        for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"):
            fleet.lab.run(
                machine,
                ["sh", "-c", f"mkdir -p /etc/fleet/tls && cat > /etc/fleet/tls/{name}"],
                input=(tmp_path / name).read_text(),
            )
    fleet.configure(
        "m1",
        api_listen="10.77.0.11:4002",
        api_tls_cert="/etc/fleet/tls/server.crt",
        api_tls_key="/etc/fleet/tls/server.key",
        api_tls_client_ca="/etc/fleet/tls/ca.crt",
    )
    fleet.systemctl("m1", "restart", "fleetd.service")
    tls = ["--endpoint", "https://10.77.0.11:4002", "--ca-file", "/etc/fleet/tls/ca.crt"]
    with_cert = [
        *tls,
        "--cert-file",
        "/etc/fleet/tls/client.crt",
        "--key-file",
        "/etc/fleet/tls/client.key",
    ]
    deadline = time.monotonic() + 20
    while (
        listing := fleet.lab.run("m2", ["fleetctl", *with_cert, "list-machines"], check=False)
    ).returncode:
        assert time.monotonic() < deadline, listing.stderr
        await asyncio.sleep(0.2)
    assert len(listing.stdout.splitlines()) == 3  # header + 2 machines
    refused = fleet.lab.run("m2", ["fleetctl", *tls, "list-machines"], check=False)
    assert (
        refused.returncode == 1
        and "error talking to fleet at https://10.77.0.11:4002" in refused.stderr
    )


async def test_names_the_machines_cannot_take_are_refused_and_old_ones_can_still_go(
    fleet: FleetCluster, api: aiohttp.ClientSession
) -> None:
    """The API refuses what fleetctl's etcd driver refuses; a unit an older fleetd accepted
    under such a name can still be stopped and destroyed (never given a new unit file)."""
    before = await fleet.registry.client.get_prefix(fleet.registry.keys.jobs)
    aliased = [*SLEEPER, {"section": "Install", "name": "Alias", "value": "sshd.service"}]
    refused = {
        ".hidden.service": (SLEEPER, 'unit name cannot start in "."'),
        "a" * 248 + ".service": (SLEEPER, "unit name exceeds maximum length (255)"),
        "fleetd.service": (SLEEPER, 'unit name "fleetd.service" is reserved: the machines ship'),
        "web.service": (aliased, 'web.service: [Install] Alias=sshd.service: unit name "sshd'),
    }
    for name, (options, message) in refused.items():
        status, body = await call(
            api, "PUT", f"/units/{name}", {"desiredState": "launched", "options": options}
        )
        assert status == 400 and body["error"]["message"].startswith(message), (name, body)  # type: ignore[index]
    after = await fleet.registry.client.get_prefix(fleet.registry.keys.jobs)
    assert [kv.key for kv in after] == [kv.key for kv in before]

    unit = parse_unit_file("[Service]\nExecStart=/bin/sleep infinity\n", ".old.service")
    record = JobRecord(".old.service", unit.hash, DesiredState.LAUNCHED)
    await fleet.registry.create_jobs([(record, unit.serialize())], replace=False)  # an old client
    assert (await call(api, "PUT", "/units/.old.service", {"desiredState": "inactive"}))[0] == 204
    assert (await fleet.registry.jobs())[".old.service"].desired == DesiredState.INACTIVE
    status, body = await call(
        api, "PUT", "/units/.old.service", {"desiredState": "launched", "options": SLEEPER}
    )
    assert (status, body["error"]["message"]) == (400, 'unit name cannot start in "."')  # type: ignore[index]
    assert (await call(api, "DELETE", "/units/.old.service"))[0] == 204


@pytest.mark.machines(2)
async def test_api_answers_503_while_a_duplicate_machine_id_keeps_trying_to_register(
    fleet: FleetCluster,
) -> None:
    """m2 is given m1's machine id (a cloned disk): its fleetd cannot register while m1's lease
    lives, answers 503 meanwhile, and keeps trying, so it registers once m1 has left."""
    fleet.systemctl("m2", "stop", "fleetd.service")
    fleet.lab.run("m2", ["sh", "-c", "cat > /etc/fleet/cloned-id"], input=fleet.ids["m1"] + "\n")
    fleet.lab.run("m2", ["rm", "-f", "/run/fleet.sock"])
    fleet.configure("m2", machine_id_file="/etc/fleet/cloned-id")
    fleet.systemctl("m2", "start", "fleetd.service")
    socket = Path(f"/proc/{fleet.lab.running_pid('m2')}/root/run/fleet.sock")
    unavailable = (503, {"error": {"code": 503, "message": UNREACHABLE}})
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as m2:
        deadline = time.monotonic() + 20
        while "already registered by a live fleetd" not in fleet.lab.journal_text(
            "m2", ["-u", "fleetd"]
        ):
            assert time.monotonic() < deadline, "m2's fleetd did not try to register"
            await asyncio.sleep(0.2)
        for _ in range(3):  # over a few of its attempts (agent_ttl 3 s: one a second or so)
            assert await call(m2, "GET", "/machines") == unavailable
            assert await call(m2, "GET", "/units/x.service") == unavailable
            await asyncio.sleep(1)
        fleet.systemctl("m1", "stop", "fleetd.service")  # m1 leaves: its lease is revoked
        deadline = time.monotonic() + 20
        while (answer := await call(m2, "GET", "/machines"))[0] != 200:
            assert answer == unavailable
            assert time.monotonic() < deadline, "m2's fleetd gave up registering"
            await asyncio.sleep(0.2)
    assert [m["id"] for m in answer[1]["machines"]] == [fleet.ids["m1"]]  # type: ignore[index]
