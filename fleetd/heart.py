"""Machine presence: one etcd lease per machine, kept alive, re-created when it is lost.

The lease carries the machine key, the unit states its agent publishes and (when this machine
leads) the engine leader key. `last_contact` is when the last keepalive that etcd acknowledged
was *sent*, which is what the fencing timing argument is built on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .fencing import keepalive_interval
from .model import Machine
from .registry import LeaseExpired, Registry, RegistryError

log = logging.getLogger(__name__)
MAX_BACKOFF = 30.0


class Heart:
    def __init__(
        self,
        registry: Registry,
        machine: Machine,
        ttl: float,
        lease_file: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.machine = machine
        self.ttl = ttl
        self.lease_file = lease_file
        self.clock = clock
        self.lease: int | None = None
        self.last_contact = float("-inf")
        self.registered = asyncio.Event()
        self.on_new_lease: list[Callable[[int], Awaitable[None]]] = []
        self.on_contact: list[Callable[[], Awaitable[None]]] = []

    def etcd_age(self) -> float:
        """Seconds since etcd last acknowledged this machine (a large number if never)."""
        return min(self.clock() - self.last_contact, 1e9)

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self.beat()
                backoff = 1.0
                await asyncio.sleep(keepalive_interval(self.ttl))
            except RegistryError as error:
                level = (
                    logging.WARNING if self.registered.is_set() or backoff == 1.0 else logging.DEBUG
                )
                log.log(
                    level,
                    "cannot reach etcd: %s; retrying in %.1fs",
                    error,
                    min(backoff, self.ttl / 5),
                )
                await asyncio.sleep(min(backoff, keepalive_interval(self.ttl)))
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def beat(self) -> None:
        sent = self.clock()
        if self.lease is None:
            await self.register()
        else:
            try:
                await self.registry.keep_alive(self.lease)
            except LeaseExpired:
                log.warning("machine lease %x expired; registering again", self.lease)
                self.lease = None
                self.registered.clear()
                await self.register()
        self.last_contact = sent
        for callback in self.on_contact:
            await callback()

    async def register(self) -> None:
        lease = await self.reusable_lease() or await self.registry.grant_lease(self.ttl)
        await self.registry.publish_machine(self.machine, lease)
        self.lease = lease
        self.lease_file.parent.mkdir(parents=True, exist_ok=True)
        self.lease_file.write_text(f"{lease}\n")
        log.info(
            "registered machine %s (%s) with lease %x, ttl %.0fs",
            self.machine.id,
            self.machine.ip,
            lease,
            self.ttl,
        )
        for callback in self.on_new_lease:
            await callback(lease)
        self.registered.set()

    async def reusable_lease(self) -> int | None:
        """The lease of a fleetd that ran here before us (killed, say), if it is still alive:
        keeping it keeps this machine's keys, and its engine leadership, without a gap."""
        try:
            lease = int(self.lease_file.read_text())
        except (OSError, ValueError):
            return None
        try:
            await self.registry.keep_alive(lease)
        except LeaseExpired:
            return None
        log.info("reusing lease %x of the previous fleetd on this machine", lease)
        return lease

    async def stop(self) -> None:
        """Graceful leave: revoking the lease removes this machine and its keys at once."""
        if self.lease is not None:
            await self.registry.revoke_lease(self.lease)
            self.lease_file.unlink(missing_ok=True)
            self.lease = None
            self.registered.clear()
