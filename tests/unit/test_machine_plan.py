"""The agent's pure planner: which unit to load, start, stop or unload, in which order, and why."""

from __future__ import annotations

import pytest

from fleetd.machine_plan import (
    LoadUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    install_aliases,
    plan_machine,
    refusal,
    units_to_load,
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


# -- refused units: never loaded or started, still stopped and unloaded ------------------------


def test_a_refused_unit_is_neither_loaded_nor_started_and_the_others_go_on() -> None:
    desired = {"bad.service": LAUNCHED, "good.service": LAUNCHED}
    tasks = plan_machine(desired, {}, {}, refused={"bad.service"})
    assert tasks == [
        LoadUnit("good.service", "h1", "assigned here"),
        StartUnit("good.service", "h1", "desired state is launched"),
    ]


def test_a_refused_unit_this_machine_already_runs_is_still_stopped_and_unloaded() -> None:
    # An older agent wrote it: it is stopped and unloaded like any other, never left behind.
    running = {".hidden.service": LocalUnit("h1", "active")}
    stopped = plan_machine({".hidden.service": LOADED}, running, {}, refused={".hidden.service"})
    assert stopped == [StopUnit(".hidden.service", "desired state is loaded")]
    gone = plan_machine({}, running, {}, refused={".hidden.service"})
    assert gone == [UnloadUnit(".hidden.service", "not assigned here"), ReloadSystemd()]
    # A new unit file for it unloads the old one and loads nothing.
    changed = {".hidden.service": Assignment("h2", DesiredState.LAUNCHED)}
    assert plan_machine(changed, running, {}, refused={".hidden.service"}) == [
        UnloadUnit(".hidden.service", "unit file changed"),
        ReloadSystemd(),
    ]


def test_units_to_load_are_the_assigned_files_not_here_yet() -> None:
    desired = {
        "new.service": LAUNCHED,
        "same.service": LAUNCHED,
        "changed.service": Assignment("h2", DesiredState.LOADED),
        "off.service": Assignment("h1", DesiredState.INACTIVE),
    }
    current = {"same.service": "h1", "changed.service": "h1", "gone.service": "h1"}
    assert units_to_load(desired, current) == {"new.service": "h1", "changed.service": "h2"}


SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


@pytest.mark.parametrize(
    ("unit", "body", "why"),
    [
        ("web.service", SLEEPER, None),
        ("web.service", SLEEPER + "[Install]\nAlias=www.service web2.service\n", None),
        (".hidden.service", SLEEPER, 'unit name cannot start in "."'),
        ("a" * 248 + ".service", SLEEPER, "unit name exceeds maximum length (255)"),
        ("x.snapshot", SLEEPER, 'invalid unit type: "snapshot"'),
        ("../x.service", SLEEPER, "invalid character '/' in unit name"),
        ("fleetd.service", SLEEPER, 'unit name "fleetd.service" is reserved'),
        ("web.service", None, "its unit file h1 is missing from etcd"),
        (
            "web.service",
            SLEEPER + "[Install]\nAlias=www.service sshd.service\n",
            '[Install] Alias: unit name "sshd.service" is reserved',
        ),
    ],
)
def test_refusal_says_why_a_units_file_must_not_be_written(
    unit: str, body: str | None, why: str | None
) -> None:
    found = refusal(unit, body, "h1")
    assert found == why if why is None else found is not None and found.startswith(why)


def test_alias_specifiers_from_the_name_are_expanded_before_the_check() -> None:
    # A unit named sshd@x.service with Alias=%p.service would be enabled as sshd.service.
    body = SLEEPER + "[Install]\nAlias=%p.service %p-%i.service %j.socket 100%%.service\n"
    assert install_aliases(body, "sshd@x.service") == [
        "sshd.service",
        "sshd-x.service",
        "sshd.socket",
        "100%.service",
    ]
    assert refusal("sshd@x.service", body, "h1") == (
        '[Install] Alias: unit name "sshd.service" is reserved: the machines ship a unit of that'
        " name (the SSH server), which a fleet unit would replace"
    )
    unknown = SLEEPER + "[Install]\nAlias=%H.service\n"  # the host name: not known here
    assert refusal("web.service", unknown, "h1") == (
        "[Install] Alias: invalid character '%' in unit name"
    )


def test_install_aliases_lists_every_alias() -> None:
    body = (
        SLEEPER
        + "[Install]\nWantedBy=multi-user.target\nAlias=a.service b.service\nAlias=c.service\n"
    )
    assert install_aliases(body, "web.service") == ["a.service", "b.service", "c.service"]
    assert install_aliases(SLEEPER, "web.service") == []


def test_a_unit_whose_assignment_cannot_be_read_is_left_as_it_is() -> None:
    current = {"web.service": LocalUnit("h1", "active")}
    assert plan_machine({}, current, {"web.service": "h1"}, held={"web.service"}) == []
    unassigned = plan_machine({}, current, {"web.service": "h1"})
    assert UnloadUnit("web.service", "not assigned here") in unassigned
