"""The cluster's nouns: jobs, machines, placements, assignments, unit states, and engine tasks.

Plain records only: the registry, the client, the API and fleetctl's views all speak in these,
so that none of the pure modules needs to import the module that talks to etcd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .unitfile import Requirements


class DesiredState(StrEnum):
    INACTIVE = "inactive"  # known to the cluster, placed nowhere
    LOADED = "loaded"  # placed, its file linked into systemd, not started
    LAUNCHED = "launched"  # placed and started


@dataclass(frozen=True)
class Job:
    """A unit the cluster knows: its name, which body it runs, and what a user wants of it."""

    name: str
    hash: str
    desired: DesiredState
    requirements: Requirements


@dataclass(frozen=True)
class JobRecord:
    """A job as etcd holds it (`job/<unit>`): its body's hash and what a user wants of it."""

    name: str
    hash: str
    desired: DesiredState


@dataclass(frozen=True)
class Machine:
    id: str
    ip: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:8]


@dataclass(frozen=True)
class Assignment:
    """What the engine told one machine to do with one unit."""

    hash: str
    desired: DesiredState
    is_global: bool = False  # global units keep running when their machine is cut off


@dataclass(frozen=True)
class UnitState:
    """systemd's view of a unit on one machine, as its agent published it."""

    load: str
    active: str
    sub: str
    hash: str = ""


@dataclass(frozen=True)
class UnitStatus:
    """One unit as fleetctl and the API show it: where it is placed, what each machine's systemd
    reports, and why it is not placed (when it is not)."""

    name: str
    hash: str
    desired: DesiredState
    machine: str | None  # where a non-global unit is placed
    states: Mapping[str, UnitState] = field(default_factory=dict)  # machine id -> systemd state
    reason: str | None = None  # why it is not placed

    def active_on(self) -> list[str]:
        return sorted(m for m, s in self.states.items() if s.active == "active")


@dataclass(frozen=True)
class DrainOutcome:
    """What a drain request did: whether the mark is new (False: the machine was marked
    already), and the units that stay on the machine (forced), each with why."""

    new: bool
    stays: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything the engine decides from, read at one etcd revision."""

    jobs: Mapping[str, Job]
    machines: Mapping[str, Machine]
    placements: Mapping[str, str]  # non-global unit -> machine id
    assignments: Mapping[str, Mapping[str, Assignment]]  # machine id -> unit -> assignment
    reasons: Mapping[str, str] = field(default_factory=dict)  # unit -> why it is pending
    # The recently known machines (membership.py), live ones included; empty means "just the
    # live ones", as in a snapshot built by hand.
    members: frozenset[str] = frozenset()
    # Set by the engine when it withholds rescheduling for a reason the counts alone do not
    # show (membership.Membership.withholding); None: decide from the counts.
    withheld: str | None = None
    # Units etcd has a job for that cannot be planned (body missing or unparsable, record
    # malformed) -> why: left exactly where they are, never taken for destroyed.
    unresolved: Mapping[str, str] = field(default_factory=dict)
    # unit -> machines whose agent reports it active, activating, deactivating or reloading
    running: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Machines marked for draining (drain/<machine>): never a candidate for a unit; their
    # non-global units move elsewhere one at a time (cluster_plan.plan_drain_moves).
    drained: frozenset[str] = frozenset()
    # unit -> machines whose agent reports it active or failed: where a move off a draining
    # machine is over (the unit started there, or tried to).
    landed: Mapping[str, frozenset[str]] = field(default_factory=dict)


# -- engine tasks: each carries the reason it exists, for the log and for `fleetctl` ----------


@dataclass(frozen=True)
class Schedule:
    unit: str
    machine: str
    reason: str


@dataclass(frozen=True)
class Unschedule:
    unit: str
    machine: str
    reason: str


@dataclass(frozen=True)
class Assign:
    machine: str
    unit: str
    assignment: Assignment
    reason: str


@dataclass(frozen=True)
class Unassign:
    machine: str
    unit: str
    reason: str


@dataclass(frozen=True)
class MarkPending:
    unit: str
    reason: str


@dataclass(frozen=True)
class ClearPending:
    unit: str
    reason: str = "placed"


@dataclass(frozen=True)
class Remember:
    """Record a machine in the recent membership."""

    machine: str
    ip: str


@dataclass(frozen=True)
class Forget:
    machine: str
    reason: str


EngineTask = (
    Schedule | Unschedule | Assign | Unassign | MarkPending | ClearPending | Remember | Forget
)
