"""The agent's pure planner: which unit to load, start, stop or unload, in which order, and why."""

from __future__ import annotations

from fleetd.machine_plan import (
    LoadUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    plan_machine,
)
from fleetd.model import Assignment, DesiredState

LAUNCHED = Assignment("h1", DesiredState.LAUNCHED)
LOADED = Assignment("h1", DesiredState.LOADED)


def test_newly_assigned_launched_unit_is_loaded_then_started_without_a_reload() -> None:
    # systemd loads a unit it never had once its file is linked: no daemon-reload needed.
    tasks = plan_machine({"a.service": LAUNCHED}, {}, {})
    assert tasks == [
        LoadUnit("a.service", "h1", "assigned here"),
        StartUnit("a.service", "h1", "desired state is launched"),
    ]


def test_a_unit_systemd_already_has_from_another_file_is_loaded_reloaded_then_started() -> None:
    tasks = plan_machine({"a.service": LAUNCHED}, {}, {}, known_to_systemd={"a.service"})
    assert tasks == [
        LoadUnit("a.service", "h1", "assigned here"),
        ReloadSystemd(),
        StartUnit("a.service", "h1", "desired state is launched"),
    ]


def test_running_unit_that_is_assigned_needs_nothing() -> None:
    # This is what a restarted fleetd sees: no task, so no running unit is restarted.
    assert plan_machine({"a.service": LAUNCHED}, {"a.service": LocalUnit("h1", "active")}, {}) == []


def test_unit_no_longer_assigned_is_unloaded() -> None:
    tasks = plan_machine({}, {"a.service": LocalUnit("h1", "active")}, {"a.service": "h1"})
    assert tasks == [UnloadUnit("a.service", "not assigned here"), ReloadSystemd()]


def test_desired_inactive_unloads() -> None:
    inactive = Assignment("h1", DesiredState.INACTIVE)
    tasks = plan_machine({"a.service": inactive}, {"a.service": LocalUnit("h1", "active")}, {})
    assert tasks[0] == UnloadUnit("a.service", "desired state is inactive")


def test_changed_unit_file_is_replaced_and_restarted() -> None:
    current = {"a.service": LocalUnit("h0", "active")}
    tasks = plan_machine({"a.service": LAUNCHED}, current, {"a.service": "h0"})
    assert [type(t) for t in tasks] == [UnloadUnit, LoadUnit, ReloadSystemd, StartUnit]


def test_launched_to_loaded_stops_without_reload() -> None:
    tasks = plan_machine({"a.service": LOADED}, {"a.service": LocalUnit("h1", "active")}, {})
    assert tasks == [StopUnit("a.service", "desired state is loaded")]


def test_failed_unit_this_agent_started_is_left_to_systemd() -> None:
    current = {"a.service": LocalUnit("h1", "failed")}
    assert plan_machine({"a.service": LAUNCHED}, current, {"a.service": "h1"}) == []
    # ...but one it never started (fleetd restarted meanwhile) is started once.
    assert plan_machine({"a.service": LAUNCHED}, current, {}) == [
        StartUnit("a.service", "h1", "desired state is launched")
    ]


def test_order_is_unload_load_reload_stop_start() -> None:
    desired = {"new.service": LAUNCHED, "stop.service": LOADED}
    current = {"gone.service": LocalUnit("h9", "active"), "stop.service": LocalUnit("h1", "active")}
    kinds = [type(t) for t in plan_machine(desired, current, {})]
    assert kinds == [UnloadUnit, LoadUnit, ReloadSystemd, StopUnit, StartUnit]
