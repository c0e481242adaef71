"""Machines asking each other, over UDP, when they last heard from etcd (for fencing).

The only network code of fleetd besides etcd: a responder every fleetd runs on its public IP,
and a probe that asks all known peers at once and collects what comes back before a deadline.

Anyone who can send a datagram to the port could otherwise cancel a fence (answer "etcd is
down here too") or force one (answer "etcd is fine here"), so every packet is authenticated:

    question  MAGIC_Q | nonce (16 bytes) | 8 zero bytes | HMAC-SHA256(key, all before it)
    answer    MAGIC_A | nonce | age (float64, big-endian) | HMAC-SHA256(key, all before it)

with the cluster's peer key (etcd holds it; see Registry.peer_key). The nonce is fresh for
each probe, so an old answer cannot be replayed; answers count only from the addresses asked
(one report per address), and an age that is negative, not finite or absurdly large counts as
no answer. The responder answers authenticated questions only, and the question is padded to
the answer's size, so a replayed question cannot be used to reflect or amplify traffic either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import struct
import time
from collections.abc import Callable, Iterable

from .fencing import PeerReport

log = logging.getLogger(__name__)
MAGIC_Q = b"flotilla-peer:q2"  # q1 was unpadded
MAGIC_A = b"flotilla-peer:a1"
NONCE_BYTES = 16
TAG_BYTES = 32
AGE = struct.Struct(">d")
PADDING = bytes(AGE.size)  # the answer's age field: the question is exactly as long
QUESTION_BYTES = len(MAGIC_Q) + NONCE_BYTES + len(PADDING) + TAG_BYTES
ANSWER_BYTES = len(MAGIC_A) + NONCE_BYTES + AGE.size + TAG_BYTES
MAX_AGE = 1e9  # Heart.etcd_age's "never"; anything above is not an age


def tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def question(key: bytes, nonce: bytes) -> bytes:
    payload = MAGIC_Q + nonce + PADDING
    return payload + tag(key, payload)


def nonce_of_question(key: bytes, data: bytes) -> bytes | None:
    """The nonce of an authentic question, else None."""
    if len(data) != QUESTION_BYTES or not data.startswith(MAGIC_Q):
        return None
    payload, received = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(tag(key, payload), received):
        return None
    return payload[len(MAGIC_Q) : len(MAGIC_Q) + NONCE_BYTES]


def answer(key: bytes, nonce: bytes, age: float) -> bytes:
    payload = MAGIC_A + nonce + AGE.pack(age)
    return payload + tag(key, payload)


def age_of_answer(key: bytes, nonce: bytes, data: bytes) -> float | None:
    """The age an authentic answer to our question carries, if it is a sane one."""
    if len(data) != ANSWER_BYTES or not data.startswith(MAGIC_A + nonce):
        return None
    payload, received = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(tag(key, payload), received):
        return None
    (age,) = AGE.unpack(payload[len(MAGIC_A) + NONCE_BYTES :])
    return age if math.isfinite(age) and 0.0 <= age <= MAX_AGE else None


class Responder(asyncio.DatagramProtocol):
    def __init__(self, key: bytes, etcd_age: Callable[[], float]) -> None:
        self.key = key
        self.etcd_age = etcd_age
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        nonce = nonce_of_question(self.key, data)
        if nonce is None or self.transport is None:
            return
        self.transport.sendto(answer(self.key, nonce, min(self.etcd_age(), MAX_AGE)), addr)


async def serve(
    host: str, port: int, key: bytes, etcd_age: Callable[[], float]
) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Responder(key, etcd_age), local_addr=(host, port)
    )
    return transport


class Collector(asyncio.DatagramProtocol):
    def __init__(self, key: bytes, nonce: bytes, addresses: Iterable[str]) -> None:
        self.key = key
        self.nonce = nonce
        self.addresses = set(addresses)
        self.reports: dict[str, PeerReport] = {}
        self.complete = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # The age becomes a time on our clock the moment it arrives (the machines of one host
        # share a monotonic clock; across hosts only the clock rate matters).
        received = time.monotonic()
        source = addr[0]
        if source not in self.addresses or source in self.reports:
            return
        age = age_of_answer(self.key, self.nonce, data)
        if age is None:
            log.debug("ignoring a peer answer from %s that is not authentic", source)
            return
        self.reports[source] = PeerReport(source, received - age)
        if len(self.reports) >= len(self.addresses):
            self.complete.set()


async def probe(
    source_ip: str, peers: Iterable[str], port: int, timeout: float, key: bytes
) -> list[PeerReport]:
    """Ask every peer; the authentic answers that arrive within `timeout` (one resend halfway
    for loss). Reports are named by the peer's address."""
    addresses = sorted(set(peers))
    if not addresses:
        return []
    nonce = os.urandom(NONCE_BYTES)
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        lambda: Collector(key, nonce, addresses), local_addr=(source_ip, 0)
    )
    try:
        packet = question(key, nonce)
        for _ in range(2):
            for address in addresses:
                transport.sendto(packet, (address, port))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.complete.wait(), timeout / 2)
            if collector.complete.is_set():
                break
        return list(collector.reports.values())
    finally:
        transport.close()
