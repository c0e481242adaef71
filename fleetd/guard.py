"""The fence guard: while etcd is silent, ask the peers and stop our units if we are cut off.

The decision is `fencing.decide` (pure); this is the loop around it. The peer list is kept in
/run/fleet/peers as well, so a fleetd restarted while the machine is cut off still knows whom
to ask. When nobody could take our units over, the guard extends the lease deadline that the
backstop enforces (deadline.py); a fence that did not complete is tried again on the next tick.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from . import peers
from . import systemd as sd
from .agent import Agent
from .deadline_keeper import DeadlineKeeper
from .fencing import (
    PeerReport,
    Verdict,
    decide,
    etcd_silence_suspicious,
    keepalive_interval,
    needs_every_peer,
    peer_refresh_seconds,
    probe_sample,
    probe_timeout,
    stop_deadline,
)
from .heart import Heart
from .machine_plan import RUNNING_STATES
from .registry import Registry, RegistryError

log = logging.getLogger(__name__)
PEER_REFRESH_SECONDS = 5.0  # how stale a small cluster's peer list may get (1 s while empty)


class FenceGuard:
    def __init__(
        self,
        registry: Registry,
        heart: Heart,
        agent: Agent,
        keeper: DeadlineKeeper,
        peer_port: int,
        request_timeout: float,
        peers_file: Path,
        peer_key: bytes,
    ) -> None:
        self.registry = registry
        self.peer_key = peer_key
        self.heart = heart
        self.agent = agent
        self.keeper = keeper
        self.ttl = heart.ttl
        self.peer_port = peer_port
        self.request_timeout = request_timeout
        self.peers_file = peers_file
        self.peer_ips = load_peers(peers_file)
        # Whether the peer list was ever read from etcd (here, or by an earlier fleetd): "no
        # peers" from a fleetd cut off before its first read is not a one-machine cluster.
        self.peers_known = peers_file.exists()
        self.refreshed = float("-inf")  # when the machine list's version was last read
        self.listed = float("-inf")  # when the list was last known to be current
        self.machines_version: tuple[int, int] | None = None  # of the last list read
        # How many other machines the version says there are: a new one counts as a silent
        # peer before the list names it (the list may be N/20 s old in a large cluster).
        self.peer_count = 0
        self.refreshing: asyncio.Task[None] | None = None
        self.last_verdict = ""
        self.fence_complete = False  # every fenced unit was seen stopped

    async def run(self) -> None:
        while True:
            await asyncio.sleep(keepalive_interval(self.ttl) / 2)
            try:
                await self.tick()
            except Exception:
                log.exception("fence guard: unexpected error; carrying on")

    async def tick(self) -> None:
        now = time.monotonic()
        if self.heart.failing_since is None:
            self.last_verdict = ""
            self.fence_complete = False
            due = now - self.refreshed >= (PEER_REFRESH_SECONDS if self.peer_ips else 1.0)
            if due and (self.refreshing is None or self.refreshing.done()):
                # Beside the ticks, not in one: etcd may have just gone silent, and a tick
                # spent waiting for it is one the guard cannot ask the peers in, with the
                # backstop's deadline near.
                self.refreshing = asyncio.create_task(self.refresh_peers(now))
            return
        if self.agent.fenced:
            if not self.fence_complete:
                await self.fence(self.last_verdict)
            return
        if not etcd_silence_suspicious(now, self.heart.last_contact, self.ttl):
            return
        asked = await self.ask_peers()
        if asked is None:
            return  # etcd answered the heart while the peers were being asked
        verdict, reports = asked
        if verdict.fence and reports and await self.etcd_answers_us_now():
            return  # peers reach etcd and, asked once more, so do we: no outage here
        if verdict.fence:
            self.last_verdict = verdict.reason
            await self.fence(verdict.reason)
            return
        if verdict.reason != self.last_verdict:
            log.warning("etcd is silent; not fencing: %s", verdict.reason)
            self.agent.note_verdict(False, verdict.reason)
        if self.peer_ips or self.peers_known:
            # Nobody can take our units over: the backstop must not stop them either.
            self.keeper.extend(now, verdict.reason)
        elif verdict.reason != self.last_verdict:
            log.warning("the peers are unknown yet: the lease deadline stands")
        self.last_verdict = verdict.reason

    async def ask_peers(self) -> tuple[Verdict, list[PeerReport]] | None:
        """The verdict on what a sample of the peers answer, checked with all of them when it
        would keep the units running; None when etcd answered meanwhile."""
        known = max(len(self.peer_ips), self.peer_count)
        sample = probe_sample(self.peer_ips)
        for asked in (sample, self.peer_ips):
            reports = await self.probe(asked)
            failing_since = self.heart.failing_since
            if failing_since is None:
                return None
            everyone = len(asked) == len(self.peer_ips)
            verdict = decide(
                time.monotonic(),
                self.heart.last_contact,
                failing_since,
                self.ttl,
                known if everyone else len(asked),
                reports,
            )
            if not needs_every_peer(verdict, len(asked), len(self.peer_ips)):
                break
        return verdict, reports

    async def probe(self, addresses: list[str]) -> list[PeerReport]:
        """The peers' answers; none when we cannot even send (our address is gone, say), which
        counts as being cut off."""
        try:
            return await peers.probe(
                self.heart.machine.ip,
                addresses,
                self.peer_port,
                probe_timeout(self.ttl),
                self.peer_key,
            )
        except OSError as error:
            log.warning("cannot ask the peers from %s: %s", self.heart.machine.ip, error)
            return []

    async def fence(self, reason: str) -> None:
        """Stop our units; until every one of them is seen stopped, the next tick tries again
        (a D-Bus call that failed, a unit that would not die)."""
        try:
            await self.agent.fence(stop_deadline(self.heart.last_contact, self.ttl), reason)
            units = self.agent.fenceable()
            states = await self.agent.systemd.unit_states(units)
        except (sd.SystemdError, OSError) as error:
            log.warning("fencing did not complete: %s; trying again", error)
            return
        running = [unit for unit, state in states.items() if state.active_state in RUNNING_STATES]
        if running:
            log.warning("fencing: %s still running; trying again", " ".join(running))
        self.fence_complete = not running

    async def etcd_answers_us_now(self) -> bool:
        """One keepalive out of turn, bounded so that the fence deadline still holds."""
        try:
            async with asyncio.timeout(min(self.request_timeout, 0.1 * self.ttl)):
                return await self.heart.try_now()
        except TimeoutError:
            return False

    async def refresh_peers(self, now: float) -> None:
        # Every machine refreshes, so reading every machine each time costs the cluster N^2
        # records per refresh period; a tiny read first says whether anything changed, and
        # the list is read again at most every peer_refresh_seconds.
        try:
            version = await self.registry.machines_version()
            self.peer_count = max(0, version[0] - 1)
            stale = now - self.listed >= peer_refresh_seconds(
                len(self.peer_ips), PEER_REFRESH_SECONDS
            )
            if version == self.machines_version:
                self.refreshed = self.listed = now  # the list is still current
                return
            if not stale:
                self.refreshed = now
                return
            machines = await self.registry.machines()
        except RegistryError:
            return
        self.machines_version = version  # read before the list: a change between is read again
        found = sorted(m.ip for m in machines.values() if m.id != self.heart.machine.id)
        self.refreshed = self.listed = now
        first, self.peers_known = not self.peers_known, True
        if found != self.peer_ips or first:  # an empty list too: it is known to be empty
            self.peer_ips = found
            save_peers(self.peers_file, found)


def load_peers(path: Path) -> list[str]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [ip for ip in found if isinstance(ip, str)] if isinstance(found, list) else []


def save_peers(path: Path, peer_ips: list[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(peer_ips) + "\n")
    except OSError as error:
        log.warning("cannot remember the peers in %s: %s", path, error)
