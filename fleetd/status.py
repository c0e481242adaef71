"""A unit's cluster-level state as fleet reports it: global or not, inactive/loaded/launched."""

from __future__ import annotations

from .machine_plan import RUNNING_STATES
from .model import DesiredState, UnitStatus
from .unitfile import UnitFile


def is_global(unit: UnitFile) -> bool:
    values = unit.values("X-Fleet", "Global")
    return bool(values) and values[-1].strip().lower() in ("true", "yes", "1", "on", "t")


def current_state(status: UnitStatus, global_unit: bool) -> str:
    """fleet's current state: where the unit is in inactive -> loaded -> launched."""
    if global_unit:
        return ""
    if status.machine is None or status.machine not in status.states:
        return "inactive"
    # From what systemd reports, not from the desired state: `stop` waits until it really stopped.
    active = status.states[status.machine].active
    if active in RUNNING_STATES:
        return "launched"
    # A unit its agent started that then failed stays launched, as fleet's job-state heartbeat
    # kept it (the agent does not start it again; systemd's Restart= may): list-units says
    # `failed` in ACTIVE, list-unit-files `launched` in STATE.
    if active == "failed" and status.desired == DesiredState.LAUNCHED:
        return "launched"
    return "loaded"
