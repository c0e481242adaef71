"""Test helpers for the pure planners: build jobs and snapshots, apply plans like etcd would."""

from __future__ import annotations

from collections.abc import Iterable

from fleetd.cluster_plan import plan_cluster
from fleetd.model import (
    Assign,
    ClearPending,
    ClusterSnapshot,
    DesiredState,
    EngineTask,
    Job,
    Machine,
    MarkPending,
    Schedule,
    Unassign,
    Unschedule,
)
from fleetd.unitfile import parse_unit_file, requirements
from fleetd.unitname import parse_unit_name

SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n"


def job(name: str, x_fleet: str = "", desired: DesiredState = DesiredState.LAUNCHED) -> Job:
    text = SERVICE + (f"\n[X-Fleet]\n{x_fleet}\n" if x_fleet else "")
    unit = parse_unit_file(text, name)
    return Job(name, unit.hash, desired, requirements(unit, parse_unit_name(name)))


def machine(short: str, **metadata: str) -> Machine:
    """A machine whose id starts with `short` (padded to 32 hex digits)."""
    return Machine(short.ljust(32, "0"), f"10.0.0.{int(short[:2], 16)}", metadata)


def snapshot(jobs: Iterable[Job], machines: Iterable[Machine]) -> ClusterSnapshot:
    return ClusterSnapshot({j.name: j for j in jobs}, {m.id: m for m in machines}, {}, {}, {})


def apply(state: ClusterSnapshot, tasks: Iterable[EngineTask]) -> ClusterSnapshot:
    """What etcd holds after the engine wrote `tasks` (compares included)."""
    placements = dict(state.placements)
    assignments = {m: dict(units) for m, units in state.assignments.items()}
    reasons = dict(state.reasons)
    for task in tasks:
        match task:
            case Schedule(unit, machine_id, _):
                assert unit not in placements, f"{unit} scheduled twice"
                placements[unit] = machine_id
            case Unschedule(unit, machine_id, _):
                assert placements.pop(unit) == machine_id
            case Assign(machine_id, unit, assignment, _):
                assignments.setdefault(machine_id, {})[unit] = assignment
            case Unassign(machine_id, unit, _):
                del assignments[machine_id][unit]
            case MarkPending(unit, reason):
                reasons[unit] = reason
            case ClearPending(unit, _):
                del reasons[unit]
    assignments = {m: units for m, units in assignments.items() if units}
    return ClusterSnapshot(state.jobs, state.machines, placements, assignments, reasons)


def without_machine(state: ClusterSnapshot, machine_id: str) -> ClusterSnapshot:
    machines = {m: value for m, value in state.machines.items() if m != machine_id}
    return ClusterSnapshot(state.jobs, machines, state.placements, state.assignments, state.reasons)


def with_jobs(state: ClusterSnapshot, *jobs: Job) -> ClusterSnapshot:
    merged = {**state.jobs, **{j.name: j for j in jobs}}
    return ClusterSnapshot(
        merged, state.machines, state.placements, state.assignments, state.reasons
    )


def settle(state: ClusterSnapshot) -> ClusterSnapshot:
    """Apply plans until nothing is left to do (at most a few rounds)."""
    for _ in range(6):
        tasks = plan_cluster(state)
        if not tasks:
            return state
        state = apply(state, tasks)
    raise AssertionError(f"plan does not settle: {tasks}")
