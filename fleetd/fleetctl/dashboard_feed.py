"""The dashboard's one adapter to the cluster's event history: the recent events, then the new
ones as they come. Whatever the driver offers: `follow_events` (a live stream), else `events`
read again every few seconds, else no history at all (a cluster whose fleetd keeps none)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from .driver import Driver

POLL_SECONDS = 2.0


def has_history(driver: Driver) -> bool:
    return hasattr(driver, "events")


async def recent_events(driver: Driver) -> list[dict[str, Any]]:
    """Every event the cluster still keeps (the history is bounded by count and age)."""
    if not has_history(driver):
        return []
    return list(await driver.events(None, None, None))  # type: ignore[attr-defined]


async def new_events(driver: Driver, since: datetime | None) -> AsyncIterator[dict[str, Any]]:
    """Events at or after `since` (None: only new ones), as they happen; ends when the stream
    breaks (the caller reconnects). Repeats the events of the `since` moment: callers keep
    events by id."""
    if hasattr(driver, "follow_events"):
        async for event in driver.follow_events(None, None, since):  # type: ignore[attr-defined]
            yield event
        return
    if not has_history(driver):
        await asyncio.Event().wait()  # nothing will ever come
    while True:
        await asyncio.sleep(POLL_SECONDS)
        for event in await recent_events(driver):
            yield event
