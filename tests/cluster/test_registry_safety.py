"""The registry on a real etcd when the data is odd: malformed records, big replies, bodies
collected while a client stores them again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetd.keys import Keys
from fleetd.model import Assign, Assignment, DesiredState, Machine, Schedule
from fleetd.registry import Conflict, JobRecord, Registry, encode_job, encode_machine
from fleetlab.etcd import EtcdServer

pytestmark = pytest.mark.cluster
LOADED, LAUNCHED = DesiredState.LOADED, DesiredState.LAUNCHED


@pytest.fixture
async def registry(etcd: EtcdServer) -> AsyncIterator[Registry]:
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as opened:
        yield opened


async def test_malformed_records_are_skipped_without_losing_a_machine_or_a_job(
    registry: Registry,
) -> None:
    keys, etcd = registry.keys, registry.client
    await etcd.put(keys.machine("good"), encode_machine(Machine("good", "10.0.0.1")))
    await etcd.put(keys.machine("bad"), b"\xff garbage")
    await etcd.put(keys.job("broken.service"), b'{"hash": 1}')
    await etcd.put(keys.assignment("good", "x.service"), b"[]")
    snapshot = await registry.snapshot()
    assert set(snapshot.machines) == {"good", "bad"}  # its lease is alive: it keeps its units
    assert "malformed job record" in snapshot.broken_jobs["broken.service"]
    assert snapshot.assignments == {}
    assert set(await registry.machines()) == {"good", "bad"}


async def test_replies_larger_than_grpcs_default_limit_are_read(registry: Registry) -> None:
    bodies = {f"{i:040x}": f"# {i}\n" + "x" * (1 << 20) for i in range(6)}  # 6 MiB
    for unit_hash, body in bodies.items():
        await registry.client.put(registry.keys.unit_body(unit_hash), body.encode())
    assert await registry.unit_bodies() == bodies


async def test_collecting_bodies_spares_one_stored_again(registry: Registry) -> None:
    keys, etcd = registry.keys, registry.client
    await etcd.put(keys.leader, b"me")
    leader = (await etcd.get(keys.leader)).create_revision
    await etcd.put(keys.unit_body("a" * 40), b"old")
    await etcd.put(keys.unit_body("b" * 40), b"old")
    seen = await registry.unit_body_revisions()
    await etcd.put(keys.unit_body("b" * 40), b"old")  # a client stores it again
    doomed = sorted(seen.items())
    assert await registry.delete_unit_bodies(doomed, leader) == 1
    assert set(await registry.unit_body_revisions()) == {"b" * 40}
    assert await registry.delete_unit_bodies(doomed, leader + 1000) == 0  # not the leader


async def test_setting_a_desired_state_never_writes_back_a_replaced_unit_file(
    registry: Registry,
) -> None:
    keys, etcd = registry.keys, registry.client
    await etcd.put(keys.job("web.service"), encode_job(JobRecord("web.service", "old", LOADED)))
    read = etcd.get_prefix

    async def read_then_replace(*args: object, **kwargs: object) -> object:
        found = await read(*args, **kwargs)  # type: ignore[arg-type]
        etcd.get_prefix = read  # a `submit --replace` lands right after this one read
        await etcd.put(keys.job("web.service"), encode_job(JobRecord("web.service", "new", LOADED)))
        return found

    etcd.get_prefix = read_then_replace  # type: ignore[method-assign]
    await registry.set_desired(["web.service"], DesiredState.LAUNCHED)
    assert (await registry.jobs())["web.service"] == JobRecord("web.service", "new", LAUNCHED)


async def test_a_plan_from_a_stale_snapshot_cannot_start_a_unit_stopped_since(
    registry: Registry,
) -> None:
    keys, etcd = registry.keys, registry.client
    await etcd.put(keys.leader, b"me")
    leader = (await etcd.get(keys.leader)).create_revision
    await etcd.put(keys.job("web.service"), encode_job(JobRecord("web.service", "h", LAUNCHED)))
    snapshot = await registry.snapshot()
    await registry.set_desired(["web.service"], DesiredState.INACTIVE)  # `fleetctl stop`
    plan = [
        Schedule("web.service", "m1", "least loaded"),
        Assign("m1", "web.service", Assignment("h", LAUNCHED), "newly placed here"),
    ]
    with pytest.raises(Conflict):
        await registry.apply_engine_tasks(plan, leader, snapshot.job_revisions)
    assert await etcd.get(keys.assignment("m1", "web.service")) is None
    assert await etcd.get(keys.placement("web.service")) is None
