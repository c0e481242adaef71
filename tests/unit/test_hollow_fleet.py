"""bench/hollow_fleet.py's plan of which worker process holds which hollow machine, and the
loop-lag summary bench/hollow.py prints (pure logic)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from bench.hollow_fleet import plan_workers
from bench.hollow_measure import lag_summary
from bench.hollow_worker import Worker


def test_engine_capable_machines_get_a_worker_of_their_own() -> None:
    assert plan_workers(8, 3, 2) == [[0, 1, 2], [3, 5, 7], [4, 6]]


def test_when_every_machine_runs_the_engine_they_are_dealt_out() -> None:
    assert plan_workers(5, 5, 2) == [[0, 2, 4], [1, 3]]
    assert plan_workers(4, 4, 1) == [[0, 1, 2, 3]]


def test_never_an_empty_worker() -> None:
    assert plan_workers(3, 2, 4) == [[0, 1], [2]]


def test_every_machine_once() -> None:
    groups = plan_workers(1000, 3, 2)
    assert sorted(i for g in groups for i in g) == list(range(1000))


@pytest.mark.parametrize("args", [(0, 0, 1), (4, 5, 1), (4, 2, 0)])
def test_impossible_plans_are_refused(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        plan_workers(*args)


def test_lag_summary_counts_the_time_spent_in_long_stalls() -> None:
    lags = [0.001] * 98 + [1.5, 2.5]
    assert lag_summary(lags) == "p99 2500 ms, max 2.50s, 4s in stalls > 1 s"
    assert lag_summary([]) == "no samples"


def test_the_worker_counts_every_lease_replaced_not_machines_that_ever_lost_one() -> None:
    machines = [SimpleNamespace(index=i, heart=SimpleNamespace(lease=None)) for i in range(2)]
    worker = Worker(machines, io.StringIO())  # type: ignore[arg-type]
    assert worker.count_new_leases() == 0
    machines[0].heart.lease, machines[1].heart.lease = 10, 20  # registered: not a replacement
    assert worker.count_new_leases() == 0
    machines[0].heart.lease = None  # expired; registering again
    assert worker.count_new_leases() == 0
    machines[0].heart.lease = 11
    assert worker.count_new_leases() == 1
    machines[0].heart.lease = 12  # the same machine again: counted again
    assert worker.count_new_leases() == 2
