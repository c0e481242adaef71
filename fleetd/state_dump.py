"""What SIGUSR1 writes to the journal: the agent's and the engine's state, as one JSON document.

Pure. fleet dumps its agent cache, publisher cache and subscriptions as JSON on SIGUSR1; fleetd
does the same for what an operator asks when a unit is not where it should be: on this machine,
what the cluster assigned, what the agent loaded and started and systemd's state of each, what
it refused and why, and the tasks of its last pass; of the engine, whether it leads, whether it
withholds moves, and its last plan with the reasons of the units it could not place.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .machine_plan import AgentTask
from .model import Assignment, ClearPending, EngineTask, MarkPending, UnitState


@dataclass(frozen=True)
class AgentView:
    """The agent's state as of now (see Agent.state_view)."""

    machine: str
    fenced: bool
    pass_running: bool
    assigned: Mapping[str, Assignment]  # as read by the last pass
    loaded: Mapping[str, str]  # unit -> hash of the file in units_directory
    started: Mapping[str, str]  # unit -> hash the agent started
    states: Mapping[str, UnitState]  # systemd's state of each loaded unit, as published
    refused: Mapping[str, str]  # unit -> why the agent will not load it
    last_tasks: Sequence[AgentTask]  # the last plan: running if pass_running, else done


@dataclass(frozen=True)
class EngineView:
    """The engine's state as of now (see Engine.state_view)."""

    leader_revision: int | None  # the leader key's revision while this machine leads
    withheld: str | None  # why units of vanished machines are not moved, if they are not
    last_pass_seconds_ago: float | None  # None: no pass has planned here yet
    last_tasks: Sequence[EngineTask]
    reasons: Mapping[str, str]  # unit -> why it was pending, as the last pass read them


def format_state(agent: AgentView, engine: EngineView | None) -> str:
    """One JSON document (keys sorted); `engine` None when disable_engine is set."""
    document = {
        "agent": describe_agent(agent),
        "engine": {"enabled": False} if engine is None else describe_engine(engine),
    }
    return json.dumps(document, sort_keys=True)


def describe_agent(agent: AgentView) -> dict[str, object]:
    return {
        "machine": agent.machine,
        "fenced": agent.fenced,
        "pass_running": agent.pass_running,
        "units": describe_units(agent),
        "last_tasks": [describe_task(task) for task in agent.last_tasks],
    }


def describe_units(agent: AgentView) -> dict[str, dict[str, object]]:
    """Every unit the agent knows of, whatever the reason, with what it knows of each."""
    names = set(agent.assigned) | set(agent.loaded) | set(agent.started) | set(agent.refused)
    units: dict[str, dict[str, object]] = {}
    for name in sorted(names | set(agent.states)):
        assignment = agent.assigned.get(name)
        state = agent.states.get(name)
        units[name] = {
            "desired": None if assignment is None else str(assignment.desired),
            "global": assignment is not None and assignment.is_global,
            "assigned_hash": None if assignment is None else assignment.hash,
            "loaded_hash": agent.loaded.get(name),
            "started": name in agent.started,
            "state": None if state is None else f"{state.load}/{state.active}/{state.sub}",
            "refused": agent.refused.get(name),
        }
    return units


def describe_engine(engine: EngineView) -> dict[str, object]:
    last_pass = None
    if engine.last_pass_seconds_ago is not None:
        last_pass = {
            "seconds_ago": round(engine.last_pass_seconds_ago, 3),
            "tasks": [describe_task(task) for task in engine.last_tasks],
            "pending": pending_after(engine.reasons, engine.last_tasks),
        }
    return {
        "enabled": True,
        "leader": engine.leader_revision is not None,
        "leader_revision": engine.leader_revision,
        "withheld": engine.withheld,
        "last_pass": last_pass,
    }


def pending_after(reasons: Mapping[str, str], tasks: Sequence[EngineTask]) -> dict[str, str]:
    """The units left pending (with why) once the pass's tasks were written: the reasons the
    pass read, updated by the reasons it marked and cleared."""
    pending = dict(reasons)
    for task in tasks:
        if isinstance(task, MarkPending):
            pending[task.unit] = task.reason
        elif isinstance(task, ClearPending):
            pending.pop(task.unit, None)
    return dict(sorted(pending.items()))


def describe_task(task: AgentTask | EngineTask) -> dict[str, object]:
    """A task as its kind and its fields, as the task log lines name them."""
    fields = {
        name: dataclasses.asdict(value) if isinstance(value, Assignment) else value
        for name, value in vars(task).items()
    }
    return {"task": type(task).__name__, **fields}
