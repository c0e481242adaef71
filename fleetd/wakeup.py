"""Waking reconcile loops up on etcd watch events (reconcile.py runs the loops)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .registry import Registry, RegistryError

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0


async def watch_forever(registry: Registry, prefix: bytes, wake: Callable[[], None]) -> None:
    """Call `wake` on every change under prefix; re-watch after the stream breaks. Events
    missed in between are harmless: the woken loop reads everything afresh."""
    while True:
        try:
            async for _ in registry.watch(prefix):
                wake()
        except RegistryError as error:
            log.debug("watch on %s broke: %s", prefix.decode(), error)
        await asyncio.sleep(RETRY_SECONDS)
        wake()
