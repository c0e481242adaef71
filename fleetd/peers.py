"""Machines asking each other, over UDP, when they last heard from etcd (for fencing).

The only network code of fleetd besides etcd: a responder every fleetd runs on its public IP,
and a probe that asks all known peers at once and collects what comes back before a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable

from .fencing import PeerReport

log = logging.getLogger(__name__)
QUESTION = b"flotilla-peer:etcd-age?"


class Responder(asyncio.DatagramProtocol):
    def __init__(self, machine_id: str, etcd_age: Callable[[], float]) -> None:
        self.machine_id = machine_id
        self.etcd_age = etcd_age
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data != QUESTION or self.transport is None:
            return
        answer = {"machine": self.machine_id, "etcd_age": round(self.etcd_age(), 3)}
        self.transport.sendto(json.dumps(answer).encode(), addr)


async def serve(
    host: str, port: int, machine_id: str, etcd_age: Callable[[], float]
) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Responder(machine_id, etcd_age), local_addr=(host, port)
    )
    return transport


class Collector(asyncio.DatagramProtocol):
    def __init__(self, expected: int) -> None:
        self.reports: dict[str, PeerReport] = {}
        self.expected = expected
        self.complete = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # The age becomes a time on our clock the moment it arrives (the machines of one host
        # share a monotonic clock; across hosts only the clock rate matters).
        received = time.monotonic()
        try:
            answer = json.loads(data)
            machine, age = answer["machine"], float(answer["etcd_age"])
        except (ValueError, KeyError, TypeError):
            log.debug("ignoring a malformed peer answer from %s", addr[0])
            return
        self.reports[machine] = PeerReport(machine, received - age)
        if len(self.reports) >= self.expected:
            self.complete.set()


async def probe(
    source_ip: str, peers: Iterable[str], port: int, timeout: float
) -> list[PeerReport]:
    """Ask every peer; the answers that arrive within `timeout` (one resend halfway for loss)."""
    addresses = sorted(set(peers))
    if not addresses:
        return []
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        lambda: Collector(len(addresses)), local_addr=(source_ip, 0)
    )
    try:
        for _ in range(2):
            for address in addresses:
                transport.sendto(QUESTION, (address, port))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.complete.wait(), timeout / 2)
            if collector.complete.is_set():
                break
        return list(collector.reports.values())
    finally:
        transport.close()
