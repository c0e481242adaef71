"""The dashboard's one adapter to the cluster's event history (the drivers' `events` and
`follow_events`): the recent events, then the new ones as they come. A refused read is
NoHistory: a cluster that keeps none (an API that answers 404 for /events: fleet's own, or an
older fleetd) or one that cannot serve it now (503 while fleetd registers after a restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ..client import ClientError
from .driver import Driver


class NoHistory(Exception):
    """The cluster refused to serve its event history."""


async def recent_events(driver: Driver) -> list[dict[str, Any]]:
    """Every event the cluster still keeps (bounded by count and age), oldest first."""
    try:
        return list(await driver.events(None, None, None))
    except ClientError as error:
        raise NoHistory(str(error)) from error


async def new_events(driver: Driver, since: datetime) -> AsyncIterator[dict[str, Any]]:
    """Events at or after `since`, then each new one as it is written; ends when the stream
    breaks (the caller reconnects). Repeats the events of the `since` moment: callers keep
    events by id."""
    try:
        async for event in driver.follow_events(None, None, since):
            yield event
    except ClientError as error:
        raise NoHistory(str(error)) from error
