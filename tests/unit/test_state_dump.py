"""What SIGUSR1 logs: the agent's and the engine's state as one JSON document (state_dump.py)."""

from __future__ import annotations

import json

from fleetd.machine_plan import LoadUnit, ReloadSystemd, StartUnit
from fleetd.model import (
    Assign,
    Assignment,
    ClearPending,
    DesiredState,
    MarkPending,
    Schedule,
    UnitState,
)
from fleetd.state_dump import AgentView, EngineView, format_state, pending_after

AGENT = AgentView(
    machine="m1id",
    fenced=False,
    pass_running=True,
    assigned={
        "web.service": Assignment("h1", DesiredState.LAUNCHED),
        "log.service": Assignment("h2", DesiredState.LAUNCHED, is_global=True),
        "bad.service": Assignment("h3", DesiredState.LOADED),
    },
    loaded={"web.service": "h1", "old.service": "h0"},
    started={"web.service": "h1"},
    states={
        "web.service": UnitState("loaded", "active", "running", "h1"),
        "old.service": UnitState("loaded", "inactive", "dead", "h0"),
    },
    refused={"bad.service": "the machine has a unit file of its own named bad.service"},
    last_tasks=(
        LoadUnit("log.service", "h2", "assigned here"),
        ReloadSystemd(),
        StartUnit("log.service", "h2", "desired state is launched"),
    ),
)


def dump(agent: AgentView = AGENT, engine: EngineView | None = None) -> dict:
    return json.loads(format_state(agent, engine))


def test_the_agent_part_has_every_unit_it_knows_of_with_what_it_knows() -> None:
    agent = dump()["agent"]
    assert agent["machine"] == "m1id" and agent["pass_running"] is True
    assert agent["fenced"] is False
    units = agent["units"]
    assert sorted(units) == ["bad.service", "log.service", "old.service", "web.service"]
    assert units["web.service"] == {
        "desired": "launched",
        "global": False,
        "assigned_hash": "h1",
        "loaded_hash": "h1",
        "started": True,
        "state": "loaded/active/running",
        "refused": None,
    }
    assert units["log.service"]["global"] is True and units["log.service"]["state"] is None
    assert units["old.service"]["desired"] is None  # loaded, no longer assigned: to unload
    assert units["bad.service"]["refused"].startswith("the machine has a unit file")


def test_the_agent_part_has_its_pending_tasks_in_order() -> None:
    assert dump()["agent"]["last_tasks"] == [
        {"task": "LoadUnit", "unit": "log.service", "hash": "h2", "reason": "assigned here"},
        {"task": "ReloadSystemd", "reason": "unit files changed"},
        {
            "task": "StartUnit",
            "unit": "log.service",
            "hash": "h2",
            "reason": "desired state is launched",
        },
    ]


def test_a_disabled_engine_says_so() -> None:
    assert dump()["engine"] == {"enabled": False}


def test_an_engine_that_never_planned_says_whether_it_leads() -> None:
    engine = EngineView(None, None, None, (), {})
    assert dump(engine=engine)["engine"] == {
        "enabled": True,
        "leader": False,
        "leader_revision": None,
        "withheld": None,
        "last_pass": None,
    }


def test_the_leading_engine_shows_its_last_plan_and_what_stays_pending() -> None:
    engine = EngineView(
        leader_revision=42,
        withheld="2 of 3 machines vanished together",
        last_pass_seconds_ago=1.23456,
        last_tasks=(
            Schedule("web.service", "m1id", "least loaded"),
            Assign("m1id", "web.service", Assignment("h1", DesiredState.LAUNCHED), "scheduled"),
            ClearPending("web.service"),
            MarkPending("db.service", "no machine has metadata disk=ssd"),
        ),
        reasons={"web.service": "no machine yet", "cache.service": "conflicts with db.service"},
    )
    described = dump(engine=engine)["engine"]
    assert described["leader"] is True and described["leader_revision"] == 42
    assert described["withheld"] == "2 of 3 machines vanished together"
    last_pass = described["last_pass"]
    assert last_pass["seconds_ago"] == 1.235
    assert last_pass["tasks"][1] == {
        "task": "Assign",
        "machine": "m1id",
        "unit": "web.service",
        "assignment": {"hash": "h1", "desired": "launched", "is_global": False},
        "reason": "scheduled",
    }
    assert last_pass["pending"] == {
        "cache.service": "conflicts with db.service",
        "db.service": "no machine has metadata disk=ssd",
    }


def test_pending_after_applies_marks_and_clears_in_order() -> None:
    tasks = [MarkPending("a", "first"), ClearPending("a"), MarkPending("b", "why")]
    assert pending_after({"a": "old", "c": "kept"}, tasks) == {"b": "why", "c": "kept"}


def test_the_dump_is_one_line() -> None:
    assert "\n" not in format_state(AGENT, EngineView(1, None, 0.0, (), {"x": "a\nb"}))
