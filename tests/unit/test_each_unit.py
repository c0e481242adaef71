"""each_unit runs a call per unit, bounded; a batch cut short (fencing's deadline) leaves no call
made and never awaited, and one unit's failure is that unit's alone."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from fleetd.executor import MAX_CONCURRENT_CALLS, each_unit


async def test_a_batch_cut_short_makes_no_call_it_does_not_await() -> None:
    made: list[str] = []

    async def stop(unit: str) -> None:
        made.append(unit)
        await asyncio.sleep(10)

    units = [f"u{i}.service" for i in range(MAX_CONCURRENT_CALLS * 3)]
    calls = {unit: (lambda unit=unit: stop(unit)) for unit in units}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await each_unit("stop", calls)
    assert len(made) == MAX_CONCURRENT_CALLS


async def test_a_failed_call_is_reported_for_its_unit_alone() -> None:
    async def start(unit: str) -> None:
        if unit == "bad.service":
            raise RuntimeError("no such file")

    units = ["a.service", "bad.service", "c.service"]
    failed = await each_unit("start", {u: (lambda u=u: start(u)) for u in units})
    assert list(failed) == ["bad.service"]
