"""Draining a machine, as the engine's pure planner does it: the machine takes no new unit, its
global units stay, its other units move elsewhere one at a time (the old copy stopped before the
new one is assigned), and a unit no other machine can take stays there with why."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from fleetd.cluster_plan import DRAIN_MOVE, DRAIN_STAYS, plan_cluster, unmovable_units
from fleetd.events import MACHINE_DRAINED, MACHINE_UNDRAINED
from fleetd.events_decide import DrainWatch
from fleetd.model import (
    Assign,
    ClusterSnapshot,
    DesiredState,
    EngineTask,
    Job,
    Schedule,
    Unassign,
    Unschedule,
)

from .planning import apply, job, machine, snapshot

A, B, C = machine("aa"), machine("bb"), machine("cc")
UNITS = [job("a.service"), job("b.service"), job("c.service")]


def carried(before: ClusterSnapshot, tasks: Iterable[EngineTask]) -> ClusterSnapshot:
    """apply(), keeping what the agents reported and the drain marks."""
    return dataclasses.replace(
        apply(before, tasks),
        drained=before.drained,
        running=before.running,
        landed=before.landed,
    )


def settle(state: ClusterSnapshot) -> ClusterSnapshot:
    for _ in range(6):
        tasks = plan_cluster(state)
        if not tasks:
            return state
        state = carried(state, tasks)
    raise AssertionError(f"plan does not settle: {tasks}")


def agents_stop(state: ClusterSnapshot) -> ClusterSnapshot:
    """Every machine stopped what is no longer assigned to it (starts nothing)."""
    running = {
        unit: frozenset(m for m in where if unit in state.assignments.get(m, {}))
        for unit, where in state.running.items()
    }
    return dataclasses.replace(state, running=running, landed=running)


def agents_start(state: ClusterSnapshot) -> ClusterSnapshot:
    """Every machine runs exactly what is assigned to it."""
    running: dict[str, set[str]] = {}
    for machine_id, units in state.assignments.items():
        for unit in units:
            running.setdefault(unit, set()).add(machine_id)
    found = {unit: frozenset(where) for unit, where in running.items()}
    return dataclasses.replace(state, running=found, landed=found)


def running_on_a(units: Iterable[Job]) -> ClusterSnapshot:
    """a, b and c placed on A and running there; B and C idle."""
    state = settle(snapshot(units, [A]))
    state = dataclasses.replace(state, machines={m.id: m for m in (A, B, C)})
    return agents_start(state)


def drained(state: ClusterSnapshot, *machines: str) -> ClusterSnapshot:
    return dataclasses.replace(state, drained=frozenset(machines))


def moves(tasks: Iterable[EngineTask]) -> list[str]:
    return [task.unit for task in tasks if isinstance(task, Unschedule)]


def copies(state: ClusterSnapshot, unit: str) -> int:
    assigned = {m for m, units in state.assignments.items() if unit in units}
    return len(assigned | state.running.get(unit, frozenset()))


def test_a_draining_machine_is_never_a_candidate() -> None:
    state = settle(drained(snapshot(UNITS, [A, B]), A.id))
    assert set(state.placements.values()) == {B.id}
    alone = settle(drained(snapshot([job("a.service")], [A]), A.id))
    assert alone.placements == {}
    assert alone.reasons["a.service"] == "no machine accepts units (every one is draining)"


def in_flight(state: ClusterSnapshot) -> list[str]:
    """Units that left A and are not yet active on their new machine."""
    return [
        unit
        for unit, where in state.placements.items()
        if where != A.id and where not in state.landed.get(unit, frozenset())
    ]


def test_units_move_off_one_at_a_time_and_never_run_twice() -> None:
    state = drained(running_on_a(UNITS), A.id)
    moved: list[str] = []
    for _ in range(10):
        # A pass, then A stops what left it; a pass, then the others start what they got.
        for agents in (agents_stop, agents_start):
            tasks = plan_cluster(state)
            moved += moves(tasks)
            state = carried(state, tasks)
            assert len(in_flight(state)) <= 1
            assert all(copies(state, unit.name) <= 1 for unit in UNITS)
            state = agents(state)
            assert all(copies(state, unit.name) <= 1 for unit in UNITS)
    assert moved == ["a.service", "b.service", "c.service"]
    assert A.id not in state.placements.values()
    assert state.reasons == {}
    assert plan_cluster(state) == []


def test_the_first_move_unassigns_the_old_copy_and_waits_before_assigning_the_new() -> None:
    state = drained(running_on_a(UNITS), A.id)
    tasks = plan_cluster(state)
    assert Unschedule("a.service", A.id, f"machine {A.short_id} is draining") in tasks
    assert Schedule("a.service", B.id, "least loaded feasible machine") in tasks
    assert Unassign(A.id, "a.service", "no longer placed here") in tasks
    assert not [t for t in tasks if isinstance(t, Assign)]
    state = carried(state, tasks)
    assert state.reasons["a.service"] == f"{DRAIN_MOVE} {A.short_id} to {B.short_id}"
    still_running = plan_cluster(state)  # A has not stopped it yet: nothing is assigned on B
    assert not [t for t in still_running if isinstance(t, Assign | Unschedule)]
    stopped = agents_stop(state)
    assert [t for t in plan_cluster(stopped) if isinstance(t, Assign)] == [
        Assign(B.id, "a.service", stopped.assignments[A.id]["b.service"], "newly placed here")
    ]


def test_a_unit_no_other_machine_can_take_stays_and_says_why() -> None:
    pinned = job("pinned.service", f"MachineID={A.id}")
    state = drained(running_on_a([pinned, job("a.service")]), A.id)
    assert unmovable_units(dataclasses.replace(state, drained=frozenset()), A.id) == {
        "pinned.service": f"no machine can run it: {A.short_id} is draining; "
        f"{B.short_id} is not MachineID {A.id}; {C.short_id} is not MachineID {A.id}"
    }
    tasks = plan_cluster(state)
    assert moves(tasks) == ["a.service"]
    state = carried(state, tasks)
    assert state.placements["pinned.service"] == A.id
    assert "pinned.service" in state.assignments[A.id]
    assert state.reasons["pinned.service"].startswith(f"{DRAIN_STAYS} {A.short_id}: ")
    assert f"is not MachineID {A.id}" in state.reasons["pinned.service"]


def test_global_units_stay_on_a_draining_machine() -> None:
    agent = job("agent.service", "Global=true")
    state = drained(running_on_a([agent, job("a.service")]), A.id)
    state = settle(state)
    assert state.assignments[A.id]["agent.service"].is_global
    assert unmovable_units(state, A.id) == {}


def test_undrain_makes_the_machine_a_candidate_again_and_moves_nothing_back() -> None:
    pinned = job("pinned.service", f"MachineID={A.id}")
    state = drained(running_on_a([pinned, job("a.service")]), A.id)
    state = agents_start(carried(state, plan_cluster(state)))
    state = agents_start(carried(state, plan_cluster(state)))
    assert state.placements["a.service"] == B.id
    state = drained(state, *())
    tasks = plan_cluster(state)
    assert not [t for t in tasks if isinstance(t, Schedule | Unschedule)]
    state = settle(carried(state, tasks))
    assert state.reasons == {}
    assert state.placements == {"pinned.service": A.id, "a.service": B.id}
    new = settle(dataclasses.replace(state, jobs={**state.jobs, "n.service": job("n.service")}))
    assert new.placements["n.service"] == C.id  # least loaded: A is a candidate, but runs one


def test_a_machine_of_follower_moves_with_its_peer_in_the_same_pass() -> None:
    """What the normal constraint logic does: the follower's peer left, so its placement no
    longer holds; it is placed again, next to its peer. The pair is one move."""
    units = [job("web.service"), job("web-log.service", "MachineOf=web.service")]
    state = drained(running_on_a(units), A.id)
    tasks = plan_cluster(state)
    assert moves(tasks) == ["web.service", "web-log.service"]
    state = carried(state, tasks)
    assert state.placements["web.service"] == state.placements["web-log.service"] == B.id


def test_a_loaded_unit_has_arrived_once_it_is_assigned_on_its_new_machine() -> None:
    units = [job(u.name, desired=DesiredState.LOADED) for u in UNITS]
    state = drained(running_on_a(units), A.id)
    state = dataclasses.replace(state, running={}, landed={})  # loaded: nothing runs
    moved: list[str] = []
    for _ in range(6):
        tasks = plan_cluster(state)
        moved += moves(tasks)
        state = carried(state, tasks)
    assert moved == ["a.service", "b.service", "c.service"]


def test_drain_marks_are_told_as_they_come_and_go() -> None:
    watch = DrainWatch()
    assert watch.update({A.id}) == []  # a new leader tells nothing of the marks it finds
    assert [(d.kind, d.machine) for d in watch.update({A.id, B.id})] == [(MACHINE_DRAINED, B.id)]
    assert [(d.kind, d.machine) for d in watch.update({B.id})] == [(MACHINE_UNDRAINED, A.id)]
