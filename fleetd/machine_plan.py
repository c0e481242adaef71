"""The agent's decision: from what is assigned to this machine and what systemd has, the tasks.

Pure. Tasks run in a fixed order (unload, load, one daemon-reload, stop, start) so files are in
place before systemd reloads and stops happen before starts; each task carries its reason.

A daemon-reload is planned only when systemd may hold a stale definition: a unit was unloaded
(or its file replaced), or a unit to load is one systemd already has loaded from some other
file. A brand-new unit needs none: systemd (since v245) loads a unit it has not found before
again once its unit directories changed, which linking the file does. A reload re-runs every
generator and re-reads every unit; under a slow CPU (a TCG VM) that is seconds of a failover.

A unit the agent refuses (a name it cannot manage, a missing unit file, a name the machine has
a unit of its own for) is never loaded or started; one it has already loaded is still stopped
and unloaded like any other, so nothing it once wrote is left behind.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .model import Assignment, DesiredState
from .unitfile import UnitFileError, parse_unit_file
from .unitname import UnitNameError, check_unit_name, parse_unit_name

# A unit in these states is running or on its way; starting it again would be a no-op at best.
RUNNING_STATES = frozenset({"active", "activating", "reloading", "deactivating"})
SPECIFIER = re.compile(r"%(.)")


@dataclass(frozen=True)
class LocalUnit:
    """A unit this machine's agent has loaded: the hash of its file and systemd's ActiveState."""

    hash: str
    active: str = "inactive"


@dataclass(frozen=True)
class UnloadUnit:
    unit: str
    reason: str


@dataclass(frozen=True)
class LoadUnit:
    unit: str
    hash: str
    reason: str


@dataclass(frozen=True)
class ReloadSystemd:
    reason: str = "unit files changed"


@dataclass(frozen=True)
class StopUnit:
    unit: str
    reason: str


@dataclass(frozen=True)
class StartUnit:
    unit: str
    hash: str
    reason: str


AgentTask = UnloadUnit | LoadUnit | ReloadSystemd | StopUnit | StartUnit
TASK_ORDER = {UnloadUnit: 0, LoadUnit: 1, ReloadSystemd: 2, StopUnit: 3, StartUnit: 4}


def plan_machine(
    desired: Mapping[str, Assignment],
    current: Mapping[str, LocalUnit],
    started: Mapping[str, str],
    known_to_systemd: Collection[str] = (),
    refused: Collection[str] = (),
    held: Collection[str] = (),
) -> list[AgentTask]:
    """Tasks that make this machine run what is assigned to it.

    `started` maps units to the hash this agent last started; a launched unit that has since
    failed or exited is not started again (restarts are systemd's `Restart=`), but one this
    agent never started (after a restart of fleetd, say) is. `known_to_systemd` names the units
    that are not ours yet but that systemd has loaded (from a file since removed): loading one of
    ours over it needs a reload. `refused` names units whose file must not be written: they get
    no LoadUnit and so no StartUnit, while their stops and unloads are planned as usual.
    `held` names units whose assignment exists but cannot be read: they get no task at all.
    """
    tasks: list[AgentTask] = []
    for unit in sorted((set(desired) | set(current)) - set(held)):
        planned = plan_unit(unit, desired.get(unit), current.get(unit), started.get(unit))
        if unit in refused:
            planned = [task for task in planned if not isinstance(task, LoadUnit | StartUnit)]
        tasks += planned
    if any(needs_reload(task, known_to_systemd) for task in tasks):
        tasks.append(ReloadSystemd())
    return sorted(tasks, key=lambda task: TASK_ORDER[type(task)])


def units_to_load(desired: Mapping[str, Assignment], current: Mapping[str, str]) -> dict[str, str]:
    """The units whose file `plan_machine` would write, with the hash of each: assigned and
    wanted, and not loaded here with that hash (`current`: unit -> hash of the loaded file)."""
    return {
        unit: want.hash
        for unit, want in desired.items()
        if want.desired != DesiredState.INACTIVE and current.get(unit) != want.hash
    }


def needs_reload(task: AgentTask, known_to_systemd: Collection[str]) -> bool:
    if isinstance(task, UnloadUnit):
        return True
    return isinstance(task, LoadUnit) and task.unit in known_to_systemd


def plan_unit(
    unit: str, want: Assignment | None, have: LocalUnit | None, started_hash: str | None
) -> list[AgentTask]:
    if want is None or want.desired == DesiredState.INACTIVE:
        if have is None:
            return []
        reason = "not assigned here" if want is None else "desired state is inactive"
        return [UnloadUnit(unit, reason)]
    tasks: list[AgentTask] = []
    fresh = have is None or have.hash != want.hash
    if have is not None and fresh:
        tasks.append(UnloadUnit(unit, "unit file changed"))
    if fresh:
        tasks.append(
            LoadUnit(unit, want.hash, "assigned here" if have is None else "new unit file")
        )
    running = not fresh and have is not None and have.active in RUNNING_STATES
    if want.desired == DesiredState.LAUNCHED:
        if fresh or (not running and started_hash != want.hash):
            tasks.append(StartUnit(unit, want.hash, "desired state is launched"))
    elif running:
        tasks.append(StopUnit(unit, "desired state is loaded"))
    return tasks


# -- refusals: why the agent will not write a unit's file --------------------------------------


def refusal(unit: str, body: str | None, unit_hash: str) -> str | None:
    """Why the agent must not write the file of `unit` (None: it may), from the name and the
    unit file alone: the agent could not manage the name, the file is missing from etcd, or
    [Install] would alias the unit under such a name."""
    try:
        parse_unit_name(unit)
    except UnitNameError as error:
        return str(error)
    if body is None:
        return f"its unit file {unit_hash} is missing from etcd"
    try:
        for alias in install_aliases(body, unit):
            check_unit_name(alias)
    except (UnitFileError, UnitNameError) as error:
        return f"[Install] Alias: {error}"
    return None


def install_aliases(body: str, unit: str) -> list[str]:
    """The names a unit's [Install] Alias= links it under when it is enabled, with the
    specifiers that come from the unit's name expanded as systemd expands them (any other
    specifier stays, and the '%' then fails the name check)."""
    unit_file = parse_unit_file(body, unit)
    aliases = [alias for value in unit_file.values("Install", "Alias") for alias in value.split()]
    try:
        name = parse_unit_name(unit)
    except UnitNameError:
        return aliases
    expansions = {
        "n": name.full,
        "N": name.without_suffix,
        "p": name.prefix,
        "i": name.instance or "",
        "j": name.prefix.rpartition("-")[2],
        "%": "%",
    }
    return [
        SPECIFIER.sub(lambda found: expansions.get(found[1], found[0]), alias) for alias in aliases
    ]


def machine_has(name: str, file_state: str) -> str:
    """The refusal of a unit whose name (or alias) the machine has a unit file of its own for,
    with what systemd's GetUnitFileState says of that file."""
    return (
        f"the machine has a unit file of its own for {name} ({file_state}),"
        " which a fleet unit would replace"
    )
