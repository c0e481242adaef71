"""Machine presence: one etcd lease per machine, kept alive, re-created when it is lost.

The lease carries the machine key, the unit states its agent publishes and (when this machine
leads) the engine leader key. `last_contact` is when the last keepalive that etcd acknowledged
was *sent*, which is what the fencing timing argument is built on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .fencing import keepalive_interval
from .model import Machine
from .registry import DuplicateMachine, LeaseExpired, Registry, RegistryError, lease_seconds

log = logging.getLogger(__name__)
MAX_BACKOFF = 30.0
LOG_EVERY = 30.0


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
        self.failing_since: float | None = None  # first failure seen since last_contact
        self.lost_lease = False  # this process's lease expired under it at least once
        self.logged_failure = float("-inf")
        self.leaving = False  # a graceful leave revoked the lease: never register again
        self.granted: int | None = None  # granted, not yet holding the machine key
        self.registered = asyncio.Event()
        self.beating = asyncio.Lock()
        self.on_new_lease: list[Callable[[int, bool], Awaitable[None]]] = []
        self.on_contact: list[Callable[[], Awaitable[None]]] = []

    def failure_level(self) -> int:
        """The log level of a failed etcd request elsewhere in fleetd: while the heart already
        reports an etcd outage, it is no news."""
        return logging.DEBUG if self.failing_since is not None else logging.WARNING

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
                self.note_failure(error)
                await asyncio.sleep(min(backoff, keepalive_interval(self.ttl)))
                backoff = min(backoff * 2, MAX_BACKOFF)

    def note_failure(self, error: RegistryError) -> None:
        """Log the first failure of an outage loudly, then once every LOG_EVERY seconds."""
        now = self.clock()
        # etcd answered a duplicate: the words must not send the operator after the network.
        what = "not registering" if isinstance(error, DuplicateMachine) else "cannot reach etcd"
        if self.failing_since is None:
            self.failing_since = now
            self.logged_failure = now
            log.warning("%s: %s; retrying every %.1fs", what, error, keepalive_interval(self.ttl))
        elif now - self.logged_failure >= LOG_EVERY:
            self.logged_failure = now
            log.warning("still %s after %.0fs: %s", what, now - self.failing_since, error)

    async def try_now(self) -> bool:
        """One keepalive out of turn: whether etcd answers this machine right now."""
        try:
            await self.beat()
        except RegistryError:
            return False
        return True

    async def beat(self) -> None:
        # The guard's out-of-turn keepalive (try_now) and the heart's own must not interleave:
        # both could find the lease expired and register twice.
        async with self.beating:
            await self.beat_once()

    async def beat_once(self) -> None:
        if self.leaving:
            return  # registering again would undo the leave
        sent = self.clock()
        if self.lease is None:
            await self.register()
        else:
            try:
                await self.registry.keep_alive(self.lease)
            except LeaseExpired:
                if self.leaving:
                    return  # our own revoke, racing this keepalive
                log.warning("machine lease %x expired; registering again", self.lease)
                self.lost_lease = True
                self.lease = None
                self.registered.clear()
                await self.register()
        self.last_contact = sent
        if self.failing_since is not None:
            log.info("etcd answers again after %.1fs", self.clock() - self.failing_since)
        self.failing_since = None
        for callback in self.on_contact:
            await callback()

    async def register(self) -> None:
        """Claim the machine key under a lease: the previous fleetd's if it lives, else the
        one granted by an earlier attempt that failed half-way (never a second one), else a
        new one. A lease with another TTL (agent_ttl changed) is replaced only once the new
        one holds the machine key, so the machine never vanishes while its units run."""
        reused, outdated = await self.reusable_lease()
        lease = reused or await self.still_granted() or await self.grant()
        await self.registry.claim_machine(self.machine, lease, outdated)
        self.granted = None
        self.lease = lease
        log.info(
            "registered machine %s (%s) with lease %x, ttl %.0fs",
            self.machine.id,
            self.machine.ip,
            lease,
            self.ttl,
        )
        for callback in self.on_new_lease:
            await callback(lease, self.lost_lease)
        if outdated is not None:  # after the unit states moved over to the new lease
            with contextlib.suppress(RegistryError):  # it expires by itself anyway
                await self.registry.revoke_lease(outdated)
        self.registered.set()

    async def still_granted(self) -> int | None:
        """The lease an earlier, failed attempt was granted, while it lives."""
        if self.granted is None:
            return None
        try:
            await self.registry.keep_alive(self.granted)
        except LeaseExpired:
            self.granted = None
        return self.granted

    async def grant(self) -> int:
        lease = await self.registry.grant_lease(self.ttl)
        self.granted = lease
        self.remember(lease)  # a restart from here on reuses it too
        return lease

    def remember(self, lease: int) -> None:
        try:
            self.lease_file.parent.mkdir(parents=True, exist_ok=True)
            self.lease_file.write_text(f"{lease}\n")
        except OSError as error:  # only costs the lease's reuse after a restart
            log.warning("cannot remember the lease in %s: %s", self.lease_file, error)

    async def reusable_lease(self) -> tuple[int | None, int | None]:
        """(the lease of a fleetd that ran here before us, if it is still alive and has our
        TTL; keeping it keeps this machine's keys and its engine leadership without a gap,
        a live lease with another TTL, to be revoked once a new one holds the machine)."""
        try:
            lease = int(self.lease_file.read_text())
        except (OSError, ValueError):
            return None, None
        if lease == self.granted:
            return None, None  # ours, from an attempt that failed half-way: reused as such
        try:
            granted = await self.registry.keep_alive(lease)
        except LeaseExpired:
            return None, None
        if granted != lease_seconds(self.ttl):  # agent_ttl changed: fencing assumes ours
            log.info("lease %x has a TTL of %ds; moving to a lease of %s", lease, granted, self.ttl)
            return None, lease
        log.info("reusing lease %x of the previous fleetd on this machine", lease)
        return lease, None

    async def stop(self) -> None:
        """Graceful leave: revoking the lease removes this machine and its keys at once."""
        self.leaving = True
        if self.lease is not None:
            await self.registry.revoke_lease(self.lease)
            self.lease_file.unlink(missing_ok=True)
            self.lease = None
            self.registered.clear()
