"""The engine's decision: from one cluster snapshot, the tasks that make placements right.

Pure. Steps, in order:
 1. drop placements that must go (unit destroyed, made inactive or global, machine gone);
 2. see what every machine runs (placed units plus the global units it qualifies for);
 3. drop placements whose constraints no longer hold (e.g. a MachineOf peer moved away);
 4. place what is unplaced, MachineOf peers before their followers, evicting replaced units;
 5. turn placements and global units into per-machine assignments, diffed against etcd;
 6. record why each unplaceable unit is pending.
Units of a machine that is still present are never moved unless their own constraints force it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from .model import (
    Assign,
    Assignment,
    ClearPending,
    ClusterSnapshot,
    DesiredState,
    EngineTask,
    Job,
    MarkPending,
    Schedule,
    Unassign,
    Unschedule,
)
from .scheduler import LoadIndex, MachineView, choose_machine, rejection, replaces


def plan_cluster(snapshot: ClusterSnapshot) -> list[EngineTask]:
    """Every task that brings etcd's placements and assignments in line with the jobs."""
    tasks: list[EngineTask] = []
    placements = drop_dead_placements(snapshot, tasks)
    views = machine_views(snapshot, placements)
    drop_infeasible_placements(snapshot, placements, views, tasks)
    pending = place_units(snapshot, placements, views, tasks)
    tasks += diff_assignments(snapshot, placements, views)
    tasks += diff_reasons(snapshot, pending)
    return tasks


def wants_placement(job: Job | None) -> bool:
    return job is not None and job.desired != DesiredState.INACTIVE


def drop_dead_placements(snapshot: ClusterSnapshot, tasks: list[EngineTask]) -> dict[str, str]:
    placements = {}
    for unit, machine in sorted(snapshot.placements.items()):
        job = snapshot.jobs.get(unit)
        if job is None:
            reason = "unit destroyed"
        elif job.desired == DesiredState.INACTIVE:
            reason = "desired state is inactive"
        elif job.requirements.is_global:
            reason = "unit is global"
        elif machine not in snapshot.machines:
            reason = f"machine {machine[:8]} went away"
        else:
            placements[unit] = machine
            continue
        tasks.append(Unschedule(unit, machine, reason))
    return placements


def machine_views(
    snapshot: ClusterSnapshot, placements: Mapping[str, str]
) -> dict[str, MachineView]:
    views = {machine_id: MachineView(machine) for machine_id, machine in snapshot.machines.items()}
    for unit, machine in placements.items():
        views[machine].units[unit] = snapshot.jobs[unit].requirements
    for job in global_jobs(snapshot):
        for view in views.values():
            if rejection(job, view) is None:
                view.units[job.name] = job.requirements
    return views


def global_jobs(snapshot: ClusterSnapshot) -> list[Job]:
    return [
        job
        for _, job in sorted(snapshot.jobs.items())
        if job.requirements.is_global and wants_placement(job)
    ]


def drop_infeasible_placements(
    snapshot: ClusterSnapshot,
    placements: dict[str, str],
    views: dict[str, MachineView],
    tasks: list[EngineTask],
) -> None:
    # Followers first would see their peer still in place; a fixed point settles chains of peers.
    changed = True
    while changed:
        changed = False
        for unit, machine in sorted(placements.items()):
            view = views[machine]
            requirements = view.units.pop(unit)
            found = rejection(snapshot.jobs[unit], view)
            if found is None:
                view.units[unit] = requirements
                continue
            del placements[unit]
            tasks.append(Unschedule(unit, machine, f"{found.check}: machine {found.detail}"))
            changed = True


def placement_order(snapshot: ClusterSnapshot, placements: Mapping[str, str]) -> list[str]:
    """Unplaced units wanting a machine, each after the MachineOf peers it follows."""
    waiting = {
        name
        for name, job in snapshot.jobs.items()
        if wants_placement(job) and not job.requirements.is_global and name not in placements
    }
    order: list[str] = []
    while waiting:
        ready = sorted(
            name
            for name in waiting
            if not any(peer in waiting for peer in snapshot.jobs[name].requirements.machine_of)
        )
        if not ready:  # a MachineOf cycle: none can go first; let the checks say why
            ready = sorted(waiting)
        order += ready
        waiting -= set(ready)
    return order


def place_units(
    snapshot: ClusterSnapshot,
    placements: dict[str, str],
    views: dict[str, MachineView],
    tasks: list[EngineTask],
) -> dict[str, str]:
    """Place every unplaced unit it can; return the reasons of those it cannot."""
    index = LoadIndex(views)
    pending: dict[str, str] = {}
    queue = deque(placement_order(snapshot, placements))
    excluded: dict[str, set[str]] = {}
    while queue:
        unit = queue.popleft()
        job = snapshot.jobs[unit]
        machine, reason = choose_machine(job, views, index, excluded.get(unit, ()))
        if machine is None:
            pending[unit] = reason
            continue
        placements[unit] = machine
        views[machine].units[unit] = job.requirements
        index.add(machine, 1)
        tasks.append(Schedule(unit, machine, reason))
        for victim in evict_replaced(job, views[machine], placements, index, tasks):
            excluded.setdefault(victim, set()).add(machine)
            queue.append(victim)
    return pending


def evict_replaced(
    job: Job,
    view: MachineView,
    placements: dict[str, str],
    index: LoadIndex,
    tasks: list[EngineTask],
) -> Iterable[str]:
    """Unschedule the units `job` replaces on its new machine; they are placed again elsewhere."""
    victims = [
        name
        for name, requirements in sorted(view.units.items())
        if name in placements
        and name != job.name
        and replaces(job.name, job.requirements, name, requirements)
    ]
    for victim in victims:
        del placements[victim]
        del view.units[victim]
        index.add(view.machine.id, -1)
        tasks.append(Unschedule(victim, view.machine.id, f"replaced by {job.name}"))
    return victims


def diff_assignments(
    snapshot: ClusterSnapshot, placements: Mapping[str, str], views: Mapping[str, MachineView]
) -> list[EngineTask]:
    wanted: dict[str, dict[str, Assignment]] = {machine: {} for machine in snapshot.machines}
    for unit, machine in placements.items():
        job = snapshot.jobs[unit]
        wanted[machine][unit] = Assignment(job.hash, job.desired)
    for job in global_jobs(snapshot):
        for machine, view in views.items():
            if job.name in view.units:
                wanted[machine][job.name] = Assignment(job.hash, job.desired, is_global=True)
    # Every unassign before any assign: a unit moving from A to B must never be assigned to both,
    # even if the writes are split over several transactions and one of them fails.
    unassign: list[EngineTask] = []
    assign: list[EngineTask] = []
    for machine in sorted(set(wanted) | set(snapshot.assignments)):
        have = snapshot.assignments.get(machine, {})
        want = wanted.get(machine, {})
        for unit in sorted(set(have) - set(want)):
            unassign.append(Unassign(machine, unit, "no longer placed here"))
        for unit, assignment in sorted(want.items()):
            if have.get(unit) != assignment:
                assign.append(Assign(machine, unit, assignment, assignment_reason(have.get(unit))))
    return unassign + assign


def assignment_reason(previous: Assignment | None) -> str:
    return "newly placed here" if previous is None else "desired state or unit file changed"


def diff_reasons(snapshot: ClusterSnapshot, pending: Mapping[str, str]) -> list[EngineTask]:
    tasks: list[EngineTask] = []
    for unit in sorted(set(snapshot.reasons) - set(pending)):
        tasks.append(ClearPending(unit))
    for unit, reason in sorted(pending.items()):
        if snapshot.reasons.get(unit) != reason:
            tasks.append(MarkPending(unit, reason))
    return tasks
