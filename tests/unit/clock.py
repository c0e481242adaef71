"""A fake Clock (fleetd/reconcile.py) that moves only when a test advances it, as clockwork's
FakeClock does for fleet: loops driven by it run without a single real sleep."""

from __future__ import annotations

import asyncio

SCHEDULER_ROUNDS = 20  # event-loop turns for woken tasks to run until they wait again


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.timers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        timer = (self.time + max(0.0, seconds), asyncio.get_running_loop().create_future())
        self.timers.append(timer)
        try:
            await timer[1]
        finally:
            if timer in self.timers:
                self.timers.remove(timer)

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        if event.is_set():
            return
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.sleep(timeout))}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    @property
    def sleepers(self) -> int:
        return len(self.timers)

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, waking each sleeper that falls due on the way at its own
        time, in order, and letting what it woke run until it waits again."""
        target = self.time + seconds
        await run_ready_tasks()
        while due := [timer for timer in self.timers if timer[0] <= target]:
            when, future = min(due, key=lambda timer: timer[0])
            self.timers.remove((when, future))
            self.time = max(self.time, when)
            if not future.done():
                future.set_result(None)
            await run_ready_tasks()
        self.time = target


async def run_ready_tasks() -> None:
    for _ in range(SCHEDULER_ROUNDS):
        await asyncio.sleep(0)
