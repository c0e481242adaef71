"""A pass's read of systemd's states never overwrites a newer state a signal already gave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

from fleetd import systemd as sd
from fleetd.publisher import StatePublisher

RUNNING = sd.UnitState("loaded", "active", "running")
DEAD = sd.UnitState("loaded", "inactive", "dead")


class Signals:
    """A systemd that signals the given changes, then stays quiet."""

    connected = True

    def __init__(self, changes: list[tuple[str, sd.UnitState]]) -> None:
        self.changes = changes

    async def watch_states(
        self, units: Callable[[], Iterable[str]]
    ) -> AsyncIterator[tuple[str, sd.UnitState]]:
        for change in self.changes:
            yield change
        await asyncio.Event().wait()


async def test_a_read_begun_before_a_signal_keeps_the_signalled_state() -> None:
    loaded = {"a.service": "h1", "b.service": "h2"}
    publisher = StatePublisher(None, Signals([("a.service", RUNNING)]), None, lambda: loaded)  # type: ignore[arg-type]
    read_after = publisher.signals_heard  # the pass starts reading here...
    watching = asyncio.create_task(publisher.watch_forever())
    while publisher.signals_heard < 1:  # ...a.service's start is signalled meanwhile...
        await asyncio.sleep(0)
    publisher.publish_read({"a.service": DEAD, "b.service": DEAD}, read_after)  # ...read ends
    assert publisher.published["a.service"].active == "active"
    assert publisher.published["b.service"].active == "inactive"
    publisher.publish_read({"a.service": DEAD}, publisher.signals_heard)  # a later read counts
    assert publisher.published["a.service"].active == "inactive"
    watching.cancel()
