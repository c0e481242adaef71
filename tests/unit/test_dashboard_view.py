"""What the dashboard shows: machine and unit rows, the leader and drain marks from the event
history, and failovers found in it (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from fleetd.fleetctl.dashboard_view import (
    find_failovers,
    in_time_order,
    snapshot,
)
from fleetd.model import DesiredState, Machine, UnitState, UnitStatus
from tests.test_tooling import io_imports

REPO = Path(__file__).resolve().parents[2]
M1, M2 = "a1" * 16, "b2" * 16
MACHINES = {M1: Machine(M1, "10.0.0.1", {"region": "eu"}), M2: Machine(M2, "10.0.0.2")}
RUNNING = UnitState("loaded", "active", "running")


def event(seconds: float, kind: str, **fields: str) -> dict[str, str]:
    minute, second = divmod(seconds, 60)
    return {
        "id": f"{kind}-{seconds}",
        "time": f"2026-11-30T10:{int(minute):02d}:{second:06.3f}Z",
        "kind": kind,
        **fields,
    }


FAILOVER = [
    event(21.2, "unit.started", unit="web.service", machine=M1),
    event(0, "unit.started", unit="web.service", machine=M2),
    event(20.5, "unit.moved", unit="web.service", to=M1, reason="machine gone", **{"from": M2}),
    event(20, "machine.expired", machine=M2, reason="lease expired"),
    event(21.3, "engine.leader", machine=M1),
]


def test_events_are_put_in_time_order() -> None:
    assert [e["kind"] for e in in_time_order(FAILOVER)] == [
        "unit.started",
        "machine.expired",
        "unit.moved",
        "unit.started",
        "engine.leader",
    ]


def test_a_failover_has_its_old_run_expiry_move_and_new_start() -> None:
    (failover,) = find_failovers(in_time_order(FAILOVER))
    assert (failover.unit, failover.old, failover.new) == ("web.service", M2, M1)
    assert failover.expired_at is not None and failover.started_at is not None
    assert failover.ran_from is not None
    assert failover.ran_from < failover.expired_at < failover.moved_at < failover.started_at
    assert failover.reason == "machine gone"


def test_snapshot_rows_marks_and_pictures() -> None:
    units = {
        "web.service": UnitStatus("web.service", "h1", DesiredState.LAUNCHED, M1, {M1: RUNNING}),
        "mars.service": UnitStatus(
            "mars.service", "h2", DesiredState.LAUNCHED, None, {}, "no machine in region=mars"
        ),
        "agent.service": UnitStatus(
            "agent.service", "h3", DesiredState.LAUNCHED, None, {M1: RUNNING, M2: RUNNING}
        ),
    }
    drained = [*FAILOVER, event(30, "machine.drained", machine=M2)]
    states = {M2: "drained"}
    state = snapshot(MACHINES, units, {"agent.service"}, drained, history=True, states=states)
    machines = {row["id"]: row for row in state["machines"]}  # type: ignore[attr-defined]
    assert machines[M1]["leader"] and not machines[M2]["leader"]
    assert (machines[M1]["state"], machines[M2]["state"]) == ("schedulable", "drained")
    assert (machines[M1]["units"], machines[M2]["units"]) == (2, 1)  # a global unit counts too
    assert machines[M1]["metadata"] == {"region": "eu"}
    rows = {row["name"]: row for row in state["units"]}  # type: ignore[attr-defined]
    assert rows["mars.service"]["reason"] == "no machine in region=mars"
    assert rows["mars.service"]["current"] == "inactive"
    assert rows["web.service"]["placed"] == f"{M1[:8]} 10.0.0.1"
    assert rows["agent.service"]["current"] == "global"
    assert state["events"][0]["kind"] == "machine.drained"  # type: ignore[index]
    (picture,) = state["failovers"]  # type: ignore[misc]
    root = ET.fromstring(picture["svg"])
    kinds = [e.get("data-kind") for e in root.iter() if e.get("class") == "mark"]
    assert kinds == ["lease", "schedule", "start"]


def test_the_drain_state_is_the_marks_not_the_events() -> None:
    """A machine drained before a reboot still is (the mark outlives it); its events say
    it left and joined again."""
    events = [event(1, "machine.drained", machine=M2), event(2, "machine.joined", machine=M2)]
    state = snapshot(MACHINES, {}, set(), events, history=True, states={M2: "draining"})
    rows = {row["id"]: row["state"] for row in state["machines"]}  # type: ignore[attr-defined]
    assert rows == {M1: "schedulable", M2: "draining"}


def test_the_view_is_pure() -> None:
    assert io_imports(REPO / "fleetd/fleetctl/dashboard_view.py", REPO) == []
