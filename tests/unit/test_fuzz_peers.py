"""Fuzz: the fencing probe's packets survive any datagram, cannot be forged, and never give a
report of an impossible time (Hypothesis).

Anyone who can send a UDP packet to the probe's port can put bytes into `Collector` and
`Responder`. A packet must never raise (that would end the fence guard's probe), a packet that
is not an authentic answer to our question must never become a report (it could cancel or force
a fence), and no answer may say a peer heard from etcd in the future or at a time that is not a
number: `fencing.decide` compares that time with when this machine's failures began.
"""

from __future__ import annotations

import math
import struct
import time

from hypothesis import example, given
from hypothesis import strategies as st

from fleetd.fencing import PeerReport
from fleetd.peers import (
    ANSWER_BYTES,
    MAX_AGE,
    NONCE_BYTES,
    QUESTION_BYTES,
    Collector,
    Responder,
    age_of_answer,
    answer,
    nonce_of_question,
    question,
)

from .fuzzing import fuzz

KEY = b"k" * 32
PEERS = ("10.0.0.2", "10.0.0.3", "fd00::4")
nonces = st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES)
# Every float64 a packet can carry: NaN (several payloads), infinities, -0.0, subnormals.
ages = st.one_of(
    st.floats(width=64),
    st.binary(min_size=8, max_size=8).map(lambda raw: struct.unpack(">d", raw)[0]),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1.0, MAX_AGE, MAX_AGE * 2]),
)


def mutations(packet: bytes) -> st.SearchStrategy[bytes]:
    """`packet` with one byte changed, cut short, or extended."""
    changed = st.builds(
        lambda index, flip: packet[:index] + bytes([packet[index] ^ flip]) + packet[index + 1 :],
        st.integers(0, len(packet) - 1),
        st.integers(1, 255),
    )
    return st.one_of(
        changed,
        st.integers(0, len(packet) - 1).map(lambda length: packet[:length]),
        st.binary(min_size=1, max_size=8).map(packet.__add__),
    )


def collect(nonce: bytes, data: bytes, sender: str = PEERS[0]) -> tuple[list[PeerReport], float]:
    """The reports a fresh collector holds after `data` arrives from `sender`, and the time just
    after. Whatever escapes the parser fails one assertion here, so that Hypothesis takes every
    kind of escape for one failure and shrinks it to the simplest packet."""
    collector, escaped = Collector(KEY, nonce, PEERS), None
    try:
        collector.datagram_received(data, (sender, 7007))
    except Exception as error:
        escaped = error
    assert escaped is None, f"datagram_received raised {escaped!r}"
    return list(collector.reports.values()), time.monotonic()


@fuzz(300)
@given(
    nonces,
    st.one_of(st.binary(max_size=2 * ANSWER_BYTES), st.binary(min_size=72, max_size=72)),
    st.sampled_from([*PEERS, "10.0.0.9", "", "::1"]),
)
def test_a_packet_that_is_not_an_answer_to_our_question_is_ignored(
    nonce: bytes, data: bytes, sender: str
) -> None:
    reports, _ = collect(nonce, data, sender)
    assert reports == []


@fuzz(300)
@given(nonces, ages, st.data())
def test_a_changed_answer_is_ignored(nonce: bytes, age: float, data: st.DataObject) -> None:
    forged = data.draw(mutations(answer(KEY, nonce, age)))
    assert collect(nonce, forged)[0] == []


@fuzz(200)
@given(nonces, nonces, ages, st.sampled_from(["10.0.0.9", "127.0.0.1"]))
def test_an_answer_with_another_key_nonce_or_sender_is_ignored(
    nonce: bytes, other_nonce: bytes, age: float, stranger: str
) -> None:
    assert collect(nonce, answer(b"x" * 32, nonce, age))[0] == []
    if other_nonce != nonce:
        assert collect(nonce, answer(KEY, other_nonce, age))[0] == []
    assert collect(nonce, answer(KEY, nonce, age), stranger)[0] == []


@fuzz(400)
@given(nonces, ages)
@example(bytes(NONCE_BYTES), math.nan)
@example(bytes(NONCE_BYTES), -1.0)
@example(bytes(NONCE_BYTES), math.inf)
@example(bytes(NONCE_BYTES), 1e300)
def test_no_answer_claims_contact_in_the_future_or_at_a_non_finite_time(
    nonce: bytes, age: float
) -> None:
    before = time.monotonic()
    reports, after = collect(nonce, answer(KEY, nonce, age))
    for report in reports:
        # One assertion, so that Hypothesis reports every way to break it as one failure.
        assert (
            math.isfinite(report.last_contact)
            and before - MAX_AGE <= report.last_contact <= after
            and report.machine == PEERS[0]
        ), report


@fuzz(200)
@given(nonces, st.floats(0, MAX_AGE))
def test_a_sane_answer_is_recorded_at_the_time_it_says(nonce: bytes, age: float) -> None:
    before = time.monotonic()
    reports, after = collect(nonce, answer(KEY, nonce, age))
    assert [report.machine for report in reports] == [PEERS[0]]
    assert before - age <= reports[0].last_contact <= after - age + 1e-6 * max(1.0, age)


@fuzz(300)
@given(
    nonces, st.one_of(st.binary(max_size=2 * QUESTION_BYTES), ages.map(struct.Struct(">d").pack))
)
def test_only_an_authentic_question_has_a_nonce(nonce: bytes, data: bytes) -> None:
    assert nonce_of_question(KEY, question(KEY, nonce)) == nonce
    assert nonce_of_question(b"x" * 32, question(KEY, nonce)) is None
    found = nonce_of_question(KEY, data)
    assert found is None or data == question(KEY, found)
    assert age_of_answer(KEY, nonce, data) is None


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def respond(data: bytes, etcd_age: float) -> list[bytes]:
    responder, transport = Responder(KEY, lambda: etcd_age), _Transport()
    responder.connection_made(transport)  # type: ignore[arg-type]
    responder.datagram_received(data, (PEERS[1], 40000))
    return [packet for packet, addr in transport.sent if addr == (PEERS[1], 40000)]


@fuzz(300)
@given(nonces, st.binary(max_size=2 * QUESTION_BYTES), st.booleans())
def test_the_responder_answers_authentic_questions_only(
    nonce: bytes, data: bytes, authentic: bool
) -> None:
    packet = question(KEY, nonce) if authentic else data
    asked = nonce_of_question(KEY, packet)
    assert respond(packet, 1.5) == ([] if asked is None else [answer(KEY, asked, 1.5)])


@fuzz(100)
@given(nonces, ages)
def test_the_responder_survives_any_age_and_never_tells_a_bad_one(
    nonce: bytes, etcd_age: float
) -> None:
    for packet in respond(question(KEY, nonce), etcd_age):
        told = age_of_answer(KEY, nonce, packet)
        assert told is None or 0 <= told <= MAX_AGE


@fuzz(20)
@given(nonces)
def test_the_responder_never_sends_more_than_it_was_sent(nonce: bytes) -> None:
    packet = question(KEY, nonce)
    assert all(len(sent) <= len(packet) for sent in respond(packet, 1.0))
