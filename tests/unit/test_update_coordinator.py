"""The reboot coordinator's order of steps, with a fake lock, fleet and record (pure logic):
window, lease, slot, drain, reboot; after the boot: renew, health, undrain, release."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from flotilla.update.coordinator import (
    PATIENCE_SECONDS,
    RETRY_SECONDS,
    Clock,
    LockLost,
    Settings,
    StillUnhealthy,
    Unanswered,
    after_reboot,
    reboot_with_lock,
)
from flotilla.update.fleet import DrainFailed
from flotilla.update.holding import Hold
from flotilla.update.lock_decide import (
    AcquireDecision,
    Holder,
    Semaphore,
    decide_acquire,
    full_reason,
)
from flotilla.update.reboot import FLEET_ERRORS, Patient
from flotilla.update.window import window

MACHINE = "m1"


class FakeLock:
    """The semaphore as a dict, every call logged."""

    def __init__(self, maximum: int = 1, others: Sequence[Holder] = ()) -> None:
        self.max = maximum
        self.holders = {h.machine: h for h in others}
        self.live: set[int] = set()
        self.log: list[str] = []
        self.next_lease = 100
        self.refuse_renewal = False
        self.on_watch: object = None  # None: the watch is not answered (etcd's error)

    async def grant(self, ttl: float) -> int:
        self.next_lease += 1
        self.live.add(self.next_lease)
        self.log.append(f"grant {ttl:g}")
        return self.next_lease

    async def renew(self, lease: int) -> bool:
        return lease in self.live and not self.refuse_renewal

    async def revoke(self, lease: int) -> None:
        self.live.discard(lease)
        self.log.append(f"revoke {lease}")

    async def try_acquire(self, machine: str, lease: int, since: str) -> AcquireDecision:
        semaphore = Semaphore(self.max, tuple(self.holders.values()), 1)
        decision = decide_acquire(semaphore, machine)
        self.log.append(f"acquire {decision.action}")
        if decision.action == "take":
            self.holders[machine] = Holder(machine, since, lease)
        return decision

    async def wait_for_change(self, timeout: float) -> None:
        if not callable(self.on_watch):
            raise Unanswered("watch refused")
        self.log.append("watch")
        self.on_watch()

    async def release(self, machine: str, lease: int | None = None) -> Holder | None:
        holder = self.holders.get(machine)
        if holder is None or (lease is not None and holder.lease != lease):
            return None
        del self.holders[machine]
        self.log.append("release")
        return holder


class FakeFleet:
    def __init__(self, log: list[str], fail_drain: bool = False) -> None:
        self.log = log
        self.fail_drain = fail_drain

    async def drain(self, machine: str) -> None:
        self.log.append(f"drain {machine}")
        if self.fail_drain:
            raise DrainFailed("Error waiting for drain: still on machine m1: web.service")

    async def undrain(self, machine: str) -> None:
        self.log.append(f"undrain {machine}")


class MemoryRecord:
    def __init__(self, hold: Hold | None = None) -> None:
        self.hold = hold

    def load(self) -> Hold | None:
        return self.hold

    def save(self, hold: Hold) -> None:
        self.hold = hold

    def clear(self) -> None:
        self.hold = None


class FakeTime:
    """A wall clock that moves only when the coordinator sleeps."""

    def __init__(self, start: datetime, on_sleep: object = None) -> None:
        self.current = start
        self.slept: list[float] = []
        self.on_sleep = on_sleep

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)
        if callable(self.on_sleep):
            self.on_sleep()

    @property
    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


THURSDAY_NOON = datetime(2024, 5, 16, 12, 0)


async def coordinate(
    lock: FakeLock, fleet: FakeFleet, record: MemoryRecord, time: FakeTime, **settings: object
) -> str:
    def reboot() -> None:
        lock.log.append("reboot")

    return await reboot_with_lock(
        Settings(MACHINE, 600, **settings),  # type: ignore[arg-type]
        lock,
        fleet,
        record,
        reboot,
        lock.log.append,
        time.clock,
    )


ACTIONS = {"grant", "acquire", "drain", "undrain", "reboot", "release", "revoke", "health"}


def steps(log: list[str]) -> list[str]:
    """The actions, without what was said to the user."""
    return [line for line in log if line.split()[0] in ACTIONS]


async def test_lease_then_slot_then_drain_then_reboot() -> None:
    lock, record = FakeLock(), MemoryRecord()
    said = await coordinate(lock, FakeFleet(lock.log), record, FakeTime(THURSDAY_NOON))
    assert steps(lock.log) == ["grant 600", "acquire take", f"drain {MACHINE}", "reboot"]
    assert "rebooting m1 under the reboot lock" in said
    # Kept across the reboot: the hold, its lease, and that fleet drained the machine.
    assert record.hold == Hold(MACHINE, 101, record.hold.since, drained=True)  # type: ignore[union-attr]
    assert MACHINE in lock.holders


async def test_no_drain_where_fleetd_does_not_run() -> None:
    lock = FakeLock()
    await coordinate(lock, FakeFleet(lock.log), MemoryRecord(), FakeTime(THURSDAY_NOON),
                     drain=False)  # fmt: skip
    assert steps(lock.log) == ["grant 600", "acquire take", "reboot"]


async def test_waits_for_the_window_before_taking_anything() -> None:
    lock, time = FakeLock(), FakeTime(THURSDAY_NOON)
    await coordinate(lock, FakeFleet(lock.log), MemoryRecord(), time,
                     window=window("Fri 04:00", "1h"))  # fmt: skip
    assert time.slept == [16 * 3600.0]  # until Friday 04:00
    assert lock.log[0].startswith("outside the maintenance window (Fri 04:00 for 1h)")
    assert steps(lock.log) == ["grant 600", "acquire take", f"drain {MACHINE}", "reboot"]


async def test_a_slot_given_back_is_taken_as_soon_as_the_watch_sees_it() -> None:
    lock = FakeLock(others=[Holder("m2", "2024-05-16T11:00:00+00:00", 7)])
    lock.on_watch = lambda: lock.holders.pop("m2")
    time = FakeTime(THURSDAY_NOON)
    await coordinate(lock, FakeFleet(lock.log), MemoryRecord(), time, poll=15.0)
    assert time.slept == []  # no poll: the watch said at once
    assert [line for line in lock.log if line.split()[0] in {"acquire", "watch"}] == [
        "acquire full",
        "watch",
        "acquire take",
    ]


async def test_a_full_lock_is_waited_for_and_said_once() -> None:
    """Here the watch is refused (etcd not answering it): a plain wait of `poll` each time."""
    other = Holder("m2", "2024-05-16T11:00:00+00:00", 7)
    lock = FakeLock(others=[other])
    polls = 0

    def release_after_three_polls() -> None:
        nonlocal polls
        polls += 1
        if polls == 3:
            lock.holders.pop("m2")

    time, record = FakeTime(THURSDAY_NOON, release_after_three_polls), MemoryRecord()
    await coordinate(lock, FakeFleet(lock.log), record, time, poll=15.0)
    assert time.slept == [15.0, 15.0, 15.0]
    waiting = [line for line in lock.log if line.startswith("waiting")]
    assert waiting == [f"waiting: {full_reason(Semaphore(1, (other,), 1))}"]
    assert steps(lock.log)[-2:] == [f"drain {MACHINE}", "reboot"]
    # Its "since" is when it took the slot, after the 45 s of waiting, not when it began.
    assert lock.holders[MACHINE].since == "2024-05-16T12:00:45+00:00"
    assert record.hold.since == lock.holders[MACHINE].since  # type: ignore[union-attr]


async def test_a_failed_drain_undoes_everything_and_does_not_reboot() -> None:
    lock, record = FakeLock(), MemoryRecord()
    with pytest.raises(DrainFailed, match=r"still on machine m1: web\.service"):
        await coordinate(lock, FakeFleet(lock.log, fail_drain=True), record,
                         FakeTime(THURSDAY_NOON))  # fmt: skip
    assert "reboot" not in lock.log
    assert steps(lock.log) == ["grant 600", "acquire take", f"drain {MACHINE}", "release",
                               "revoke 101"]  # fmt: skip
    assert record.hold is None and not lock.holders and not lock.live


async def test_a_lock_already_held_by_hand_is_used_as_it_is() -> None:
    manual = Holder(MACHINE, "2024-05-16T10:00:00+00:00", 0)
    lock, record = FakeLock(others=[manual]), MemoryRecord()
    await coordinate(lock, FakeFleet(lock.log), record, FakeTime(THURSDAY_NOON))
    assert steps(lock.log) == ["grant 600", "acquire already held", "revoke 101",
                               f"drain {MACHINE}", "reboot"]  # fmt: skip
    assert record.hold == Hold(MACHINE, 0, manual.since, drained=True)


async def test_a_lease_lost_before_the_reboot_stops_it() -> None:
    lock = FakeLock()
    lock.refuse_renewal = True
    fleet = FakeFleet(lock.log)

    async def slow_drain(machine: str) -> None:
        lock.log.append(f"drain {machine}")
        await asyncio_sleep(0.05)  # the renewal task runs meanwhile and finds the lease gone

    fleet.drain = slow_drain  # type: ignore[method-assign]
    with pytest.raises(LockLost):
        await coordinate(lock, fleet, MemoryRecord(), FakeTime(THURSDAY_NOON))
    assert "reboot" not in lock.log
    assert f"undrain {MACHINE}" in lock.log


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# -- after the reboot ------------------------------------------------------------------------


async def finish(lock: FakeLock, record: MemoryRecord, problems: list[str]) -> str:
    async def healthy() -> list[str]:
        lock.log.append("health")
        return problems

    return await after_reboot(Settings(MACHINE, 600), lock, FakeFleet(lock.log), record,
                              healthy, lock.log.append)  # fmt: skip


async def test_after_the_reboot_health_then_undrain_then_release() -> None:
    lock = FakeLock()
    lease = await lock.grant(600)
    lock.holders[MACHINE] = Holder(MACHINE, "t", lease)
    record = MemoryRecord(Hold(MACHINE, lease, "t", drained=True))
    said = await finish(lock, record, [])
    assert steps(lock.log) == ["grant 600", "health", f"undrain {MACHINE}", "release"]
    assert said == "m1 is back and healthy; released the reboot lock"
    assert record.hold is None and not lock.holders


async def test_nothing_to_do_without_a_hold() -> None:
    lock = FakeLock()
    assert "holds no reboot lock" in await finish(lock, MemoryRecord(), [])
    assert lock.log == []


async def test_unhealthy_keeps_the_lock_and_stays_drained() -> None:
    lock = FakeLock()
    lease = await lock.grant(600)
    lock.holders[MACHINE] = Holder(MACHINE, "t", lease)
    record = MemoryRecord(Hold(MACHINE, lease, "t", drained=True))
    with pytest.raises(StillUnhealthy, match=r"fleetd is not registered.*keeps the reboot lock"):
        await finish(lock, record, ["fleetd is not registered"])
    assert "undrain m1" not in lock.log and "release" not in lock.log
    assert record.hold is not None and MACHINE in lock.holders


async def test_a_lease_that_ran_out_while_down_still_undrains() -> None:
    lock = FakeLock()  # the lease is not live: etcd dropped it and the holder key
    record = MemoryRecord(Hold(MACHINE, 555, "t", drained=True))
    said = await finish(lock, record, [])
    assert any("ran out while m1 was down" in line for line in lock.log)
    assert f"undrain {MACHINE}" in lock.log and "release" not in lock.log
    assert "held no reboot lock any more" in said and record.hold is None


async def test_the_first_renewal_after_the_boot_waits_for_etcd_to_answer() -> None:
    lock = FakeLock()
    lease = await lock.grant(600)
    lock.holders[MACHINE] = Holder(MACHINE, "t", lease)
    unanswered = 2
    renew = lock.renew

    async def renew_once_etcd_answers(lease: int) -> bool:
        nonlocal unanswered
        if unanswered:
            unanswered -= 1
            raise ConnectionError("etcd is still starting")
        return await renew(lease)

    lock.renew = renew_once_etcd_answers  # type: ignore[method-assign]
    time = FakeTime(THURSDAY_NOON)
    record = MemoryRecord(Hold(MACHINE, lease, "t", drained=True))
    said = await after_reboot(Settings(MACHINE, 600), lock, FakeFleet(lock.log), record,
                              async_no_problems, lock.log.append, time.clock)  # fmt: skip
    assert time.slept == [3.0, 3.0]
    assert said == "m1 is back and healthy; released the reboot lock"


async def async_no_problems() -> list[str]:
    return []


class SlowFleet(FakeFleet):
    """A fleet whose first `misses` drains time out (a busy machine under QEMU)."""

    def __init__(self, log: list[str], misses: int) -> None:
        super().__init__(log)
        self.misses = misses

    async def drain(self, machine: str) -> None:
        self.log.append(f"drain {machine}")
        if self.misses:
            self.misses -= 1
            raise Unanswered("error talking to fleet: TimeoutError")


async def test_a_drain_that_times_out_is_asked_again_and_the_reboot_goes_on() -> None:
    lock, record, time = FakeLock(), MemoryRecord(), FakeTime(THURSDAY_NOON)
    said = await coordinate(lock, SlowFleet(lock.log, misses=2), record, time)
    assert steps(lock.log) == ["grant 600", "acquire take", *[f"drain {MACHINE}"] * 3, "reboot"]
    assert time.slept == [RETRY_SECONDS, RETRY_SECONDS]
    assert sum("asking again every" in line for line in lock.log) == 1  # said once
    assert "rebooting" in said


async def test_etcd_unanswered_past_the_patience_gives_up_with_nothing_held() -> None:
    class DeafLock(FakeLock):
        async def grant(self, ttl: float) -> int:
            self.log.append(f"grant {ttl:g}")
            raise Unanswered("failed to connect to all addresses")

    lock, record, time = DeafLock(), MemoryRecord(), FakeTime(THURSDAY_NOON)
    with pytest.raises(Unanswered):
        await coordinate(lock, FakeFleet(lock.log), record, time)
    assert sum(time.slept) == PATIENCE_SECONDS
    assert "reboot" not in steps(lock.log) and not lock.holders and record.hold is None


async def test_a_drain_fleet_did_not_finish_reaches_the_coordinator_as_unanswered() -> None:
    class StuckFleet:
        async def drain(self, machine: str) -> None:
            raise DrainFailed("Error waiting for drain: still on machine m1: web.service")

    fleet = Patient(StuckFleet(), FLEET_ERRORS)
    with pytest.raises(Unanswered, match="still on machine m1"):
        await fleet.drain("m1")
