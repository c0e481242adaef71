"""When a machine that lost etcd stops its units: the fencing decision table."""

from __future__ import annotations

import pytest

from fleetd.fencing import PeerReport, decide, stop_deadline

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
