"""The reboot coordinator: the `etcd-lock` strategy, and its post-boot half.

Before the reboot (`reboot_with_lock`, from `update now`):
    wait_for_window -> grant a lease of REBOOT_LOCK_TTL and record it (holding.py) -> take a
    slot of the semaphore under it, waiting while it is full -> drain this machine through
    fleet -> reboot. The lease is renewed every third of its TTL while this runs; once the
    process ends (the reboot stops it) the TTL is what the machine has to come back in.
After the boot (`after_reboot`, flotilla-update-after-reboot.service):
    renew the recorded lease at once -> wait until this boot is healthy (the trial blessed, or
    the fallback slot's health check passed) -> undrain -> release the slot -> forget the record.

The lock is released only once the machine is back, healthy and undrained. A machine that
never comes back stops renewing, and etcd deletes its holder key when the lease runs out: the
next machine goes on. Every side effect is a parameter (the lock, fleet, the record, the clock,
the reboot), so the order of the steps is tested with fakes and the lock itself on a real etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from .holding import Hold
from .lock_decide import RENEWALS_PER_TTL, AcquireDecision, Holder
from .window import MaintenanceWindow, is_open, next_opening

T = TypeVar("T")
WAIT_POLL = 15.0  # seconds: the longest wait for a change while the semaphore is full
RETRY_SECONDS = 5.0  # between attempts while etcd or fleet does not answer
# How long etcd or fleet may go without answering before the coordinator gives up. A machine
# writing its slot, or its neighbours writing theirs, can keep them busy past a request's timeout
# for a while (seen under QEMU: the first etcd connection and a drain's API call timed out).
PATIENCE_SECONDS = 300.0


class Unanswered(Exception):
    """What a lock or fleet call raises when etcd or fleet did not answer (a timeout, a refused
    connection): worth asking again. Its adapters (reboot.py) map their errors to it."""


class LockLost(RuntimeError):
    """This machine's hold ended under it (its lease ran out, or an operator unlocked it)."""


class StillUnhealthy(RuntimeError):
    """After the reboot, the machine did not become healthy; it keeps the lock (until its lease
    runs out) and stays drained."""


class Lock(Protocol):
    async def grant(self, ttl: float) -> int: ...
    async def renew(self, lease: int) -> bool: ...
    async def revoke(self, lease: int) -> None: ...
    async def try_acquire(self, machine: str, lease: int, since: str) -> AcquireDecision: ...
    async def wait_for_change(self, timeout: float) -> None: ...
    async def release(self, machine: str, lease: int | None = None) -> Holder | None: ...


class Fleet(Protocol):
    async def drain(self, machine: str) -> None: ...
    async def undrain(self, machine: str) -> None: ...


class Record(Protocol):
    def load(self) -> Hold | None: ...
    def save(self, hold: Hold) -> None: ...
    def clear(self) -> None: ...


@dataclass(frozen=True)
class Clock:
    now: Callable[[], datetime] = datetime.now  # the local wall clock, for the window
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def stamp(self) -> str:
        return self.now().astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Settings:
    machine: str  # this machine's id (/etc/machine-id)
    ttl: float  # seconds: REBOOT_LOCK_TTL
    window: MaintenanceWindow | None = None
    drain: bool = True  # fleetd runs here: move its units away first
    poll: float = WAIT_POLL


@asynccontextmanager
async def renewed(lock: Lock, lease: int, interval: float) -> AsyncIterator[asyncio.Event]:
    """Renew `lease` every `interval` seconds while the block runs (lease 0: nothing to renew).
    The event is set once the lease is found gone; an etcd error is retried at the next tick."""
    lost = asyncio.Event()

    async def renew_until_lost() -> None:
        while True:
            with contextlib.suppress(Exception):  # etcd unreachable now: the TTL has room
                if not await lock.renew(lease):
                    lost.set()
                    return
            await asyncio.sleep(interval)

    task = asyncio.create_task(renew_until_lost()) if lease else None
    try:
        yield lost
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def patiently(
    call: Callable[[], Awaitable[T]], what: str, say: Callable[[str], None], clock: Clock
) -> T:
    """`call()`, asked again every RETRY_SECONDS while it is Unanswered, for up to
    PATIENCE_SECONDS; then its last error is raised."""
    waited = 0.0
    while True:
        try:
            return await call()
        except Unanswered as error:
            if waited >= PATIENCE_SECONDS:
                raise
            if waited == 0:
                say(f"{what}: {error}; asking again every {RETRY_SECONDS:.0f}s")
            await clock.sleep(RETRY_SECONDS)
            waited += RETRY_SECONDS


async def wait_for_window(
    window: MaintenanceWindow | None, clock: Clock, say: Callable[[str], None]
) -> None:
    while not is_open(now := clock.now(), window):
        opening = next_opening(now, window)
        say(f"outside the maintenance window ({window}); waiting until {opening:%a %Y-%m-%d %H:%M}")
        await clock.sleep(max(1.0, (opening - now).total_seconds()))


async def reboot_with_lock(
    settings: Settings,
    lock: Lock,
    fleet: Fleet,
    record: Record,
    reboot: Callable[[], None],
    say: Callable[[str], None],
    clock: Clock = Clock(),
) -> str:
    """Take a slot, drain, reboot. On a failure before the reboot the slot is given back and
    the machine undrained, and the error raised: nothing is left half-done."""
    await wait_for_window(settings.window, clock, say)
    interval = settings.ttl / RENEWALS_PER_TTL
    lease = await patiently(lambda: lock.grant(settings.ttl), "etcd", say, clock)
    hold = Hold(settings.machine, lease, clock.stamp())
    record.save(hold)  # first: a hold taken after a crash here is found and cleared after boot
    try:
        async with renewed(lock, lease, interval):
            hold = await take_slot(settings, lock, hold, record, clock, say)
        async with renewed(lock, hold.lease, interval) as lost:
            if settings.drain:
                say(f"draining {settings.machine} through fleet")
                await patiently(lambda: fleet.drain(settings.machine), "fleet", say, clock)
                hold = hold.with_drained(True)
                record.save(hold)
            if lost.is_set():
                raise LockLost(f"the reboot lock of {settings.machine} ended before the reboot"
                               " (its lease ran out, or it was unlocked)")  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            await give_back(settings, lock, fleet, record, hold, say)
        raise
    reboot()
    return f"rebooting {settings.machine} under the reboot lock (lease {hold.lease:x})"


async def take_slot(
    settings: Settings,
    lock: Lock,
    hold: Hold,
    record: Record,
    clock: Clock,
    say: Callable[[str], None],
) -> Hold:
    """Wait (inside the window) for a free slot and take it under `hold`'s lease. A slot this
    machine already holds (a `lock` by hand, or an earlier run) is kept, under its own lease."""
    last_reason = ""
    while True:
        await wait_for_window(settings.window, clock, say)
        taking = replace(hold, since=clock.stamp())  # a holder's "since" is when it took the slot
        decision = await patiently(
            lambda taking=taking: lock.try_acquire(settings.machine, taking.lease, taking.since),
            "etcd",
            say,
            clock,
        )
        if decision.action == "take":
            record.save(taking)
            say(f"took the reboot lock for {settings.machine}")
            return taking
        if decision.action == "already held" and decision.holder is not None:
            held = decision.holder
            await lock.revoke(hold.lease)  # ours is not needed: the slot lives under its own
            adopted = Hold(settings.machine, held.lease, held.since or hold.since)
            record.save(adopted)
            say(f"{settings.machine} already holds the reboot lock (since {held.since})")
            return adopted
        if decision.reason != last_reason:
            say(f"waiting: {decision.reason}")
            last_reason = decision.reason
        await until_lock_changes(lock, settings.poll, clock)


async def until_lock_changes(lock: Lock, poll: float, clock: Clock) -> None:
    """Until the lock changes (watched: a slot given back is taken at once, not at the next
    poll), for at most `poll` seconds; etcd not answering the watch: a plain wait of `poll`."""
    try:
        await lock.wait_for_change(poll)
    except Unanswered:
        await clock.sleep(poll)


async def give_back(
    settings: Settings,
    lock: Lock,
    fleet: Fleet,
    record: Record,
    hold: Hold,
    say: Callable[[str], None],
) -> None:
    """Undo a coordinated reboot that will not happen: undrain, then release."""
    if hold.drained:
        await fleet.undrain(settings.machine)
    await lock.release(settings.machine, hold.lease)
    if hold.lease:
        await lock.revoke(hold.lease)
    record.clear()
    say(f"gave the reboot lock of {settings.machine} back; no reboot")


async def first_renewal(lock: Lock, lease: int, ttl: float, clock: Clock) -> bool:
    """Renew `lease` as soon as etcd answers: early in the boot its members may still be
    finding each other. Asked every few seconds for up to a TTL (by then the lease is surely
    gone); False when etcd says it is gone."""
    interval = 3.0
    for _ in range(max(1, int(ttl / interval))):
        try:
            return await lock.renew(lease)
        except Exception:  # not reachable yet
            await clock.sleep(interval)
    return await lock.renew(lease)  # the last try's error is the one to report


async def after_reboot(
    settings: Settings,
    lock: Lock,
    fleet: Fleet,
    record: Record,
    healthy: Callable[[], Awaitable[list[str]]],
    say: Callable[[str], None],
    clock: Clock = Clock(),
) -> str:
    """The post-boot half: nothing without a recorded hold; else renew its lease at once, and
    once the boot is healthy undrain, then release. Unhealthy: StillUnhealthy, and the hold is
    kept (drained, the lease left to run out) so no other machine follows into the problem
    before someone looks, or the TTL passes."""
    hold = record.load()
    if hold is None:
        return "this machine holds no reboot lock; nothing to do"
    alive = hold.lease == 0 or await first_renewal(lock, hold.lease, settings.ttl, clock)
    if not alive:
        say(
            f"the reboot lock's lease {hold.lease:x} ran out while {hold.machine} was down"
            " (longer than REBOOT_LOCK_TTL); another machine may have rebooted meanwhile"
        )
    async with renewed(lock, hold.lease if alive else 0, settings.ttl / RENEWALS_PER_TTL):
        problems = await healthy()
        if problems:
            raise StillUnhealthy(
                "; ".join(problems) + f" — {hold.machine} keeps the reboot lock until its lease"
                " runs out and stays drained in fleet (`fleetctl undrain` and"
                " `flotilla-lockctl unlock` end that by hand)"
            )
        if hold.drained:
            await patiently(lambda: fleet.undrain(hold.machine), "fleet", say, clock)
            say(f"undrained {hold.machine}")
            record.save(hold.with_drained(False))
        released = None
        if alive:
            released = await patiently(
                lambda: lock.release(hold.machine, hold.lease), "etcd", say, clock
            )
    record.clear()
    if released is None:
        return f"{hold.machine} is back and healthy; it held no reboot lock any more"
    return f"{hold.machine} is back and healthy; released the reboot lock"
