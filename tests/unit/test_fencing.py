"""When a machine that lost etcd stops its units: the fencing decision table."""

from __future__ import annotations

import random

import pytest

from fleetd.fencing import (
    PROBE_SAMPLE,
    PeerReport,
    Verdict,
    decide,
    needs_every_peer,
    peer_refresh_seconds,
    probe_sample,
    stop_deadline,
)

TTL = 10.0


# Our last contact at 100.0, our first failure seen at 102.0, asked at 100.0 + silence;
# a report holds when that peer last heard from etcd.
@pytest.mark.parametrize(
    ("silence", "known", "reports", "fence", "why"),
    [
        (1.0, 2, [], False, "etcd answered recently"),
        (5.0, 2, [PeerReport("b", 104.5)], True, "peers b still reach etcd"),
        (5.0, 2, [], True, "only 0 of 2 peers answer"),
        # A split {us, b} | {etcd, c, d, e}: b answers, stale; the silent majority may take over.
        (5.0, 4, [PeerReport("b", 99.0)], True, "only 1 of 4 peers answer"),
        (5.0, 2, [PeerReport("b", 99.0), PeerReport("c", 99.5)], False, "etcd is down"),
        (5.0, 0, [], False, "no peers could take over"),
        (5.0, 2, [PeerReport("b", 99.0), PeerReport("c", 104.8)], True, "peers c still reach etcd"),
        # etcd died at 101.9: b's last keepalive landed at 101.8, after ours but before our
        # first failure at 102.0, so it proves nothing about etcd being up now.
        (5.0, 2, [PeerReport("b", 101.8), PeerReport("c", 101.7)], False, "etcd is down"),
    ],
)
def test_decision(
    silence: float, known: int, reports: list[PeerReport], fence: bool, why: str
) -> None:
    verdict = decide(100.0 + silence, 100.0, 102.0, TTL, known, reports)
    assert verdict.fence is fence
    assert why in verdict.reason


def test_units_are_stopped_before_the_lease_can_expire() -> None:
    # The lease cannot expire before last_contact + ttl; stops must end well before that.
    assert stop_deadline(100.0, TTL) < 100.0 + TTL
    assert stop_deadline(100.0, 3.0) < 103.0


def test_a_first_probe_asks_everyone_in_a_small_cluster_and_a_sample_in_a_large_one() -> None:
    few = [f"10.0.0.{i}" for i in range(PROBE_SAMPLE)]
    assert probe_sample(few) == few
    many = [f"10.0.{i // 250}.{i % 250}" for i in range(1000)]
    sample = probe_sample(many, random.Random(7))
    assert len(set(sample)) == PROBE_SAMPLE and set(sample) <= set(many)


def test_only_a_verdict_that_keeps_the_units_is_checked_with_every_peer() -> None:
    keep, fence = Verdict(False, "etcd is down"), Verdict(True, "peers reach etcd")
    assert needs_every_peer(keep, asked=16, known_peers=1000)
    assert not needs_every_peer(fence, asked=16, known_peers=1000)
    assert not needs_every_peer(keep, asked=5, known_peers=5)


def test_the_peer_list_is_refreshed_less_often_as_the_cluster_grows() -> None:
    assert peer_refresh_seconds(2, floor=5.0) == 5.0
    assert peer_refresh_seconds(100, floor=5.0) == 5.0
    assert peer_refresh_seconds(1000, floor=5.0) == 50.0
