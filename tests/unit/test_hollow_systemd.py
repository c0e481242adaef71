"""The hollow machines' simulated systemd (bench/hollow_systemd.py): the instrument itself walks
units through systemd's states. Nothing here says how the real systemd behaves."""

from __future__ import annotations

import asyncio

import pytest

from bench.hollow_systemd import (
    ACTIVATING,
    ACTIVE,
    DEACTIVATING,
    DEAD,
    FAILED,
    NOT_FOUND,
    Latencies,
    SimulatedSystemd,
)
from fleetd.systemd import NO_SUCH_UNIT, SystemdError

FAST = Latencies(start=0.02, stop=0.02, reload=0.0)


async def test_a_unit_without_a_linked_file_is_not_found_and_cannot_start() -> None:
    systemd = SimulatedSystemd(FAST)
    assert await systemd.unit_states(["web.service"]) == {"web.service": NOT_FOUND}
    with pytest.raises(SystemdError) as raised:
        await systemd.start_unit("web.service")
    assert raised.value.error_name == NO_SUCH_UNIT


async def test_start_activates_after_the_start_latency_and_stop_waits_for_deactivation() -> None:
    systemd = SimulatedSystemd(FAST)
    await systemd.link_unit_files(["/units/web.service"])
    assert await systemd.unit_file_state("web.service") == "linked-runtime"
    await systemd.start_unit("web.service")
    assert systemd.state("web.service") == ACTIVATING
    await asyncio.sleep(0.05)
    assert systemd.state("web.service") == ACTIVE
    stopping = asyncio.create_task(systemd.stop_unit("web.service"))
    await asyncio.sleep(0)
    assert systemd.state("web.service") == DEACTIVATING
    await stopping
    assert systemd.state("web.service") == DEAD


async def test_watch_states_yields_every_transition_once() -> None:
    systemd = SimulatedSystemd(FAST)
    await systemd.link_unit_files(["/units/web.service"])
    seen: list[str] = []

    async def watch() -> None:
        async for _, state in systemd.watch_states(lambda: ["web.service"]):
            seen.append(state.active_state)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await systemd.start_unit("web.service")
    await asyncio.sleep(0.05)
    await systemd.kill_unit("web.service")
    await systemd.reset_failed_unit("web.service")
    await asyncio.sleep(0)
    watcher.cancel()
    assert seen == ["inactive", "activating", "active", "failed", "inactive"]


async def test_kill_leaves_a_failed_unit_until_reset() -> None:
    systemd = SimulatedSystemd(FAST)
    await systemd.link_unit_files(["/units/web.service"])
    await systemd.start_unit("web.service")
    await systemd.kill_unit("web.service")
    assert systemd.state("web.service") == FAILED
    await systemd.reset_failed_unit("web.service")
    assert systemd.state("web.service") == DEAD


async def test_a_crash_makes_every_unit_vanish_and_ends_the_watchers() -> None:
    systemd = SimulatedSystemd(FAST)
    await systemd.link_unit_files(["/units/web.service"])
    await systemd.start_unit("web.service")
    watch = systemd.watch_states(lambda: ["web.service"])
    assert (await anext(watch))[1] == ACTIVATING
    systemd.crash()
    with pytest.raises(SystemdError):
        await anext(watch)
    assert systemd.states == {} and systemd.linked == set()
    assert not systemd.connected
