"""Which events a change produces: the engine's tasks, a machine set, a unit's systemd state.

Pure. The engine and the agent call these with what they already know after a pass or a
signal, and hand the drafts to the event recorder (events_store.py), which never blocks them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from .events import (
    FENCE,
    MACHINE_DRAINED,
    MACHINE_EXPIRED,
    MACHINE_JOINED,
    MACHINE_UNDRAINED,
    UNIT_FAILED,
    UNIT_MOVED,
    UNIT_PLACED,
    UNIT_STARTED,
    UNIT_STOPPED,
    Draft,
)
from .model import EngineTask, Schedule, Unschedule

# Unschedule reasons after which the unit is meant to be placed nowhere: a later placement of
# the same name is a new placement, not a move.
NOT_A_MOVE = ("unit destroyed", "desired state is inactive", "unit is global")


def task_drafts(
    tasks: Iterable[EngineTask], unplaced: Mapping[str, tuple[str, str]]
) -> tuple[list[Draft], dict[str, tuple[str, str]]]:
    """The events of the engine tasks just written, and the units taken off a machine that
    are still waiting for a new one: unit -> (old machine, why). `unplaced` is that from the
    earlier passes of this term, so a move whose new placement comes passes later (no machine
    fitted at first) is still told as a move, with its first reason."""
    waiting = dict(unplaced)
    drafts = []
    for task in tasks:
        match task:
            case Unschedule(unit, machine, reason):
                if reason in NOT_A_MOVE:
                    waiting.pop(unit, None)
                else:
                    waiting[unit] = (machine, reason)
            case Schedule(unit, machine, reason):
                before = waiting.pop(unit, None)
                if before is not None and before[0] != machine:
                    old, why = before
                    drafts.append(Draft(UNIT_MOVED, unit, machine, old, machine, why))
                else:
                    drafts.append(Draft(UNIT_PLACED, unit, machine, None, machine, reason))
    return drafts, waiting


@dataclass
class MachineWatch:
    """The engine's view of which machines are up, between its passes. A machine that
    vanishes while the cluster still counts it as a member (member/ outlives the lease) lost
    its lease; one that left gracefully deleted its own member record and wrote its own
    machine.left, so the engine writes nothing for it."""

    live: frozenset[str] | None = None  # None until the first pass of this leadership term

    def update(self, live: Set[str], members: Set[str]) -> list[Draft]:
        if self.live is None:
            # A new leader cannot tell when the machines it finds gone vanished; those still
            # counted as members vanished within the membership window, most likely the
            # machine that led before (its lease took the leadership with it).
            drafts = [
                expired(machine, "lease expired (seen by the new engine leader)")
                for machine in sorted(members - live)
            ]
            self.live = frozenset(live)
            return drafts
        drafts = [
            Draft(MACHINE_JOINED, None, machine, None, None, "registered")
            for machine in sorted(live - self.live)
        ]
        drafts += [
            expired(machine, "lease expired: not heard from within its TTL")
            for machine in sorted(self.live - live)
            if machine in members
        ]
        self.live = frozenset(live)
        return drafts


@dataclass
class DrainWatch:
    """The drain marks the engine saw at its last pass: a mark that appears is told as
    machine.drained, one that goes as machine.undrained. A new leader starts from the marks
    it finds (its predecessor told them)."""

    marked: frozenset[str] | None = None

    def update(self, marked: Set[str]) -> list[Draft]:
        before, self.marked = self.marked, frozenset(marked)
        if before is None:
            return []
        drafts = [
            Draft(MACHINE_DRAINED, None, machine, None, None, "marked for draining")
            for machine in sorted(marked - before)
        ]
        drafts += [
            Draft(MACHINE_UNDRAINED, None, machine, None, None, "drain mark removed")
            for machine in sorted(before - marked)
        ]
        return drafts


def expired(machine: str, reason: str) -> Draft:
    return Draft(MACHINE_EXPIRED, None, machine, None, None, reason)


def withheld_changed(before: str | None, after: str | None) -> bool:
    """Whether a new "rescheduling withheld" verdict is worth an event (its start or a new
    reason; its end shows as the units moving)."""
    return after is not None and after != before


def fence_draft(machine: str, fence: bool, reason: str, units: int = 0) -> Draft:
    text = f"fencing, stopping {units} units: {reason}" if fence else f"not fencing: {reason}"
    return Draft(FENCE, None, machine, None, None, text)


STOPPING_FROM = frozenset({"active", "activating", "deactivating", "reloading"})


@dataclass
class UnitTransitions:
    """systemd's states of this machine's units as last seen, to tell a unit starting,
    stopping or failing from a repeated signal. Units that were loaded before this fleetd
    started are only observed at first (their start happened before: a restart of fleetd
    must not tell it again); a unit loaded later starts out inactive."""

    machine: str
    preexisting: set[str] = field(default_factory=set)
    active: dict[str, str] = field(default_factory=dict)

    def seen(self, unit: str, active_state: str, sub_state: str) -> Draft | None:
        if unit in self.active:
            before: str | None = self.active[unit]
        elif unit in self.preexisting:
            before = None
            self.preexisting.discard(unit)
        else:
            before = "inactive"
        self.active[unit] = active_state
        if before is None or before == active_state:
            return None
        reason = f"systemd: {active_state} ({sub_state})"
        if active_state == "active":
            return Draft(UNIT_STARTED, unit, self.machine, None, None, reason)
        if active_state == "failed":
            return Draft(UNIT_FAILED, unit, self.machine, None, None, reason)
        if active_state == "inactive" and before in STOPPING_FROM:
            return Draft(UNIT_STOPPED, unit, self.machine, None, None, reason)
        return None

    def forget(self, unit: str) -> None:
        """The unit was unloaded here: if it comes back, it starts out inactive."""
        self.active.pop(unit, None)
        self.preexisting.discard(unit)


def refusal_drafts(
    machine: str, refused: Mapping[str, str], before: Mapping[str, str]
) -> list[Draft]:
    """A unit the agent newly refuses to load has failed here, with why."""
    return [
        Draft(UNIT_FAILED, unit, machine, None, None, f"refused: {why}")
        for unit, why in sorted(refused.items())
        if before.get(unit) != why
    ]
