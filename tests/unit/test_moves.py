"""A unit moving between two live machines stops on the old one before it starts on the new."""

from __future__ import annotations

import dataclasses

from fleetd.cluster_plan import WAITING, plan_cluster
from fleetd.model import Assign, ClusterSnapshot, MarkPending, Unassign
from tests.unit.planning import apply, job, machine, settle, snapshot

A, B = machine("a1", role="old"), machine("b2", role="new")


def placed_on_a() -> ClusterSnapshot:
    return settle(snapshot([job("web.service", "MachineMetadata=role=old")], [A, B]))


def moved_by_a_metadata_change(state: ClusterSnapshot) -> ClusterSnapshot:
    a, b = machine("a1", role="gone"), machine("b2", role="old")
    return dataclasses.replace(state, machines={a.id: a, b.id: b})


def test_the_new_machine_is_assigned_only_once_the_old_one_stopped_it() -> None:
    state = placed_on_a()
    assert state.placements["web.service"] == A.id
    moved = moved_by_a_metadata_change(state)
    first = plan_cluster(moved)
    assert Unassign(A.id, "web.service", "no longer placed here") in first
    assert not [t for t in first if isinstance(t, Assign)]
    waiting = [t for t in first if isinstance(t, MarkPending)]
    assert waiting and waiting[0].reason.startswith(WAITING)
    # The old machine's agent still reports the unit running: the new one must wait.
    after = dataclasses.replace(apply(moved, first), running={"web.service": frozenset({A.id})})
    assert not [t for t in plan_cluster(after) if isinstance(t, Assign)]
    stopped = dataclasses.replace(after, running={})
    assigned = [t for t in plan_cluster(stopped) if isinstance(t, Assign)]
    assert [(t.machine, t.unit) for t in assigned] == [(B.id, "web.service")]


def test_a_unit_on_a_vanished_machine_moves_at_once() -> None:
    state = placed_on_a()
    running = {"web.service": frozenset({A.id})}  # its lease expired: its states went too
    gone = dataclasses.replace(state, machines={B.id: B}, running=running)
    gone = dataclasses.replace(gone, jobs={"web.service": job("web.service")})
    assigned = [t for t in plan_cluster(gone) if isinstance(t, Assign)]
    assert [(t.machine, t.unit) for t in assigned] == [(B.id, "web.service")]
