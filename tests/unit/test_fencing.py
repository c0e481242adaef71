"""When a machine that lost etcd stops its units: the fencing decision table."""

from __future__ import annotations

import pytest

from fleetd.fencing import PeerReport, decide, stop_deadline

TTL = 10.0


@pytest.mark.parametrize(
    ("silence", "known", "reports", "fence", "why"),
    [
        (1.0, 2, [], False, "etcd answered recently"),
        (5.0, 2, [PeerReport("b", 0.5)], True, "peers b still reach etcd"),
        (5.0, 2, [], True, "none of 2 peers answers"),
        (5.0, 2, [PeerReport("b", 6.0), PeerReport("c", 5.5)], False, "etcd is down"),
        (5.0, 0, [], False, "no peers could take over"),
        (5.0, 2, [PeerReport("b", 6.0), PeerReport("c", 0.2)], True, "peers c still reach etcd"),
    ],
)
def test_decision(
    silence: float, known: int, reports: list[PeerReport], fence: bool, why: str
) -> None:
    verdict = decide(100.0 + silence, 100.0, TTL, known, reports)
    assert verdict.fence is fence
    assert why in verdict.reason


def test_units_are_stopped_before_the_lease_can_expire() -> None:
    # The lease cannot expire before last_contact + ttl; stops must end well before that.
    assert stop_deadline(100.0, TTL) < 100.0 + TTL
    assert stop_deadline(100.0, 3.0) < 103.0
