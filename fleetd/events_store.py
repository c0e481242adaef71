"""Writing this machine's events to etcd without slowing anyone down, and reading the history.

`EventRecorder.record` only appends to a bounded queue (the oldest event is dropped, and
counted, when etcd is too slow to keep up); the recorder's own task writes the queue in pages
of up to PAGE_EVENTS events, each one key in one transaction with the deletes of this
machine's oldest pages that keep it at its limit,
under a lease of its own that etcd expires after the maximum age. A new lease is taken every
quarter of that age, so an event lives between max_age and 1.25 max_age. The ids this machine
stored are read once at start, so the limit holds across fleetd restarts.

`EventReader` reads the whole history in one ranged read, and follows it with a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from prometheus_client import Counter

from . import metrics
from .events import (
    DEFAULT_LIMIT,
    DEFAULT_MAX_AGE,
    Draft,
    Event,
    EventFilter,
    decode_all,
    decode_page,
    encode_page,
    overflow,
    stamp,
)
from .registry import MAX_TXN_OPS, Registry, RegistryError

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000  # events waiting for etcd; beyond this the oldest are dropped
PAGE_EVENTS = 100  # events per key: a burst costs etcd few keys, a trim drops few events
SETTLE_SECONDS = 0.5  # gather a burst (a failover's moves, a thousand starts) into few writes
RETRY_SECONDS = 1.0

DROPPED = Counter(
    "fleetd_events_dropped",
    "Events dropped because etcd did not take them fast enough",
    registry=metrics.REGISTRY,
)
RECORDED = Counter(
    "fleetd_events_recorded", "Events written to etcd by this machine", registry=metrics.REGISTRY
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventRecorder:
    def __init__(
        self,
        registry: Registry,
        machine: str,
        limit: int = DEFAULT_LIMIT,
        max_age: float = DEFAULT_MAX_AGE,
        queue_limit: int = QUEUE_LIMIT,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.registry = registry
        self.machine = machine
        self.limit = limit
        self.max_age = max_age
        self.queue: deque[Event] = deque()
        self.queue_limit = queue_limit
        self.wall_clock = wall_clock
        self.dropped = 0
        self.sequence = 0
        # Our pages in etcd, oldest first: (id, events in it); None until read.
        self.stored: list[tuple[str, int]] | None = None
        self.lease: tuple[int, float] | None = None  # (id, monotonic time granted)
        self.pending = asyncio.Event()
        self.writing = asyncio.Lock()

    def record(self, draft: Draft) -> None:
        """Queue an event; never waits (the caller is a reconcile pass or a signal)."""
        self.sequence += 1
        self.keep(stamp(draft, self.wall_clock(), self.machine, self.sequence))
        self.pending.set()

    def keep(self, event: Event) -> None:
        if len(self.queue) >= self.queue_limit:
            self.queue.popleft()
            self.dropped += 1
            DROPPED.inc()
        self.queue.append(event)

    async def run(self) -> None:
        """Write what is queued, a burst at a time, until cancelled. Never fails: the events
        wait in the queue (bounded) while etcd does not answer."""
        while True:
            await self.pending.wait()
            await asyncio.sleep(SETTLE_SECONDS)
            self.pending.clear()
            try:
                await self.flush()
            except RegistryError as error:
                log.debug("recording events: %s; trying again", error)
                self.pending.set()
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:
                log.exception("recording events failed unexpectedly; trying again")
                self.pending.set()
                await asyncio.sleep(RETRY_SECONDS)

    async def flush(self) -> None:
        """Write every queued event (RegistryError leaves the rest queued)."""
        async with self.writing:
            if self.stored is None:
                pages = await self.registry.event_pages(self.machine)
                self.stored = sorted((i, len(decode_page(raw))) for i, raw in pages)
            while self.queue:
                size = min(PAGE_EVENTS, self.limit, len(self.queue))
                batch = [self.queue.popleft() for _ in range(size)]
                try:
                    await self.write(batch)
                except BaseException:
                    for event in reversed(batch):  # back at the front, oldest first
                        self.queue.appendleft(event)
                    while len(self.queue) > self.queue_limit:
                        self.queue.popleft()
                        self.dropped += 1
                        DROPPED.inc()
                    raise

    async def write(self, batch: list[Event]) -> None:
        assert self.stored is not None
        lease = await self.current_lease()
        doomed = overflow(self.stored, len(batch), self.limit)[: MAX_TXN_OPS - 1]
        page = [(batch[0].id, encode_page(batch))]
        await self.registry.write_events(self.machine, page, doomed, lease)
        del self.stored[: len(doomed)]
        self.stored.append((batch[0].id, len(batch)))
        RECORDED.inc(len(batch))

    async def current_lease(self) -> int:
        now = time.monotonic()
        if self.lease is None or now - self.lease[1] >= self.max_age / 4:
            self.lease = (await self.registry.grant_lease(self.max_age * 1.25), now)
        return self.lease[0]

    async def drain(self, timeout: float) -> None:
        """Write what is queued now, giving up after `timeout` (a graceful leave)."""
        with contextlib.suppress(RegistryError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self.flush()


class EventReader:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def read(self, wanted: EventFilter) -> tuple[list[Event], int]:
        """The matching events, oldest first, and the etcd revision they were read at."""
        raws, revision = await self.registry.events()
        return [event for event in decode_all(raws) if wanted.matches(event)], revision

    async def follow(self, wanted: EventFilter, after_revision: int) -> AsyncIterator[Event]:
        """Matching events as they are written after `after_revision` (RegistryError when the
        watch breaks)."""
        async for change in self.registry.watch(self.registry.keys.events, after_revision + 1):
            if change.deleted:
                continue
            for event in decode_page(change.value):
                if wanted.matches(event):
                    yield event
