"""What `fleetctl dashboard` shows, computed from what the driver read (pure): the machines, the
units, the event timeline and one picture per failover, as the JSON the page renders.

Events are the cluster's event history as the API serves it: dicts with id, time (RFC 3339,
UTC), kind, unit, machine, from, to, reason. The leader mark comes from that history (the latest
engine.leader event): the driver's machine listing does not carry it. The drain state is the
listing's own (schedulable, draining, drained: from the drain mark in etcd, which outlives a
machine's reboot, where an event would not).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flotilla.timeline_svg import Mark, Span, render_timeline

from ..drain_state import SCHEDULABLE
from ..model import Machine, UnitStatus
from ..status import current_state

Event = Mapping[str, object]
TIMELINE_LENGTH = 200  # the newest events the page lists
FAILOVER_PICTURES = 6  # the newest failovers drawn
LEAD_IN_SECONDS = 10.0  # how much of the old run a failover picture shows before the move
TAIL_SECONDS = 5.0  # and how much after the new start


def event_time(event: Event) -> float | None:
    """Seconds since the epoch of an event's RFC 3339 time; None when it has none."""
    text = event.get("time")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def in_time_order(events: Iterable[Event]) -> list[Event]:
    timed = [(event_time(e), e) for e in events]
    return [e for t, e in sorted(((t, e) for t, e in timed if t is not None), key=lambda p: p[0])]


def where(event: Event) -> str:
    """The machine an event happened on: `machine`, else the `to` of a move."""
    return str(event.get("machine") or event.get("to") or "")


def leader_of(events: Sequence[Event]) -> str | None:
    """The machine of the latest engine.leader event (events in time order)."""
    for event in reversed(events):
        if event.get("kind") == "engine.leader":
            return where(event) or None
    return None


def machine_label(machine_id: str, machines: Mapping[str, Machine]) -> str:
    machine = machines.get(machine_id)
    short = machine_id[:8]
    return f"{short} {machine.ip}" if machine and machine.ip else short


def machine_rows(
    machines: Mapping[str, Machine],
    units: Mapping[str, UnitStatus],
    global_units: Collection[str],
    events: Sequence[Event],
    states: Mapping[str, str],
) -> list[dict[str, object]]:
    leader = leader_of(events)
    rows = []
    for machine_id, machine in sorted(machines.items()):
        count = sum(
            (name in global_units and machine_id in status.states)
            or (name not in global_units and status.machine == machine_id)
            for name, status in units.items()
        )
        rows.append(
            {
                "id": machine_id,
                "short": machine_id[:8],
                "ip": machine.ip,
                "metadata": dict(sorted(machine.metadata.items())),
                "units": count,
                "leader": machine_id == leader,
                "state": states.get(machine_id, SCHEDULABLE),
            }
        )
    return rows


def unit_rows(
    units: Mapping[str, UnitStatus], global_units: Collection[str], machines: Mapping[str, Machine]
) -> list[dict[str, object]]:
    rows = []
    for name, status in sorted(units.items()):
        is_global = name in global_units
        if is_global:
            active = sorted(m for m, s in status.states.items() if s.active == "active")
            placed = f"global ({len(active)} active)"
        else:
            placed = machine_label(status.machine, machines) if status.machine else ""
        state = status.states.get(status.machine or "")
        rows.append(
            {
                "name": name,
                "desired": status.desired.value,
                "current": "global" if is_global else current_state(status, False),
                "active": f"{state.active}/{state.sub}" if state else "",
                "machine": status.machine or "",
                "placed": placed,
                "reason": status.reason or "",
            }
        )
    return rows


@dataclass(frozen=True)
class Failover:
    """One unit moved off a machine that vanished: where it ran, when the old machine's lease
    expired, when the engine rescheduled it and when it started on the new machine."""

    unit: str
    old: str
    new: str
    moved_at: float
    reason: str
    ran_from: float | None = None  # the unit's last start on the old machine
    expired_at: float | None = None  # the old machine's lease expired (or it left)
    started_at: float | None = None  # the unit's first start on the new machine


def find_failovers(events: Sequence[Event]) -> list[Failover]:
    """Every unit.moved event with the expiry, the old start and the new start around it
    (events in time order)."""
    found = []
    for index, event in enumerate(events):
        if event.get("kind") != "unit.moved":
            continue
        unit, moved_at = event.get("unit"), event_time(event)
        old, new = str(event.get("from") or ""), str(event.get("to") or "")
        # Written in one engine pass, the expiry and the move may share their millisecond.
        before = [e for e in events[:index] if e is not event]
        before += [e for e in events[index + 1 :] if event_time(e) == moved_at]
        after = events[index + 1 :]
        ran_from = last_time(before, "unit.started", unit, old)
        expired_at = last_time(before, ("machine.expired", "machine.left"), None, old)
        if expired_at is not None and ran_from is not None and expired_at < ran_from:
            expired_at = None  # an older expiry of that machine, before this run
        started_at = next(
            (
                event_time(e)
                for e in after
                if e.get("kind") == "unit.started" and e.get("unit") == unit and where(e) == new
            ),
            None,
        )
        found.append(
            Failover(
                str(unit),
                old,
                new,
                moved_at or 0.0,
                str(event.get("reason") or ""),
                ran_from,
                expired_at,
                started_at,
            )
        )
    return found


def last_time(
    events: Sequence[Event], kinds: str | tuple[str, ...], unit: object, machine: str
) -> float | None:
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    for event in reversed(events):
        same_unit = unit is None or event.get("unit") == unit
        if event.get("kind") in kinds and where(event) == machine and same_unit:
            return event_time(event)
    return None


def failover_svg(failover: Failover, machines: Mapping[str, Machine]) -> str:
    """The unit's lane over time across the two machines, with the lease expiry, the
    reschedule and the start marked; time counts from the move."""
    moved = failover.moved_at
    known = [t for t in (failover.expired_at, failover.started_at) if t is not None]
    start = min([moved - LEAD_IN_SECONDS, *[t - 2 for t in known]])
    if failover.ran_from is not None:
        start = max(min(start, failover.ran_from), moved - 6 * LEAD_IN_SECONDS)
    end = max([moved, *known]) + TAIL_SECONDS
    old, new = machine_label(failover.old, machines), machine_label(failover.new, machines)
    lane = failover.unit
    old_end = failover.expired_at if failover.expired_at is not None else moved
    spans = [
        Span(lane, old, failover.ran_from if failover.ran_from is not None else start, old_end)
    ]
    marks = [Mark(moved, f"rescheduled to {failover.new[:8]}", "schedule")]
    if failover.expired_at is not None:
        marks.append(Mark(failover.expired_at, f"lease of {failover.old[:8]} expired", "lease"))
    if failover.started_at is not None:
        spans.append(Span(lane, new, failover.started_at, None))
        marks.append(Mark(failover.started_at, "started", "start"))
    title = f"{lane}: {failover.old[:8]} -> {failover.new[:8]}" + (
        f" ({failover.reason})" if failover.reason else ""
    )
    return render_timeline(spans, marks, title=title, start=start, end=end, width=720, origin=moved)


def snapshot(
    machines: Mapping[str, Machine],
    units: Mapping[str, UnitStatus],
    global_units: Collection[str],
    events: Iterable[Event],
    history: bool,
    states: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The page's data. `history`: whether the cluster serves an event history at all;
    `states`: each machine's drain state (a machine not in it is schedulable)."""
    ordered = in_time_order(events)
    failovers = find_failovers(ordered)[-FAILOVER_PICTURES:]
    return {
        "history": history,
        "leader": leader_of(ordered),
        "machines": machine_rows(machines, units, global_units, ordered, states or {}),
        "units": unit_rows(units, global_units, machines),
        "events": list(reversed(ordered[-TIMELINE_LENGTH:])),
        "failovers": [
            {"unit": f.unit, "from": f.old, "to": f.new, "svg": failover_svg(f, machines)}
            for f in reversed(failovers)
        ],
    }
