"""The reboot lock on a real etcd (the `etcd` fixture): N holders and no more, even when
machines race; a dead holder's lease frees its slot; a holder resumes its lease after a reboot
(another process, the same recorded lease); set-max, status and the operator's unlock through
`flotilla-lockctl`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetlab.etcd import EtcdServer
from flotilla.update.coordinator import Clock, Settings, reboot_with_lock
from flotilla.update.holding import HoldRecord
from flotilla.update.lock import EtcdTarget, RebootLock

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
SINCE = "2024-05-16T04:00:00+00:00"


@pytest.fixture
async def lock(etcd: EtcdServer) -> AsyncIterator[RebootLock]:
    async with RebootLock.open(EtcdTarget((etcd.endpoint,))) as opened:
        yield opened


async def holders(lock: RebootLock) -> list[str]:
    return [holder.machine for holder in (await lock.read()).holders]


async def test_one_slot_two_contenders_the_second_waits(lock: RebootLock) -> None:
    assert (await lock.try_acquire("m1", await lock.grant(30), SINCE)).action == "take"
    refused = await lock.try_acquire("m2", await lock.grant(30), SINCE)
    assert refused.action == "full"
    assert "max 1" in refused.reason and "held by m1" in refused.reason
    assert await holders(lock) == ["m1"]
    assert await lock.release("m1") is not None
    assert (await lock.try_acquire("m2", await lock.grant(30), SINCE)).action == "take"
    assert await holders(lock) == ["m2"]


async def test_two_slots(lock: RebootLock) -> None:
    assert await lock.set_max(2) == 1
    for machine in ("m1", "m2"):
        assert (await lock.try_acquire(machine, await lock.grant(30), SINCE)).action == "take"
    assert (await lock.try_acquire("m3", 0, SINCE)).action == "full"
    assert (await lock.try_acquire("m1", 0, SINCE)).action == "already held"
    assert await holders(lock) == ["m1", "m2"]


async def test_racing_machines_never_exceed_the_max(etcd: EtcdServer) -> None:
    """Eight machines, each with its own client, take at the same moment: exactly two win."""
    async with RebootLock.open(EtcdTarget((etcd.endpoint,))) as first:
        await first.set_max(2)

    async def contend(machine: str) -> str:
        async with RebootLock.open(EtcdTarget((etcd.endpoint,))) as mine:
            return (await mine.try_acquire(machine, await mine.grant(30), SINCE)).action

    outcomes = await asyncio.gather(*(contend(f"m{index}") for index in range(8)))
    assert sorted(outcomes) == ["full"] * 6 + ["take"] * 2
    async with RebootLock.open(EtcdTarget((etcd.endpoint,))) as reader:
        assert len((await reader.read()).holders) == 2


async def test_a_holder_that_stops_renewing_frees_its_slot(lock: RebootLock) -> None:
    dead = await lock.grant(2)
    assert (await lock.try_acquire("m1", dead, SINCE)).action == "take"
    assert (await lock.try_acquire("m2", 0, SINCE)).action == "full"
    # etcd may round a lease up by its election timeout; 4 s is well past a 2 s TTL.
    await asyncio.sleep(4)
    assert await holders(lock) == []
    assert not await lock.renew(dead)
    assert (await lock.try_acquire("m2", await lock.grant(30), SINCE)).action == "take"


async def test_a_waiter_sees_a_slot_given_back_at_once(lock: RebootLock) -> None:
    assert (await lock.try_acquire("m1", await lock.grant(30), SINCE)).action == "take"
    waiting = asyncio.create_task(lock.wait_for_change(60))
    await asyncio.sleep(0.5)  # the watch is in place
    await lock.release("m1")
    await asyncio.wait_for(waiting, 10)  # long before its 60 s
    assert (await lock.try_acquire("m2", await lock.grant(30), SINCE)).action == "take"


async def test_a_wait_with_nothing_changing_ends_at_its_timeout(lock: RebootLock) -> None:
    await asyncio.wait_for(lock.wait_for_change(0.5), 10)


RESUME = """
import asyncio, sys
from pathlib import Path
from flotilla.update.coordinator import Settings, after_reboot
from flotilla.update.holding import HoldRecord
from flotilla.update.lock import EtcdTarget, RebootLock

class Fleet:
    async def drain(self, machine): print("drain", machine)
    async def undrain(self, machine): print("undrain", machine)

async def healthy():
    return []

async def main():
    async with RebootLock.open(EtcdTarget((sys.argv[1],))) as lock:
        print(await after_reboot(Settings("m1", 6), lock, Fleet(), HoldRecord(Path(sys.argv[2])),
                                 healthy, print))
asyncio.run(main())
"""


async def test_the_holder_keeps_its_slot_across_a_reboot_and_releases_it_after(
    etcd: EtcdServer, lock: RebootLock, tmp_path: Path
) -> None:
    """Before: the coordinator takes the slot under a 6 s lease, drains and "reboots" (its
    process ends). After: another process finds the recorded lease alive, renews it, undrains
    and releases."""
    record = HoldRecord(tmp_path / "reboot-lock.json")
    rebooted: list[str] = []

    class Fleet:
        async def drain(self, machine: str) -> None:
            rebooted.append(f"drain {machine}")

        async def undrain(self, machine: str) -> None:
            rebooted.append(f"undrain {machine}")

    async with RebootLock.open(EtcdTarget((etcd.endpoint,))) as before:
        await reboot_with_lock(Settings("m1", 6, poll=0.2), before, Fleet(), record,
                               lambda: rebooted.append("reboot"), print, Clock())  # fmt: skip
    assert rebooted == ["drain m1", "reboot"]
    hold = record.load()
    assert hold is not None and hold.drained and hold.lease
    await asyncio.sleep(3)  # down for half the TTL: the hold stays
    assert await holders(lock) == ["m1"]
    assert (await lock.try_acquire("m2", 0, SINCE)).action == "full"
    after = subprocess.run(
        [sys.executable, "-c", RESUME, etcd.endpoint, str(record.path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert (
        after.stdout.splitlines()[-2:]
        == [
            "undrain m1",
            "m1 is back and healthy; released the reboot lock",
        ]
        or "undrain m1" in after.stdout
    )
    assert after.stdout.strip().endswith("released the reboot lock")
    assert await holders(lock) == []
    assert await lock.seconds_left(hold.lease) is None  # revoked, not left to run out
    assert record.load() is None


async def test_a_coordinator_waits_for_the_slot(lock: RebootLock, tmp_path: Path) -> None:
    assert (await lock.try_acquire("m2", 0, SINCE)).action == "take"
    events: list[str] = []

    class Fleet:
        async def drain(self, machine: str) -> None:
            events.append(f"drain {machine}")

        async def undrain(self, machine: str) -> None:
            events.append(f"undrain {machine}")

    waiting = asyncio.create_task(
        reboot_with_lock(
            Settings("m1", 10, poll=0.2),
            lock,
            Fleet(),
            HoldRecord(tmp_path / "hold.json"),
            lambda: events.append("reboot"),
            events.append,
        )
    )
    await asyncio.sleep(1)
    assert not waiting.done() and [e for e in events if e.startswith("waiting")]
    assert "drain m1" not in events
    await lock.unlock("m2")
    await asyncio.wait_for(waiting, 10)
    assert events[-2:] == ["drain m1", "reboot"]
    assert await holders(lock) == ["m1"]


def lockctl(etcd: EtcdServer, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "flotilla.update.lockctl", "--endpoint", etcd.endpoint,
            "--fleet-config", "/nonexistent/fleet.conf", *args]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


async def test_lockctl_status_lock_unlock_set_max(etcd: EtcdServer, lock: RebootLock) -> None:
    lease = await lock.grant(60)
    await lock.try_acquire("dead1", lease, SINCE)

    shown = await asyncio.to_thread(lockctl, etcd, "status", "--output", "json")
    document = json.loads(shown.stdout)
    assert document["max"] == 1
    assert [h["machine"] for h in document["holders"]] == ["dead1"]
    assert document["holders"][0]["lease"] == f"{lease:x}"
    assert 0 < document["holders"][0]["lease_seconds_left"] <= 60

    full = await asyncio.to_thread(lockctl, etcd, "lock", "m2")
    assert full.returncode == 1
    assert "refused: the reboot lock is full" in full.stderr and "held by dead1" in full.stderr

    for bad in ("0", "two"):
        refused = await asyncio.to_thread(lockctl, etcd, "set-max", bad)
        assert refused.returncode == 2 and "a whole number of at least 1" in refused.stderr
    assert (await lock.read()).max == 1  # nothing changed

    nobody = await asyncio.to_thread(lockctl, etcd, "unlock", "m9")
    assert nobody.returncode == 1
    assert "machine m9 holds no reboot lock (held by: dead1)" in nobody.stderr

    # The operator's override: dead1's lease is revoked with its key.
    freed = await asyncio.to_thread(lockctl, etcd, "unlock", "dead1")
    assert freed.returncode == 0, freed.stderr
    assert "unlocked the reboot lock of dead1" in freed.stdout
    assert await holders(lock) == [] and not await lock.renew(lease)

    raised = await asyncio.to_thread(lockctl, etcd, "set-max", "2")
    assert raised.returncode == 0 and "max 1 -> 2" in raised.stdout
    for machine in ("m1", "m2"):
        taken = await asyncio.to_thread(lockctl, etcd, "lock", machine)
        assert taken.returncode == 0 and f"locked the reboot lock for {machine}" in taken.stdout
    again = await asyncio.to_thread(lockctl, etcd, "lock", "m1")
    assert again.returncode == 0 and "m1 already holds the reboot lock" in again.stdout
    table = await asyncio.to_thread(lockctl, etcd, "status")
    assert table.stdout.splitlines()[0] == "max: 2  held: 2"
    assert "no lease: held until `flotilla-lockctl unlock`" in table.stdout
    lowered = await asyncio.to_thread(lockctl, etcd, "set-max", "1")
    assert "max 2 -> 1; 2 hold it now, no new holder until fewer" in lowered.stdout
    assert await holders(lock) == ["m1", "m2"]
