"""Publishing this machine's unit states to etcd, from systemd's signals (never by polling).

State changes are queued and written in bursts, a transaction per hundred, under the machine
lease; a unit that is no longer loaded has its state deleted instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from . import systemd as sd
from .heart import Heart
from .model import UnitState
from .registry import Registry, RegistryError

log = logging.getLogger(__name__)
FLUSH_SETTLE_SECONDS = 0.02  # gather a burst of state changes into one write


class StatePublisher:
    def __init__(
        self,
        registry: Registry,
        systemd: sd.Systemd,
        heart: Heart,
        loaded: Callable[[], Mapping[str, str]],
    ) -> None:
        self.registry = registry
        self.systemd = systemd
        self.heart = heart
        self.loaded = loaded  # unit -> hash of what the agent has loaded, read on every use
        self.published: dict[str, UnitState] = {}
        self.dirty: set[str] = set()  # units whose state must be written or deleted
        self.flush_needed = asyncio.Event()
        self.changed = asyncio.Event()  # a state changed since the agent last looked
        # Told each state change systemd signals, in systemd's order (the events): the states a
        # pass reads may be older than a signal already heard, so they are published only.
        self.on_signal: list[Callable[[str, sd.UnitState], None]] = []
        # Signals heard so far, and the count when each unit's last one came: a pass's read
        # that began before a unit's last signal must not overwrite what the signal said.
        self.signals_heard = 0
        self.last_signal: dict[str, int] = {}

    async def run(self) -> None:
        flusher = asyncio.create_task(self.flush_forever())
        try:
            await self.watch_forever()
        finally:
            flusher.cancel()

    async def watch_forever(self) -> None:
        while True:
            try:
                async for unit, state in self.systemd.watch_states(lambda: self.loaded().keys()):
                    self.signals_heard += 1
                    self.last_signal[unit] = self.signals_heard
                    self.publish(unit, state)
                    for hook in self.on_signal:
                        hook(unit, state)
            except sd.SystemdError as error:
                if not self.systemd.connected:
                    raise  # the bus is gone for good; fleetd exits and systemd restarts it
                log.warning("unit state publishing interrupted: %s", error)
                await asyncio.sleep(1)

    def publish(self, unit: str, state: sd.UnitState) -> None:
        """Queue a state change of a loaded unit."""
        loaded = self.loaded()
        if unit not in loaded:
            return
        published = UnitState(state.load_state, state.active_state, state.sub_state, loaded[unit])
        if self.published.get(unit) != published:
            self.changed.set()
            self.published[unit] = published
            self.mark(unit)

    def publish_read(self, states: Mapping[str, sd.UnitState], read_after: int) -> None:
        """Publish states a pass read from systemd, having begun when `signals_heard` was
        `read_after`. A unit signalled since keeps what its signal said: the read may predate
        the change (every later change brings a signal of its own), and publishing the older
        state would show a running unit as stopped until the next signal."""
        for unit, state in states.items():
            if self.last_signal.get(unit, 0) <= read_after:
                self.publish(unit, state)

    def forget(self, unit: str) -> None:
        """The unit was unloaded: delete its published state."""
        self.published.pop(unit, None)
        self.last_signal.pop(unit, None)
        self.mark(unit)

    def forget_everything(self) -> None:
        """A new lease carries none of the old state keys: publish all afresh."""
        self.published.clear()

    def mark(self, unit: str) -> None:
        self.dirty.add(unit)
        self.flush_needed.set()

    async def flush_forever(self) -> None:
        while True:
            await self.flush_needed.wait()
            await asyncio.sleep(FLUSH_SETTLE_SECONDS)
            self.flush_needed.clear()
            units, self.dirty = self.dirty, set()
            try:
                await self.flush(units)
            except RegistryError as error:
                log.log(self.heart.failure_level(), "publishing unit states: %s", error)
                self.dirty |= units
                await asyncio.sleep(1)
                self.flush_needed.set()

    async def flush(self, units: set[str]) -> None:
        lease = self.heart.lease
        if lease is None:
            raise RegistryError("this machine is not registered")
        loaded = self.loaded()
        puts = {u: self.published[u] for u in units if u in loaded and u in self.published}
        deletes = [u for u in units if u not in loaded]
        await self.registry.write_states(puts, deletes, self.heart.machine.id, lease)
