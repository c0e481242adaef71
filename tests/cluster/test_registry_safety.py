"""The registry on a real etcd when the data is odd: malformed records, big replies, bodies
collected while a client stores them again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.heart import Heart
from fleetd.keys import Keys
from fleetd.model import Assign, Assignment, DesiredState, JobRecord, Machine, Schedule
from fleetd.registry import (
    Conflict,
    DuplicateMachine,
    LeaseExpired,
    Registry,
    RegistryError,
    encode_job,
    encode_machine,
)
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
    reads = {"get": etcd.get, "get_prefix": etcd.get_prefix}  # a few names are read by key

    def read_then_replace(method: str):  # type: ignore[no-untyped-def]
        async def read(*args: object, **kwargs: object) -> object:
            found = await reads[method](*args, **kwargs)  # type: ignore[operator]
            etcd.get, etcd.get_prefix = reads["get"], reads["get_prefix"]  # type: ignore[method-assign]
            # a `submit --replace` lands right after this one read
            replaced = JobRecord("web.service", "new", LOADED)
            await etcd.put(keys.job("web.service"), encode_job(replaced))
            return found

        return read

    etcd.get = read_then_replace("get")  # type: ignore[method-assign]
    etcd.get_prefix = read_then_replace("get_prefix")  # type: ignore[method-assign]
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


async def test_a_second_fleetd_with_the_same_machine_id_is_refused(registry: Registry) -> None:
    first, second = await registry.grant_lease(30), await registry.grant_lease(30)
    await registry.claim_machine(Machine("same", "10.0.0.1"), first)
    with pytest.raises(DuplicateMachine, match=r"registered by a live fleetd at 10\.0\.0\.1"):
        await registry.claim_machine(Machine("same", "10.0.0.2"), second)
    assert (await registry.machines())["same"].ip == "10.0.0.1"
    await registry.claim_machine(Machine("same", "10.0.0.3"), first)  # its own: a new address
    await registry.revoke_lease(first)
    await registry.claim_machine(Machine("same", "10.0.0.2"), second)  # once the first is gone


async def test_a_failed_registration_never_leaves_a_second_lease(
    registry: Registry, tmp_path: Path
) -> None:
    heart = Heart(registry, Machine("m", "10.0.0.1"), 5.0, tmp_path / "lease")
    claim, grants = registry.claim_machine, []
    grant = registry.grant_lease

    async def counted_grant(ttl: float) -> int:
        grants.append(await grant(ttl))
        return grants[-1]

    async def lost_reply(*args: object) -> None:
        await claim(*args)  # type: ignore[arg-type]
        raise RegistryError("registering machine m: the reply was lost")

    registry.grant_lease = counted_grant  # type: ignore[method-assign]
    registry.claim_machine = lost_reply  # type: ignore[method-assign]
    with pytest.raises(RegistryError):
        await heart.beat()
    registry.claim_machine = claim  # type: ignore[method-assign]
    await heart.beat()
    assert len(grants) == 1 and heart.lease == grants[0]


async def test_a_new_agent_ttl_moves_the_machine_to_a_new_lease_without_a_gap(
    registry: Registry, tmp_path: Path
) -> None:
    machine = Machine("m", "10.0.0.1")
    before = Heart(registry, machine, 5.0, tmp_path / "lease")
    await before.beat()
    key = registry.keys.machine("m")
    events = await registry.client.watch(key)
    after = Heart(registry, machine, 3.0, tmp_path / "lease")  # fleetd restarted, new agent_ttl
    await after.beat()
    assert after.lease != before.lease
    assert (await registry.client.get(key)).lease == after.lease
    seen = []
    async with asyncio.timeout(1):
        async for event in events:
            seen.append(event.kind)
            if event.kind != "PUT":
                break
            await events.cancel()
    assert seen == ["PUT"], "the machine key was deleted while the lease changed"
    with pytest.raises(LeaseExpired):
        await registry.keep_alive(before.lease)  # revoked once the new one held the machine


async def test_a_plan_of_hundreds_of_placements_fits_etcds_transaction_limits(
    registry: Registry,
) -> None:
    keys, etcd = registry.keys, registry.client
    await etcd.put(keys.leader, b"me")
    leader = (await etcd.get(keys.leader)).create_revision
    names = [f"u{i}.service" for i in range(300)]
    for name in names:
        await etcd.put(keys.job(name), encode_job(JobRecord(name, "h", LAUNCHED)))
    snapshot = await registry.snapshot()
    plan = [Schedule(name, "m1", "least loaded") for name in names]
    plan += [Assign("m1", n, Assignment("h", LAUNCHED), "newly placed here") for n in names]
    await registry.apply_engine_tasks(plan, leader, snapshot.job_revisions)
    assert len((await registry.snapshot()).placements) == 300


async def test_a_watch_ends_quietly_when_the_client_dropped_its_channel(registry: Registry) -> None:
    """After a request failed, the client drops its channel (to try the next member) and aetcd
    forgets its watcher; a watch closed then must close, not raise aetcd's AttributeError
    (which would end the caller's watch loop for good instead of re-watching)."""
    watch = registry.watch(registry.keys.jobs)
    first = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)  # the watch is set up and waiting
    await registry.client.put(registry.keys.job("x.service"), b"{}")
    assert (await asyncio.wait_for(first, 5)).key == "x.service"
    registry.client.move_on(registry.client._generation, "a test moves to the next member")
    await watch.aclose()  # its cancel reaches a client without a watcher
