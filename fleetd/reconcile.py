"""The reconcile loop the engine and the agent share (fleet's pkg/reconcile.go serves both).

A pass runs at once; after it, the loop waits until something wakes it (a watch saw a change,
the pass itself asked for another) or until `interval` has passed, then for a short settle delay
so that a burst of changes lands before the next pass reads it. A pass never runs concurrently
with itself; wakeups that arrive meanwhile are kept, and however many they were, they make one
more pass.

Time comes from a Clock: fleetd runs on the monotonic clock, tests drive the loop with a fake
one (tests/unit/clock.py) and never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        """Return when `event` is set or `timeout` seconds have passed, whichever is first."""
        ...


class MonotonicClock:
    """The real clock: time.monotonic and the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


MONOTONIC = MonotonicClock()


class ReconcileLoop:
    """Runs `reconcile` pass after pass until cancelled (see the module's docstring).

    `ready`, when given, is awaited before every pass (the machine must be registered, say).
    A pass handles its own errors: one that escapes ends the loop, and fleetd with it."""

    def __init__(
        self,
        reconcile: Callable[[], Awaitable[None]],
        interval: float,
        settle: float,
        ready: Callable[[], Awaitable[object]] | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.reconcile = reconcile
        self.interval = interval
        self.settle = settle
        self.ready = ready
        self.clock = clock
        self.wakeup = asyncio.Event()

    def wake(self) -> None:
        """Ask for a pass soon: after the current one (if any) and the settle delay."""
        self.wakeup.set()

    async def run(self, *sources: Coroutine[Any, Any, None]) -> None:
        """Loop until cancelled. `sources` (watches that call `wake`) run alongside the loop
        and are cancelled with it."""
        tasks = [asyncio.create_task(source) for source in sources]
        try:
            while True:
                if self.ready is not None:
                    await self.ready()
                await self.reconcile()
                await self.clock.wait(self.wakeup, self.interval)
                self.wakeup.clear()
                await self.clock.sleep(self.settle)
        finally:
            for task in tasks:
                task.cancel()
