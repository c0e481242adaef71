"""The rolling update's verdicts from its samples (qemu/cluster_roll.py), pure."""

from __future__ import annotations

from qemu.cluster_roll import (
    Boot,
    RollReport,
    Sample,
    doubles,
    down_windows,
    longest_gaps,
    longest_run,
    most_overlapping,
)

N = frozenset


def sample(at: float, holders: int | None = 0, quorum: bool = True, **active: str) -> Sample:
    return Sample(
        at,
        {unit: N(nodes.split(",")) if nodes else N() for unit, nodes in active.items()},
        holders,
        quorum,
    )


def test_a_unit_that_moves_between_two_samples_has_no_gap() -> None:
    samples = [sample(0, u="n1"), sample(1, u="n1"), sample(2, u="n2"), sample(3, u="n2")]
    assert longest_gaps(samples) == {"u": 0.0}
    assert doubles(samples) == []


def test_the_gap_runs_from_the_last_sample_seen_active_to_the_next() -> None:
    samples = [sample(0, u="n1"), sample(1, u=""), sample(2, u=""), sample(3.5, u="n2")]
    # Seen active at 0 and 3.5: gone for at most 3.5 s, at least 3.5 - 1 (one sample period).
    assert longest_gaps(samples) == {"u": 2.5}


def test_a_gap_still_open_at_the_end_counts_to_the_last_sample() -> None:
    samples = [sample(0, u="n1"), sample(1, u=""), sample(4, u="")]
    assert longest_gaps(samples) == {"u": 4.0}


def test_two_nodes_at_once_is_a_double() -> None:
    samples = [sample(0, u="n1"), sample(1, u="n1,n2"), sample(2, u="n2")]
    assert doubles(samples) == [(1, "u", N({"n1", "n2"}))]


def test_quorum_loss_and_holders() -> None:
    samples = [
        sample(0, holders=1),
        sample(1, holders=None, quorum=False),
        sample(2, holders=None, quorum=False),
        sample(3, holders=1),
        sample(4, holders=2),
    ]
    report = RollReport(10.0, samples)
    assert report.longest_quorum_loss == 2.0
    assert report.most_holders == 2
    assert longest_run(samples, lambda s: s.holders is None) == 2.0
    assert "longest etcd write refusal      2.0s" in report.lines()


def test_nodes_are_down_between_two_boots_and_one_at_a_time_counts_one() -> None:
    boots = {
        "n1": [Boot("a", 0, 10), Boot("b", 40, 90)],
        "n2": [Boot("c", 0, 95), Boot("d", 130, 150)],
        "n3": [Boot("e", 0, 150)],
    }
    report = RollReport(150.0, [], boots, started=5.0)
    assert down_windows(boots) == {"n1": [(10, 40)], "n2": [(95, 130)]}
    assert report.most_down == 1
    assert report.reboots == {"n1": 35.0, "n2": 125.0}


def test_two_nodes_down_at_once_count_two() -> None:
    assert most_overlapping([(10, 40), (30, 60), (70, 80)]) == 2
    assert most_overlapping([]) == 0
