"""A unit's cluster-level state as fleet reports it: global or not, inactive/loaded/launched."""

from __future__ import annotations

from .machine_plan import RUNNING_STATES
from .model import UnitStatus
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
    return "launched" if status.states[status.machine].active in RUNNING_STATES else "loaded"
