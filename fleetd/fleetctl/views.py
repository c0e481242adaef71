"""What fleetctl's listings show, computed from the registry's data (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from ..drain_state import SCHEDULABLE
from ..model import Machine, UnitStatus
from ..status import current_state, is_global
from ..unitfile import UnitFile
from .tables import machine_legend

UNIT_FIELDS = ("unit", "load", "active", "sub", "machine", "hash")
UNIT_FILE_FIELDS = ("unit", "hash", "dstate", "state", "target", "tmachine", "global", "desc")
MACHINE_FIELDS = ("machine", "ip", "metadata", "state")


def legend_of(machine_id: str, machines: Mapping[str, Machine], full: bool) -> str:
    machine = machines.get(machine_id)
    return machine_legend(machine_id, machine.ip if machine else "", full)


def unit_file_records(
    units: Mapping[str, UnitStatus],
    files: Mapping[str, UnitFile],
    machines: Mapping[str, Machine],
    full: bool,
) -> list[dict[str, str]]:
    records = []
    for name, status in sorted(units.items()):
        unit = files[name]
        global_unit = is_global(unit)
        if global_unit:
            target = "global"
        elif status.machine:
            target = legend_of(status.machine, machines, full)
        else:
            target = ""
        descriptions = unit.values("Unit", "Description")
        records.append(
            {
                "unit": name,
                "hash": status.hash if full else status.hash[:7],
                "dstate": status.desired.value,
                "state": current_state(status, global_unit),
                "target": target,
                "tmachine": target,
                "global": "true" if global_unit else "false",
                "desc": descriptions[-1] if descriptions else "",
            }
        )
    return records


def unit_records(
    units: Mapping[str, UnitStatus], machines: Mapping[str, Machine], full: bool
) -> list[dict[str, str]]:
    """One row per unit state a machine published, by unit then machine id (as fleet)."""
    records = []
    for name, status in sorted(units.items()):
        for machine_id, state in sorted(status.states.items()):
            records.append(
                {
                    "unit": name,
                    "load": state.load,
                    "active": state.active,
                    "sub": state.sub,
                    "machine": legend_of(machine_id, machines, full),
                    "hash": state.hash if full else state.hash[:7],
                }
            )
    return records


def machine_records(
    machines: Mapping[str, Machine], full: bool, states: Mapping[str, str]
) -> list[dict[str, str]]:
    return [
        {
            "machine": machine_id if full else f"{machine_id[:8]}...",
            "ip": machine.ip,
            "metadata": ",".join(f"{k}={v}" for k, v in sorted(machine.metadata.items())),
            "state": states.get(machine_id, SCHEDULABLE),
        }
        for machine_id, machine in sorted(machines.items())
    ]


def machine_fields(chosen: list[str], given: bool, states: Mapping[str, str]) -> list[str]:
    """list-machines' columns: as chosen, plus STATE by default once a machine is draining
    or drained (an ordinary cluster's listing stays fleet's, byte for byte)."""
    if given or "state" in chosen or all(s == SCHEDULABLE for s in states.values()):
        return chosen
    return [*chosen, "state"]


# -- `--output json`: the same listings for scripts -----------------------------------------------
# One JSON document per listing, with full ids and hashes and typed values (null for nothing,
# booleans, metadata as an object). The keys are kept: new ones may be added, none renamed or
# removed (README, "JSON output").


def unit_documents(
    units: Mapping[str, UnitStatus], machines: Mapping[str, Machine]
) -> dict[str, list[dict[str, object]]]:
    """list-units: one object per unit state a machine published, in the table's order."""
    return {
        "units": [
            {
                "unit": name,
                "machine": machine_id,
                "ip": machines[machine_id].ip or None if machine_id in machines else None,
                "load": state.load,
                "active": state.active,
                "sub": state.sub,
                "hash": state.hash,
            }
            for name, status in sorted(units.items())
            for machine_id, state in sorted(status.states.items())
        ]
    }


def unit_file_documents(
    units: Mapping[str, UnitStatus],
    files: Mapping[str, UnitFile],
    machines: Mapping[str, Machine],
) -> dict[str, list[dict[str, object]]]:
    """list-unit-files: one object per unit; a global unit has no one machine nor state."""
    documents = []
    for name, status in sorted(units.items()):
        global_unit = is_global(files[name])
        machine_id = None if global_unit else status.machine
        descriptions = files[name].values("Unit", "Description")
        documents.append(
            {
                "unit": name,
                "hash": status.hash,
                "desired": status.desired.value,
                "state": current_state(status, global_unit) or None,
                "global": global_unit,
                "machine": machine_id,
                "ip": machines[machine_id].ip or None if machine_id in machines else None,
                "description": descriptions[-1] if descriptions else None,
                "reason": status.reason,
            }
        )
    return {"unit_files": documents}


def machine_documents(
    machines: Mapping[str, Machine], states: Mapping[str, str]
) -> dict[str, list[dict[str, object]]]:
    """list-machines: one object per machine, its metadata as an object, its drain state."""
    return {
        "machines": [
            {
                "machine": machine_id,
                "ip": machine.ip or None,
                "metadata": dict(machine.metadata),
                "state": states.get(machine_id, SCHEDULABLE),
            }
            for machine_id, machine in sorted(machines.items())
        ]
    }
