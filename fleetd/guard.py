"""The fence guard: while etcd is silent, ask the peers and stop our units if we are cut off.

The decision is `fencing.decide` (pure); this is the loop around it. The peer list is kept in
/run/fleet/peers as well, so a fleetd restarted while the machine is cut off still knows whom
to ask.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from . import peers
from .agent import Agent
from .fencing import (
    decide,
    etcd_silence_suspicious,
    keepalive_interval,
    probe_timeout,
    stop_deadline,
)
from .heart import Heart
from .registry import Registry, RegistryError

log = logging.getLogger(__name__)
PEER_REFRESH_SECONDS = 5.0  # how stale the peer list may get (1 s while it is empty)


class FenceGuard:
    def __init__(
        self,
        registry: Registry,
        heart: Heart,
        agent: Agent,
        peer_port: int,
        request_timeout: float,
        peers_file: Path,
    ) -> None:
        self.registry = registry
        self.heart = heart
        self.agent = agent
        self.ttl = heart.ttl
        self.peer_port = peer_port
        self.request_timeout = request_timeout
        self.peers_file = peers_file
        self.peer_ips = load_peers(peers_file)
        self.refreshed = float("-inf")
        self.last_verdict = ""

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
            if now - self.refreshed >= (PEER_REFRESH_SECONDS if self.peer_ips else 1.0):
                await self.refresh_peers(now)
            return
        if self.agent.fenced or not etcd_silence_suspicious(now, self.heart.last_contact, self.ttl):
            return
        reports = await peers.probe(
            self.heart.machine.ip, self.peer_ips, self.peer_port, probe_timeout(self.ttl)
        )
        verdict = decide(
            time.monotonic(),
            self.heart.last_contact,
            self.heart.failing_since,
            self.ttl,
            len(self.peer_ips),
            reports,
        )
        if verdict.fence and reports and await self.etcd_answers_us_now():
            return  # peers reach etcd and, asked once more, so do we: no outage here
        if verdict.fence:
            await self.agent.fence(stop_deadline(self.heart.last_contact, self.ttl), verdict.reason)
        elif verdict.reason != self.last_verdict:
            log.warning("etcd is silent; not fencing: %s", verdict.reason)
        self.last_verdict = verdict.reason

    async def etcd_answers_us_now(self) -> bool:
        """One keepalive out of turn, bounded so that the fence deadline still holds."""
        try:
            async with asyncio.timeout(min(self.request_timeout, 0.1 * self.ttl)):
                return await self.heart.try_now()
        except TimeoutError:
            return False

    async def refresh_peers(self, now: float) -> None:
        try:
            machines = await self.registry.machines()
        except RegistryError:
            return
        found = sorted(m.ip for m in machines.values() if m.id != self.heart.machine.id)
        self.refreshed = now
        if found != self.peer_ips:
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
