"""The reconcile loop the engine and the agent share, driven by a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pytest import approx

from fleetd.reconcile import MONOTONIC, ReconcileLoop

from .clock import FakeClock, run_ready_tasks

INTERVAL = 5.0
SETTLE = 0.1


class Passes:
    """A reconcile pass that records when it ran; `gate` (when set) holds a pass until opened."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> None:
        self.times.append(self.clock.now() - 1000.0)
        if self.gate is not None:
            await self.gate.wait()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def passes(clock: FakeClock) -> Passes:
    return Passes(clock)


@pytest.fixture
async def loop(clock: FakeClock, passes: Passes) -> AsyncIterator[ReconcileLoop]:
    loop = ReconcileLoop(passes, INTERVAL, SETTLE, clock=clock)
    task = asyncio.create_task(loop.run())
    yield loop
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_pass_runs_at_once_then_an_interval_and_the_settle_delay_after_the_last(
    clock: FakeClock, passes: Passes, loop: ReconcileLoop
) -> None:
    await clock.advance(0)
    assert passes.times == approx([0.0])
    await clock.advance(INTERVAL)
    assert passes.times == approx([0.0])  # the settle delay has only begun
    await clock.advance(SETTLE)
    assert passes.times == approx([0.0, 5.1])
    await clock.advance(INTERVAL + SETTLE - 0.01)
    assert passes.times == approx([0.0, 5.1])
    await clock.advance(0.01)
    assert passes.times == approx([0.0, 5.1, 10.2])


async def test_a_wakeup_brings_the_next_pass_forward_and_restarts_the_interval(
    clock: FakeClock, passes: Passes, loop: ReconcileLoop
) -> None:
    await clock.advance(1.0)
    loop.wake()
    await clock.advance(SETTLE)
    assert passes.times == approx([0.0, 1.1])
    await clock.advance(INTERVAL)
    assert passes.times == approx([0.0, 1.1])  # counted from the pass, not the start
    await clock.advance(SETTLE)
    assert passes.times == approx([0.0, 1.1, 6.2])


async def test_wakeups_during_a_pass_make_one_more_pass_not_many(
    clock: FakeClock, passes: Passes, loop: ReconcileLoop
) -> None:
    await clock.advance(0)
    passes.gate = asyncio.Event()
    loop.wake()
    await clock.advance(SETTLE)
    for _ in range(3):
        loop.wake()
    await clock.advance(1.0)
    assert passes.times == approx([0.0, 0.1])  # never two passes at once
    passes.gate.set()
    await clock.advance(SETTLE)
    assert passes.times == approx([0.0, 0.1, 1.2])
    await clock.advance(INTERVAL - 0.01)
    assert passes.times == approx([0.0, 0.1, 1.2])


async def test_each_pass_waits_until_ready(clock: FakeClock, passes: Passes) -> None:
    registered = asyncio.Event()
    loop = ReconcileLoop(passes, INTERVAL, SETTLE, ready=registered.wait, clock=clock)
    task = asyncio.create_task(loop.run())
    await clock.advance(3 * INTERVAL)
    assert passes.times == approx([])
    registered.set()
    await clock.advance(0)
    assert passes.times == approx([15.0])
    registered.clear()
    loop.wake()
    await clock.advance(3 * INTERVAL)
    assert passes.times == approx([15.0])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_sources_wake_the_loop_and_stop_with_it(clock: FakeClock, passes: Passes) -> None:
    loop = ReconcileLoop(passes, INTERVAL, SETTLE, clock=clock)
    stopped = asyncio.Event()
    changes = asyncio.Queue[None]()

    async def watch() -> None:
        try:
            while True:
                await changes.get()
                loop.wake()
        finally:
            stopped.set()

    task = asyncio.create_task(loop.run(watch()))
    await clock.advance(2.0)
    changes.put_nowait(None)
    await clock.advance(SETTLE)
    assert passes.times == approx([0.0, 2.1])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await run_ready_tasks()
    assert stopped.is_set()


async def test_an_error_that_escapes_a_pass_ends_the_loop(clock: FakeClock) -> None:
    async def broken() -> None:
        raise RuntimeError("the systemd connection is gone")

    loop = ReconcileLoop(broken, INTERVAL, SETTLE, clock=clock)
    with pytest.raises(RuntimeError, match="systemd connection"):
        await loop.run()


async def test_the_monotonic_clock_waits_for_the_event_or_the_timeout() -> None:
    event = asyncio.Event()
    started = MONOTONIC.now()
    await MONOTONIC.wait(event, 0.05)
    assert MONOTONIC.now() - started >= 0.05
    asyncio.get_running_loop().call_later(0.01, event.set)
    started = MONOTONIC.now()
    await MONOTONIC.wait(event, 10.0)
    assert MONOTONIC.now() - started < 5.0
    assert event.is_set()  # the loop, not the clock, clears it
