"""The fencing probe over real UDP on loopback: authentic answers count, spoofed ones never do."""

from __future__ import annotations

import asyncio
import math
import os
import socket

import pytest

from fleetd import peers

KEY = b"k" * 64
OTHER_KEY = b"x" * 64


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_peer_with_the_cluster_key_is_heard() -> None:
    port = free_udp_port()
    responder = await peers.serve("127.0.0.1", port, KEY, lambda: 1.5)
    try:
        reports = await peers.probe("127.0.0.1", ["127.0.0.1"], port, 1.0, KEY)
    finally:
        responder.close()
    assert [r.machine for r in reports] == ["127.0.0.1"]


async def test_a_peer_with_another_key_is_not_heard_nor_answers() -> None:
    port = free_udp_port()
    responder = await peers.serve("127.0.0.1", port, OTHER_KEY, lambda: 0.0)
    try:
        assert await peers.probe("127.0.0.1", ["127.0.0.1"], port, 0.5, KEY) == []
    finally:
        responder.close()


def flip_last_bit(packet: bytes) -> bytes:
    """Tampered for sure (a byte replaced by a constant is unchanged 1 time in 256)."""
    return packet[:-1] + bytes([packet[-1] ^ 1])


def collector(addresses: list[str] = ["10.0.0.2"]) -> tuple[peers.Collector, bytes]:  # noqa: B006
    nonce = os.urandom(peers.NONCE_BYTES)
    return peers.Collector(KEY, nonce, addresses), nonce


@pytest.mark.parametrize(
    "forge",
    [
        lambda nonce: peers.answer(OTHER_KEY, nonce, 0.0),  # no key: cannot force a fence
        lambda nonce: peers.answer(KEY, os.urandom(16), 0.0),  # replayed from another probe
        lambda nonce: flip_last_bit(peers.answer(KEY, nonce, 0.0)),  # tampered
        lambda nonce: peers.answer(KEY, nonce, -5.0),  # from the future
        lambda nonce: peers.answer(KEY, nonce, math.nan),
        lambda nonce: peers.answer(KEY, nonce, math.inf),
        lambda nonce: b'{"machine": "b", "etcd_age": 0}',  # the old, unauthenticated format
        lambda nonce: b"[" * 65507,
    ],
)
def test_a_forged_or_insane_answer_is_no_answer(forge: object) -> None:
    found, nonce = collector()
    found.datagram_received(forge(nonce), ("10.0.0.2", 4002))  # type: ignore[operator]
    assert found.reports == {}


def test_answers_count_only_from_the_addresses_asked_and_once_each() -> None:
    found, nonce = collector(["10.0.0.2", "10.0.0.3"])
    good = peers.answer(KEY, nonce, 0.5)
    found.datagram_received(good, ("10.0.0.9", 4002))  # not asked: a spoofer elsewhere
    found.datagram_received(good, ("10.0.0.2", 4002))
    found.datagram_received(peers.answer(KEY, nonce, 99.0), ("10.0.0.2", 4002))
    assert list(found.reports) == ["10.0.0.2"]
    assert not found.complete.is_set()


async def test_the_responder_ignores_questions_without_the_key() -> None:
    port = free_udp_port()
    responder = await peers.serve("127.0.0.1", port, KEY, lambda: 0.0)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        sock.sendto(peers.question(OTHER_KEY, os.urandom(16)), ("127.0.0.1", port))
        sock.sendto(b"flotilla-peer:etcd-age?", ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.3)
    finally:
        sock.close()
        responder.close()
