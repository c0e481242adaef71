"""The fence guard's peer list on a real etcd: read in full only when the machine list changed
(every machine refreshes it, so full reads cost the cluster N^2 records per refresh)."""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.fencing import PROBE_SAMPLE, PeerReport
from fleetd.guard import FenceGuard
from fleetd.heart import Heart
from fleetd.keys import Keys
from fleetd.model import Machine
from fleetd.registry import Registry
from fleetlab.etcd import EtcdServer

pytestmark = pytest.mark.cluster


@pytest.fixture
async def registry(etcd: EtcdServer) -> AsyncIterator[Registry]:
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as opened:
        yield opened


async def register(registry: Registry, machine: Machine) -> int:
    lease = await registry.grant_lease(30)
    await registry.claim_machine(machine, lease)
    return lease


async def test_the_machine_list_version_changes_with_machines_not_with_keepalives(
    registry: Registry,
) -> None:
    empty = await registry.machines_version()
    lease = await register(registry, Machine("a", "10.0.0.1"))
    one = await registry.machines_version()
    assert one != empty
    await registry.keep_alive(lease)
    assert await registry.machines_version() == one
    await registry.publish_machine(Machine("a", "10.0.0.9"), lease)
    changed = await registry.machines_version()
    assert changed != one
    await registry.revoke_lease(lease)
    assert await registry.machines_version() not in (one, changed)


async def test_the_guard_reads_every_machine_only_after_the_list_changed(
    registry: Registry, tmp_path: Path
) -> None:
    me = Machine("me", "10.0.0.1")
    await register(registry, me)
    peer = await register(registry, Machine("peer", "10.0.0.2"))
    heart = Heart(registry, me, 10.0, tmp_path / "lease")
    guard = FenceGuard(registry, heart, None, None, 7007, 1.0, tmp_path / "peers", b"k")  # type: ignore[arg-type]
    full_reads = 0
    read_all = registry.machines

    async def counted() -> dict[str, Machine]:
        nonlocal full_reads
        full_reads += 1
        return await read_all()

    registry.machines = counted  # type: ignore[method-assign]
    await guard.refresh_peers(10.0)
    assert (guard.peer_ips, full_reads) == (["10.0.0.2"], 1)
    await guard.refresh_peers(20.0)
    assert (guard.peer_ips, full_reads, guard.refreshed) == (["10.0.0.2"], 1, 20.0)
    await register(registry, Machine("new", "10.0.0.3"))
    await guard.refresh_peers(21.0)  # the list was read less than a refresh period ago
    assert (guard.peer_ips, full_reads, guard.peer_count) == (["10.0.0.2"], 1, 2)
    await guard.refresh_peers(30.0)
    assert (guard.peer_ips, full_reads) == (["10.0.0.2", "10.0.0.3"], 2)
    await registry.revoke_lease(peer)
    await guard.refresh_peers(40.0)
    assert (guard.peer_ips, full_reads, guard.peer_count) == (["10.0.0.3"], 3, 1)


async def test_etcd_answering_while_the_peers_are_asked_ends_the_tick_quietly(
    registry: Registry, tmp_path: Path
) -> None:
    """The heart may hear from etcd again during the probe (it runs beside the guard); the
    guard must not decide on a silence that has ended (it raised a TypeError here)."""
    me = Machine("me", "127.0.0.1")
    heart = Heart(registry, me, 10.0, tmp_path / "lease")
    heart.failing_since = 0.0  # etcd silent since long ago: the guard asks the peers
    not_fenced = types.SimpleNamespace(fenced=False)
    guard = FenceGuard(registry, heart, not_fenced, None, 7007, 1.0, tmp_path / "peers", b"k")  # type: ignore[arg-type]

    async def probe_while_etcd_comes_back(addresses: list[str]) -> list[PeerReport]:
        heart.failing_since = None
        return []

    guard.probe = probe_while_etcd_comes_back  # type: ignore[method-assign]
    await guard.tick()
    assert guard.last_verdict == ""


async def test_a_large_cluster_asks_a_sample_first_and_everyone_before_keeping_its_units(
    registry: Registry, tmp_path: Path
) -> None:
    """A sample's fence verdict stands; "etcd is down for everyone" keeps the units running,
    so it must hold for every peer (a sample can miss the side of a split that reaches etcd)."""
    me = Machine("me", "127.0.0.1")
    heart = Heart(registry, me, 10.0, tmp_path / "lease")
    silent = time.monotonic() - 6.0  # past suspicion (0.4 x ttl), well before the long outage
    heart.last_contact, heart.failing_since = silent, silent + 1.0
    guard = FenceGuard(registry, heart, None, None, 7007, 1.0, tmp_path / "peers", b"k")  # type: ignore[arg-type]
    guard.peer_ips = [f"10.0.{i // 200}.{i % 200 + 1}" for i in range(400)]
    reaching_etcd: set[str] = set()
    asked: list[int] = []

    async def answers(addresses: list[str]) -> list[PeerReport]:
        asked.append(len(addresses))
        return [PeerReport(a, silent + (5.0 if a in reaching_etcd else -1.0)) for a in addresses]

    guard.probe = answers  # type: ignore[method-assign]
    verdict, _ = await guard.ask_peers()  # type: ignore[misc]
    assert (verdict.fence, asked) == (False, [PROBE_SAMPLE, 400])
    reaching_etcd.update(guard.peer_ips)
    asked.clear()
    verdict, _ = await guard.ask_peers()  # type: ignore[misc]
    assert (verdict.fence, asked) == (True, [PROBE_SAMPLE])
