"""Where a unit may run: named feasibility checks that each say why not, then one ranking.

Pure. The engine calls `choose_machine` for every unit it has to place; a machine is feasible
when every check passes, and the least loaded feasible machine wins (ties: lower machine id).
A draining machine is never a candidate (`check_not_draining`), but what already runs there
is judged by the other checks alone: a drain moves units off on its own terms (cluster_plan).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .model import Job, Machine
from .unitfile import Requirements, glob_match


@dataclass(frozen=True)
class Rejection:
    check: str  # the X-Fleet option that said no
    summary: str  # "no machine <summary>" when every machine says the same
    detail: str  # "<machine> <detail>" otherwise
    # "<machine> <note>" after the summary, where machines refusing alike differ in a way a
    # user needs to see (a numeric MachineMetadata: the key missing, not a number, too small).
    note: str = ""


class UnitsOnMachine(dict[str, Requirements]):
    """A machine's units by name, knowing which of them declare Conflicts= or Replaces=. Most
    units declare neither, and only those that do can refuse a plain newcomer: the checks look
    at those few instead of every unit on the machine (placing thousands of units on a few
    machines was quadratic, 31 s for 10,000 units on 3)."""

    def __init__(self, units: Mapping[str, Requirements] | None = None) -> None:
        super().__init__()
        self.conflicting: set[str] = set()
        self.replacing: set[str] = set()
        self.update(units or {})

    def __setitem__(self, name: str, requirements: Requirements) -> None:
        super().__setitem__(name, requirements)
        (self.conflicting.add if requirements.conflicts else self.conflicting.discard)(name)
        (self.replacing.add if requirements.replaces else self.replacing.discard)(name)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self.conflicting.discard(name)
        self.replacing.discard(name)

    def pop(self, name: str) -> Requirements:  # type: ignore[override]
        requirements = self[name]
        del self[name]
        return requirements

    def update(self, *others: object, **more: Requirements) -> None:  # type: ignore[override]
        for name, requirements in dict(*others, **more).items():  # type: ignore[call-overload]
            self[name] = requirements


@dataclass
class MachineView:
    """The units a machine runs or is about to run, as the plan sees them."""

    machine: Machine
    units: UnitsOnMachine = field(default_factory=UnitsOnMachine)
    draining: bool = False  # marked for draining: takes no new units, keeps its global ones

    def __post_init__(self) -> None:
        if not isinstance(self.units, UnitsOnMachine):
            self.units = UnitsOnMachine(self.units)


Check = Callable[[Job, MachineView], Rejection | None]


def check_machine_id(job: Job, view: MachineView) -> Rejection | None:
    wanted = job.requirements.machine_id
    if wanted is None or job.requirements.machine_id_matches(view.machine.id):
        return None
    return Rejection("MachineID", f"has MachineID {wanted}", f"is not MachineID {wanted}")


def check_metadata(job: Job, view: MachineView) -> Rejection | None:
    """The first MachineMetadata clause this machine fails, and what it has instead."""
    found = job.requirements.metadata_mismatch(view.machine.metadata)
    if found is None:
        return None
    clause, has = found
    return Rejection(
        "MachineMetadata",
        f"matches MachineMetadata {clause}",
        f"does not match MachineMetadata {clause} ({has})",
        has if clause.is_numeric else "",
    )


def check_machine_of(job: Job, view: MachineView) -> Rejection | None:
    for peer in job.requirements.machine_of:
        if peer not in view.units:
            return Rejection("MachineOf", f"runs MachineOf peer {peer}", f"does not run {peer}")
    return None


def check_conflicts(job: Job, view: MachineView) -> Rejection | None:
    # A newcomer without Conflicts= can clash only with a unit that declares some.
    units = view.units
    suspects = units if job.requirements.conflicts else units.conflicting
    clashing = [
        name
        for name in suspects
        if name != job.name and job.requirements.conflicts_with(name, units[name])
    ]
    if not clashing:
        return None
    first = min(clashing)  # the same unit named whatever the dict's order
    return Rejection("Conflicts", "is free of conflicting units", f"runs conflicting {first}")


def check_not_replaced(job: Job, view: MachineView) -> Rejection | None:
    """A unit never goes where another unit replaces it (that unit would push it out again)."""
    units = view.units
    replacing = [
        name
        for name in units.replacing
        if name != job.name and replaces(name, units[name], job.name, job.requirements)
    ]
    if not replacing:
        return None
    first = min(replacing)
    return Rejection(
        "Replaces", f"lacks a unit replacing {job.name}", f"runs {first}, which replaces {job.name}"
    )


CHECKS: tuple[Check, ...] = (
    check_machine_id,
    check_metadata,
    check_machine_of,
    check_conflicts,
    check_not_replaced,
)


DRAINING = Rejection("drain", "accepts units (every one is draining)", "is draining")


def check_not_draining(job: Job, view: MachineView) -> Rejection | None:
    """A draining machine takes no unit; global units are not placed, so this never asks."""
    return DRAINING if view.draining else None


def candidate_rejection(job: Job, view: MachineView) -> Rejection | None:
    """Why this machine may not take `job` now: draining, or a check of `rejection`."""
    return check_not_draining(job, view) or rejection(job, view)


def rejection(job: Job, view: MachineView) -> Rejection | None:
    """The first check that refuses this machine for this job, or None when it can run it."""
    for check in CHECKS:
        if (found := check(job, view)) is not None:
            return found
    return None


def replaces(name: str, requirements: Requirements, victim: str, victim_req: Requirements) -> bool:
    """`name` replaces `victim`; mutual replacement cancels out, as in fleet."""
    forward = any(glob_match(pattern, victim) for pattern in requirements.replaces)
    backward = any(glob_match(pattern, name) for pattern in victim_req.replaces)
    return forward and not backward


def explain(rejections: Mapping[str, Rejection], limit: int = 3) -> str:
    """One line saying why no machine can run a unit."""
    if not rejections:
        return "no machines are registered"
    summaries = {r.summary for r in rejections.values()}
    if len(summaries) == 1:
        notes = {machine: r.note for machine, r in rejections.items() if r.note}
        listed = f" ({listing(notes, limit)})" if notes else ""
        return f"no machine {summaries.pop()}{listed}"
    details = {machine: r.detail for machine, r in rejections.items()}
    return "no machine can run it: " + listing(details, limit)


def listing(about: Mapping[str, str], limit: int) -> str:
    """`<machine> <text>; ...` by machine id, at most `limit` of them, then how many more."""
    parts = [f"{machine[:8]} {text}" for machine, text in sorted(about.items())[:limit]]
    more = len(about) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class LoadIndex:
    """Machines in least-loaded order (ties by id), cheap to update as units are placed."""

    def __init__(self, views: Mapping[str, MachineView]) -> None:
        self.load = {machine: len(view.units) for machine, view in views.items()}
        self.heap = [(load, machine) for machine, load in self.load.items()]
        heapq.heapify(self.heap)

    def add(self, machine: str, delta: int) -> None:
        self.load[machine] += delta
        heapq.heappush(self.heap, (self.load[machine], machine))

    def first(self, accept: Callable[[str], bool], exclude: Iterable[str] = ()) -> str | None:
        """The least loaded machine that `accept`s; stale heap entries are dropped lazily."""
        skipped = set(exclude)
        passed: list[tuple[int, str]] = []
        seen: set[str] = set()
        chosen = None
        while self.heap:
            load, machine = heapq.heappop(self.heap)
            if self.load.get(machine) != load or machine in seen:
                continue  # a stale entry: the machine's load changed since it was pushed
            passed.append((load, machine))
            seen.add(machine)
            if machine not in skipped and accept(machine):
                chosen = machine
                break
        for entry in passed:
            heapq.heappush(self.heap, entry)
        return chosen


def choose_machine(
    job: Job, views: Mapping[str, MachineView], index: LoadIndex, exclude: Iterable[str] = ()
) -> tuple[str | None, str]:
    """The machine to place `job` on and why; or None and the reason no machine can."""
    chosen = index.first(lambda machine: candidate_rejection(job, views[machine]) is None, exclude)
    if chosen is not None:
        return chosen, "least loaded feasible machine"
    refused = {
        machine: r for machine, view in views.items() if (r := candidate_rejection(job, view))
    }
    for machine in exclude:
        refused.setdefault(machine, Rejection("Replaces", "is free", "is being replaced"))
    return None, explain(refused)
