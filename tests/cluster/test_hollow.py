"""Hollow machines (bench/hollow_machine.py) against a real etcd: the measuring instrument of
bench/hollow.py registers, runs what the engine assigns, and a crashed one's units move. The
systemd here is simulated; what systemd does is tested on the lab's real machines elsewhere."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bench.hollow_fleet import HollowFleet, plan_workers
from bench.hollow_machine import HollowMachine, HollowSettings
from bench.hollow_systemd import Latencies
from fleetd.client import FleetClient
from fleetd.keys import Keys
from fleetd.registry import Registry
from fleetlab.etcd import EtcdServer, free_ports

pytestmark = pytest.mark.cluster
TTL = 3.0
REPO = Path(__file__).resolve().parents[2]
UNIT = "[Service]\nExecStart=/bin/sleep infinity\n"


@asynccontextmanager
async def hollow_machines(
    etcd: EtcdServer, tmp_path: Path, engine_interval: float = 2.0
) -> AsyncIterator[list[HollowMachine]]:
    (port,) = free_ports(1)
    keys = Keys("/_coreos.com/fleet/")
    settings = HollowSettings(
        etcd.endpoint,
        keys,
        agent_ttl=TTL,
        peer_port=port,
        engine_interval=engine_interval,
        latencies=Latencies(0.01, 0.01),
    )
    machines = [HollowMachine(i, settings, tmp_path) for i in range(3)]
    for machine in machines:
        await machine.start()
    try:
        yield machines
    finally:
        await asyncio.gather(*(m.halt() for m in machines))


@pytest.fixture
async def hollow(etcd: EtcdServer, tmp_path: Path) -> AsyncIterator[list[HollowMachine]]:
    async with hollow_machines(etcd, tmp_path) as machines:
        yield machines


async def until(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def active(machines: list[HollowMachine]) -> set[str]:
    return {unit for m in machines if m.alive for unit in m.active_units()}


async def test_hollow_machines_run_units_and_a_crashed_ones_move(
    etcd: EtcdServer, hollow: list[HollowMachine]
) -> None:
    names = [f"h{i}.service" for i in range(9)]
    async with Registry.open(etcd.endpoint, Keys("/_coreos.com/fleet/"), 3.0) as registry:
        client = FleetClient(registry)
        await until(lambda: all(m.heart and m.heart.registered.is_set() for m in hollow), 10)
        assert len(await client.machines()) == 3
        # Only the leading engine watches jobs, machines and metadata.
        await until(lambda: sum(bool(m.engine and m.engine.cluster_watches) for m in hollow), 10)
        watching = [m for m in hollow if m.engine and m.engine.cluster_watches]
        assert len(watching) == 1 and watching[0].engine.leading_since is not None  # type: ignore[union-attr]
        await client.start(names, dict.fromkeys(names, UNIT))
        await until(lambda: active(hollow) == set(names), 15)
        assert all(m.active_units() for m in hollow), "the engine spreads the units"
        victim = next(m for m in hollow if m.engine and m.engine.leading_since is None)
        lost = victim.active_units()
        await victim.crash()
        assert active(hollow) == set(names) - lost, "the crashed machine's units vanished"
        moved_after = await until(lambda: active(hollow) == set(names), TTL + 10)
        assert moved_after >= TTL - 1, "nothing moves before the lease can expire"
        states = await client.unit_states()
        assert {unit for unit, machine in states if machine == victim.machine.id} == set()


async def test_followers_campaign_on_leader_news_and_take_over_a_crashed_leader(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    async with hollow_machines(etcd, tmp_path, engine_interval=0.25) as hollow:
        await check_campaigns(hollow)


async def check_campaigns(hollow: list[HollowMachine]) -> None:
    await until(lambda: sum(m.engine.leading_since is not None for m in hollow) == 1, 10)  # type: ignore[union-attr]
    calls: dict[str, int] = {}
    for machine in hollow:
        registry = machine.engine.registry  # type: ignore[union-attr]
        campaign = registry.campaign

        async def counted(machine_id: str, lease: int, campaign=campaign) -> int | None:  # type: ignore[no-untyped-def]
            calls[machine_id] = calls.get(machine_id, 0) + 1
            return await campaign(machine_id, lease)

        registry.campaign = counted  # type: ignore[method-assign]
    await asyncio.sleep(2 * TTL)
    leader = next(m for m in hollow if m.engine.leading_since is not None)  # type: ignore[union-attr]
    followers = [m for m in hollow if m is not leader]
    interval = leader.engine.interval  # type: ignore[union-attr]
    assert calls[leader.machine.id] >= TTL / interval, "the leader's passes go on"
    for follower in followers:
        # Without news from the leader watch, about one campaign per agent_ttl, not per pass.
        assert calls.get(follower.machine.id, 0) <= 3, calls
    assert calls[leader.machine.id] >= 4 * calls.get(followers[0].machine.id, 0)
    await leader.crash()
    taken_over = await until(
        lambda: sum(m.engine.leading_since is not None for m in followers) == 1,  # type: ignore[union-attr]
        TTL + 5,
    )
    assert taken_over <= TTL + 2 * interval, "the watch hands leadership on at the lease's end"


async def test_workers_register_their_machines_and_a_killed_workers_units_move(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    config = {
        "endpoint": etcd.endpoint,
        "prefix": "/_coreos.com/fleet/",
        "agent_ttl": TTL,
        "peer_port": port,
        "engines": 1,
        "start_latency": 0.01,
        "stop_latency": 0.01,
        "deadline": 120,
    }
    names = [f"w{i}.service" for i in range(8)]
    fleet = await HollowFleet.start(plan_workers(5, 1, 2), config, tmp_path)
    try:
        await until(lambda: fleet.registered() == 5 and fleet.leader() == 0, 30)
        async with Registry.open(etcd.endpoint, Keys("/_coreos.com/fleet/"), 3.0) as registry:
            await FleetClient(registry).start(names, dict.fromkeys(names, UNIT))
        await until(lambda: fleet.active() == len(names), 15)
        engines, victim, survivor = fleet.workers
        placement = await fleet.placement()
        assert any(placement[i] for i in victim.machines), "the engine spreads the units"
        victim.process.kill()
        await until(lambda: victim.exited.is_set(), 5)
        with pytest.raises(RuntimeError, match="ended"):
            fleet.check()
        victim.halting = True  # expected from here on
        await until(lambda: fleet.active() == len(names), TTL + 10)
        placement = await fleet.placement()
        assert {u for i in survivor.machines + engines.machines for u in placement[i]} == set(names)
    finally:
        await fleet.close()
    for worker in fleet.workers:
        assert worker.process.returncode is not None
        assert not Path(f"/proc/{worker.pid}").exists()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rpartition(")")[2].split()[1] == str(pid):
                found.append(int(entry.name))
    return found


async def test_a_killed_benchmark_leaves_no_worker_etcd_or_directory(tmp_path: Path) -> None:
    bench = REPO / "bench" / "hollow.py"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(bench),
        *("--machines", "4", "--engines", "1", "--agent-ttl", str(TTL), "--deadline", "120"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while b"machines registered" not in await process.stdout.readline():
            pass
    left = children(process.pid)
    assert len(left) >= 4, "etcd, the reaper and the workers"
    shm = list(Path("/dev/shm").glob(f"flotilla-hollow-{process.pid}-*"))
    process.kill()
    await process.wait()
    await until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in left), 10)
    assert not list(tmp_path.glob("flotilla-hollow-*"))
    assert not any(path.exists() for path in shm)
