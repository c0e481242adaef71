"""Waking loops up: on etcd watch events, or when their period has passed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .registry import Registry, RegistryError

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0


async def wait_for_wakeup(wakeup: asyncio.Event, timeout: float) -> None:
    """Return when `wakeup` is set or after `timeout`; leave it cleared for the next wait."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), timeout)
    wakeup.clear()


async def watch_forever(registry: Registry, prefix: bytes, wakeup: asyncio.Event) -> None:
    """Set `wakeup` on every change under prefix; re-watch after the stream breaks. Events
    missed in between are harmless: the woken loop reads everything afresh."""
    while True:
        try:
            async for _ in registry.watch(prefix):
                wakeup.set()
        except RegistryError as error:
            log.debug("watch on %s broke: %s", prefix.decode(), error)
        await asyncio.sleep(RETRY_SECONDS)
        wakeup.set()
