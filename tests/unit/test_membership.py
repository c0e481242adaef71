"""Majority-safe rescheduling: the recent membership, and when units of vanished machines stay."""

from __future__ import annotations

import dataclasses

import pytest

from fleetd.cluster_plan import plan_cluster
from fleetd.fencing import LONG_OUTAGE_SECONDS, PeerReport, decide
from fleetd.membership import MEMBERSHIP_WINDOW, Membership, withheld_reason
from fleetd.model import (
    Assignment,
    ClusterSnapshot,
    DesiredState,
    MarkPending,
    Schedule,
    Unassign,
    Unschedule,
)
from tests.unit.planning import job, machine, settle, snapshot

A, B, C, D, E = (machine(x) for x in ("a1", "b2", "c3", "d4", "e5"))


def test_new_machines_are_remembered_and_vanished_ones_forgotten_after_the_window() -> None:
    membership = Membership(window=100.0)
    first = membership.update(set(), {A.id, B.id}, now=0.0)
    assert first.remember == {A.id, B.id} and first.members == {A.id, B.id}
    gone = membership.update({A.id, B.id}, {A.id}, now=10.0)
    assert gone.members == {A.id, B.id} and not gone.forget
    later = membership.update({A.id, B.id}, {A.id}, now=109.0)
    assert not later.forget
    forgotten = membership.update({A.id, B.id}, {A.id}, now=110.0)
    assert forgotten.forget == {B.id} and forgotten.members == {A.id}


def test_a_machine_that_comes_back_starts_its_window_afresh() -> None:
    membership = Membership(window=100.0)
    membership.update({A.id, B.id}, {A.id}, now=0.0)
    membership.update({A.id, B.id}, {A.id, B.id}, now=50.0)
    assert not membership.update({A.id, B.id}, {A.id}, now=120.0).forget


def test_a_new_leader_can_only_forget_later() -> None:
    # A fresh Membership (a new term) starts the clock of every vanished machine now.
    assert not Membership(window=100.0).update({A.id, B.id}, {A.id}, now=10_000.0).forget


@pytest.mark.parametrize(
    ("live", "members", "withheld"),
    [
        (1, 1, False),
        (1, 2, False),
        (2, 3, False),
        (1, 3, True),
        (2, 4, False),
        (1, 5, True),
        (2, 5, True),
        (3, 5, False),
        (4, 10, True),
        (5, 10, False),
    ],
)
def test_units_move_only_while_half_the_membership_reaches_etcd(
    live: int, members: int, withheld: bool
) -> None:
    assert (withheld_reason(live, members) is not None) is withheld


@pytest.mark.parametrize("cut_off", range(1, 5))
def test_a_group_that_keeps_its_units_is_never_rescheduled(cut_off: int) -> None:
    """The rule is the complement of fencing.decide, with a stale peer of margin: a vanished
    group whose members would not fence (each hears from more than half its peers, none of
    which reaches etcd) is always withheld; a group the engine may move always fences."""
    total = 5
    for known_peers in (total - 1, total - 2):  # up to date, or missing one newcomer
        answers = [PeerReport(f"p{i}", 99.0) for i in range(cut_off - 1)]
        verdict = decide(105.0, 100.0, 102.0, 10.0, known_peers, answers)
        moves = withheld_reason(total - cut_off, total) is None
        assert not (moves and not verdict.fence), (cut_off, known_peers, verdict)


def test_the_etcd_is_down_verdict_ends_before_the_engine_forgets() -> None:
    answers = [PeerReport("b", 99.0), PeerReport("c", 99.0)]
    assert not decide(100.0 + LONG_OUTAGE_SECONDS - 1, 100.0, 102.0, 10.0, 2, answers).fence
    late = decide(100.0 + LONG_OUTAGE_SECONDS, 100.0, 102.0, 10.0, 2, answers)
    assert late.fence and "etcd unreachable" in late.reason
    # Stopping ends within the TTL of the fence; the engine forgets a TTL after the lease.
    assert LONG_OUTAGE_SECONDS + 10.0 < MEMBERSHIP_WINDOW


def placed_on_five() -> ClusterSnapshot:
    units = [job(f"u{i}.service") for i in range(10)]
    return settle(snapshot(units, [A, B, C, D, E]))


def vanish(state: ClusterSnapshot, *gone: str) -> ClusterSnapshot:
    machines = {m: value for m, value in state.machines.items() if m not in gone}
    return dataclasses.replace(state, machines=machines, members=frozenset(state.machines))


def test_units_of_a_vanished_majority_stay_put_with_a_reason() -> None:
    state = placed_on_five()
    tasks = plan_cluster(vanish(state, B.id, C.id, D.id, E.id))
    assert not [t for t in tasks if isinstance(t, Schedule | Unschedule | Unassign)]
    kept = [t for t in tasks if isinstance(t, MarkPending)]
    on_vanished = [u for u, m in state.placements.items() if m != A.id]
    assert sorted(t.unit for t in kept) == sorted(on_vanished)
    assert all("only 1 of 5 recently known machines reach etcd" in t.reason for t in kept)


def test_a_destroyed_unit_keeps_its_vanished_placement_while_withheld() -> None:
    state = placed_on_five()
    unit = next(u for u, m in state.placements.items() if m == B.id)
    jobs = {name: j for name, j in state.jobs.items() if name != unit}
    again = dataclasses.replace(vanish(state, B.id, C.id, D.id, E.id), jobs=jobs)
    assert not [t for t in plan_cluster(again) if getattr(t, "unit", None) == unit]


def test_units_of_a_vanished_minority_move() -> None:
    state = placed_on_five()
    tasks = plan_cluster(vanish(state, D.id, E.id))
    moved = {t.unit for t in tasks if isinstance(t, Schedule)}
    assert moved == {u for u, m in state.placements.items() if m in (D.id, E.id)}


def test_a_unit_whose_file_cannot_be_read_stays_where_it_runs() -> None:
    state = placed_on_five()
    unit, where = next(iter(sorted(state.placements.items())))
    jobs = {name: j for name, j in state.jobs.items() if name != unit}
    broken = dataclasses.replace(state, jobs=jobs, unresolved={unit: "unit file is missing"})
    tasks = plan_cluster(broken)
    assert [t for t in tasks if getattr(t, "unit", None) == unit] == [
        MarkPending(unit, "unit file is missing")
    ]
    assert state.assignments[where][unit] == Assignment(
        state.jobs[unit].hash, DesiredState.LAUNCHED
    )


def test_a_fleetd_started_during_an_etcd_outage_does_not_fence_at_once() -> None:
    answers = [PeerReport("b", 99.0), PeerReport("c", 99.0)]
    verdict = decide(200.0, float("-inf"), 195.0, 10.0, 2, answers)
    assert not verdict.fence and "etcd is down" in verdict.reason
    late = decide(195.0 + LONG_OUTAGE_SECONDS, float("-inf"), 195.0, 10.0, 2, answers)
    assert late.fence
