"""A machine's drain state, derived (never stored) from its mark and what is still on it (pure).

schedulable   no drain mark (drain/<machine>)
draining      marked, and a unit the drain moves is still on it: placed there (and not
              one that stays: no other machine can take it), or on its way to another
              machine (the engine's reason says so, until the new machine reports it
              active), or placed elsewhere but still running there
drained       marked, and nothing the drain moves is left on it (global units, and units
              no other machine can take, stay)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .cluster_plan import DRAIN_MOVE, DRAIN_STAYS

SCHEDULABLE = "schedulable"
DRAINING = "draining"
DRAINED = "drained"


def drain_states(
    machines: Iterable[str],
    drained: Iterable[str],
    placements: Mapping[str, str],
    running: Mapping[str, Iterable[str]],
    reasons: Mapping[str, str],
    landed: Mapping[str, Iterable[str]],
) -> dict[str, str]:
    """Each machine's drain state (`landed`: unit -> machines that report it active or
    failed, where a move is over even before the engine's next pass clears its reason)."""
    marked = set(drained)
    busy: set[str] = set()
    for unit, machine in placements.items():
        why = reasons.get(unit, "")
        if machine in marked and not why.startswith(DRAIN_STAYS):
            busy.add(machine)
        for elsewhere in running.get(unit, ()):
            if elsewhere != machine:
                busy.add(elsewhere)  # left it, not stopped there yet
        if why.startswith(DRAIN_MOVE) and machine not in landed.get(unit, ()):
            busy.update(m for m in marked if why.startswith(f"{DRAIN_MOVE} {m[:8]} "))
    return {
        machine: SCHEDULABLE if machine not in marked else DRAINING if machine in busy else DRAINED
        for machine in machines
    }


def refusal_message(machine: str, stays: Mapping[str, str]) -> str:
    """Why a drain of `machine` is refused: each unit no other machine can take, and why."""
    units = "; ".join(
        f"unit {unit} can run on no other machine ({why})" for unit, why in sorted(stays.items())
    )
    return (
        f"refusing to drain machine {machine}: {units}. "
        "Forced, the drain leaves such units where they are."
    )
