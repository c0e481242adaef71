"""The engine's decision: from one cluster snapshot, the tasks that make placements right.

Pure. Steps, in order:
 1. drop placements that must go (unit destroyed, made inactive or global, machine gone),
    except on machines that vanished while too few machines still reach etcd: those stay
    put, assignments and all, with the reason recorded (membership.withheld_reason); so do
    units whose job or unit file cannot be read;
 2. see what every machine runs (placed units plus the global units it qualifies for);
 3. move one unit off each draining machine, when none of its units is still on the way, and
    say why those no other machine can take stay (plan_drain_moves);
 4. drop placements whose constraints no longer hold (e.g. a MachineOf peer moved away);
 5. place what is unplaced, MachineOf peers before their followers, evicting replaced units;
 6. turn placements and global units into per-machine assignments, diffed against etcd (a
    unit moving between live machines is assigned to the new one once the old one stopped it);
 7. record why each unplaceable unit is pending, and where a drain's units stand.
Units of a machine that is still present are never moved unless their own constraints force it
or the machine is draining.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping

from .membership import KEPT, withheld_reason
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

# The reasons (reason/<unit>) a drain gives the units of a draining machine: the one on its way
# to another machine (until its new machine reports it active), and each that no machine can
# take. The first is also how the next pass knows a move is still under way.
DRAIN_MOVE = "moving off draining machine"  # "<DRAIN_MOVE> <from> to <to>"
DRAIN_STAYS = "stays on draining machine"  # "<DRAIN_STAYS> <machine>: <why no other can>"


def plan_cluster(snapshot: ClusterSnapshot) -> list[EngineTask]:
    """Every task that brings etcd's placements and assignments in line with the jobs."""
    tasks: list[EngineTask] = []
    withheld = rescheduling_withheld(snapshot)
    placements, retained = drop_dead_placements(snapshot, tasks, withheld)
    views = machine_views(snapshot, placements)
    draining = plan_drain_moves(snapshot, placements, views, tasks)
    drop_infeasible_placements(snapshot, placements, views, tasks)
    pending = place_units(snapshot, placements, views, tasks, retained)
    waiting: dict[str, str] = {}
    tasks += diff_assignments(snapshot, placements, views, waiting, frozen=withheld is not None)
    kept = {unit: reason for unit, reason in retained.items() if unit in snapshot.jobs}
    kept.update(snapshot.unresolved)
    reasons = {**pending, **kept, **waiting}
    reasons.update({unit: why for unit, why in draining.items() if unit in placements})
    tasks += diff_reasons(snapshot, reasons)
    return tasks


def rescheduling_withheld(snapshot: ClusterSnapshot) -> str | None:
    """Why nothing may move off vanished machines now, or None when it may."""
    if snapshot.withheld is not None:
        return snapshot.withheld
    members = snapshot.members | snapshot.machines.keys()
    return withheld_reason(len(snapshot.machines), len(members))


def wants_placement(job: Job | None) -> bool:
    return job is not None and job.desired != DesiredState.INACTIVE


def drop_dead_placements(
    snapshot: ClusterSnapshot, tasks: list[EngineTask], withheld: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The placements that stay on live machines, and the reasons of those kept on vanished
    machines because rescheduling is withheld."""
    placements: dict[str, str] = {}
    retained: dict[str, str] = {}
    for unit, machine in sorted(snapshot.placements.items()):
        job = snapshot.jobs.get(unit)
        if unit in snapshot.unresolved:
            retained[unit] = snapshot.unresolved[unit]
            continue
        if machine not in snapshot.machines and withheld is not None:
            # Even a destroyed unit keeps its placement: a unit of the same name submitted
            # again must not start while the vanished machine may still run the old one.
            retained[unit] = f"{KEPT} {machine[:8]}: {withheld}"
            continue
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
    return placements, retained


def machine_views(
    snapshot: ClusterSnapshot, placements: Mapping[str, str]
) -> dict[str, MachineView]:
    drained = snapshot.drained
    views = {
        machine_id: MachineView(machine, draining=machine_id in drained)
        for machine_id, machine in snapshot.machines.items()
    }
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


def plan_drain_moves(
    snapshot: ClusterSnapshot,
    placements: dict[str, str],
    views: dict[str, MachineView],
    tasks: list[EngineTask],
) -> dict[str, str]:
    """Move at most one unit off each live draining machine, and only once the unit it moved
    before is active on its new machine: a drain never takes several services down at once.
    The move is an unschedule and a schedule; diff_assignments then starts the unit on its
    new machine only after the old one stopped it. A unit no other machine can take stays,
    with why. The reasons of units on their way and of units that stay, by unit."""
    draining = [machine for machine in sorted(snapshot.drained) if machine in views]
    if not draining:
        return {}
    reasons = units_on_their_way(snapshot, placements)
    index = LoadIndex(views)
    for machine in draining:
        busy = any(why.startswith(f"{DRAIN_MOVE} {machine[:8]} ") for why in reasons.values())
        for unit in drain_candidates(snapshot, placements, machine):
            job = snapshot.jobs[unit]
            target, why = choose_machine(job, views, index)
            if target is None:
                reasons[unit] = f"{DRAIN_STAYS} {machine[:8]}: {why}"
            elif not busy:
                move(job, machine, target, placements, views, index, tasks)
                reasons[unit] = f"{DRAIN_MOVE} {machine[:8]} to {target[:8]}"
                busy = True
    return reasons


def units_on_their_way(snapshot: ClusterSnapshot, placements: Mapping[str, str]) -> dict[str, str]:
    """Units a drain moved whose new machine has not reported them active yet (loaded units:
    not assigned there yet), with their reasons; the engine's own reasons remember the move."""
    found = {}
    for unit, why in snapshot.reasons.items():
        if why.startswith(DRAIN_MOVE) and unit in placements:
            target = placements[unit]
            job = snapshot.jobs[unit]
            if job.desired == DesiredState.LOADED:
                arrived = unit in snapshot.assignments.get(target, {})
            else:
                arrived = target in snapshot.landed.get(unit, ())
            if not arrived:
                found[unit] = why
    return found


def drain_candidates(
    snapshot: ClusterSnapshot, placements: Mapping[str, str], machine: str
) -> list[str]:
    """The units placed on a draining machine that a drain moves itself: a MachineOf follower
    of a unit placed there too is not one; it follows its peer (drop_infeasible_placements)."""
    here = sorted(unit for unit, placed in placements.items() if placed == machine)
    on_machine = set(here)
    return [
        unit
        for unit in here
        if not any(peer in on_machine for peer in snapshot.jobs[unit].requirements.machine_of)
    ]


def move(
    job: Job,
    source: str,
    target: str,
    placements: dict[str, str],
    views: dict[str, MachineView],
    index: LoadIndex,
    tasks: list[EngineTask],
) -> None:
    tasks.append(Unschedule(job.name, source, f"machine {source[:8]} is draining"))
    del views[source].units[job.name]
    index.add(source, -1)
    placements[job.name] = target
    views[target].units[job.name] = job.requirements
    index.add(target, 1)
    tasks.append(Schedule(job.name, target, "least loaded feasible machine"))
    evict_replaced(job, views[target], placements, index, tasks)  # placed again by place_units


def unmovable_units(snapshot: ClusterSnapshot, machine: str) -> dict[str, str]:
    """The units a drain of `machine` would leave there, because no other machine can take
    them now, with the scheduler's reason (`fleetctl drain` refuses these without --force).
    Each is judged alone, against the cluster as it is."""
    snapshot = dataclasses.replace(snapshot, drained=snapshot.drained | {machine})
    placements, _ = drop_dead_placements(snapshot, [], rescheduling_withheld(snapshot))
    views = machine_views(snapshot, placements)
    if machine not in views:
        return {}
    index = LoadIndex(views)
    found = {}
    for unit in drain_candidates(snapshot, placements, machine):
        target, why = choose_machine(snapshot.jobs[unit], views, index)
        if target is None:
            found[unit] = why
    return found


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


def placement_order(
    snapshot: ClusterSnapshot, placements: Mapping[str, str], retained: Mapping[str, str]
) -> list[str]:
    """Unplaced units wanting a machine, each after the MachineOf peers it follows."""
    waiting = {
        name
        for name, job in snapshot.jobs.items()
        if wants_placement(job)
        and not job.requirements.is_global
        and name not in placements
        and name not in retained
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
    retained: Mapping[str, str],
) -> dict[str, str]:
    """Place every unplaced unit it can; return the reasons of those it cannot."""
    index = LoadIndex(views)
    pending: dict[str, str] = {}
    queue = deque(placement_order(snapshot, placements, retained))
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
    if not job.requirements.replaces:
        return []  # most units replace nothing: no need to look at the machine's others
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
    snapshot: ClusterSnapshot,
    placements: Mapping[str, str],
    views: Mapping[str, MachineView],
    waiting: dict[str, str],
    frozen: bool = False,
) -> list[EngineTask]:
    """Assign and unassign; with `frozen`, a vanished machine's assignments stay as they are,
    so that it finds its units still assigned if it comes back. Units placed on a new machine
    but not yet stopped on their old one go into `waiting`, with the reason."""
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
    machines = set(wanted) if frozen else set(wanted) | set(snapshot.assignments)
    for machine in sorted(machines):
        have = snapshot.assignments.get(machine, {})
        want = wanted.get(machine, {})
        for unit in sorted(set(have) - set(want) - set(snapshot.unresolved)):
            unassign.append(Unassign(machine, unit, "no longer placed here"))
        for unit, assignment in sorted(want.items()):
            if unit in have or assignment.is_global:
                if have.get(unit) != assignment:
                    assign.append(
                        Assign(machine, unit, assignment, assignment_reason(have.get(unit)))
                    )
            elif (old := still_elsewhere(snapshot, unit, machine)) is not None:
                waiting[unit] = f"{WAITING} {old[:8]} before it starts on {machine[:8]}"
            else:
                assign.append(Assign(machine, unit, assignment, "newly placed here"))
    return unassign + assign


def still_elsewhere(snapshot: ClusterSnapshot, unit: str, target: str) -> str | None:
    """A live machine other than `target` that still has the unit assigned or running: a unit
    moving between two live machines starts on the new one only once it stopped on the old."""
    for machine, units in sorted(snapshot.assignments.items()):
        if machine != target and unit in units and machine in snapshot.machines:
            return machine
    for machine in sorted(snapshot.running.get(unit, ())):
        if machine != target and machine in snapshot.machines:
            return machine
    return None


def assignment_reason(previous: Assignment | None) -> str:
    return "newly placed here" if previous is None else "desired state or unit file changed"


WAITING = "waiting for it to stop on"  # how the reason of a unit between machines begins


def diff_reasons(snapshot: ClusterSnapshot, pending: Mapping[str, str]) -> list[EngineTask]:
    tasks: list[EngineTask] = []
    for unit in sorted(set(snapshot.reasons) - set(pending)):
        tasks.append(ClearPending(unit))
    for unit, reason in sorted(pending.items()):
        if snapshot.reasons.get(unit) != reason:
            tasks.append(MarkPending(unit, reason))
    return tasks
