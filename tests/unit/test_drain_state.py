"""A machine's drain state as fleetctl and the API show it, list-machines' STATE column, and
how `fleetctl drain` names a machine."""

from __future__ import annotations

import pytest

from fleetd.cluster_plan import DRAIN_MOVE, DRAIN_STAYS
from fleetd.drain_state import DRAINED, DRAINING, SCHEDULABLE, drain_states, refusal_message
from fleetd.fleetctl.draining import resolve_machine
from fleetd.fleetctl.session import Failure
from fleetd.fleetctl.tables import table
from fleetd.fleetctl.views import machine_documents, machine_fields, machine_records
from fleetd.model import Machine

A, B = "a" * 32, "b" * 32
MACHINES = {A: Machine(A, "10.0.0.1"), B: Machine(B, "10.0.0.2", {"role": "db"})}


def test_unmarked_machines_are_schedulable_whatever_runs_there() -> None:
    assert drain_states([A, B], [], {"x.service": A}, {}, {}, {}) == {
        A: SCHEDULABLE,
        B: SCHEDULABLE,
    }


def test_a_marked_machine_drains_until_nothing_it_moves_is_left() -> None:
    placed = {"x.service": A}
    assert drain_states([A, B], [A], placed, {}, {}, {})[A] == DRAINING
    moving = {"x.service": B}
    why = {"x.service": f"{DRAIN_MOVE} {A[:8]} to {B[:8]}"}
    assert drain_states([A, B], [A], moving, {"x.service": [A]}, {}, {})[A] == DRAINING  # stopping
    assert drain_states([A, B], [A], moving, {}, why, {})[A] == DRAINING  # not active on B yet
    on_b = {"x.service": [B]}
    assert drain_states([A, B], [A], moving, on_b, why, on_b)[A] == DRAINED  # before the pass
    assert drain_states([A, B], [A], {}, {"agent.service": [A]}, {}, {})[A] == DRAINED  # global


def test_units_that_stay_do_not_keep_a_machine_draining() -> None:
    stays = {"pinned.service": f"{DRAIN_STAYS} {A[:8]}: no machine can run it: ..."}
    on_a = {"pinned.service": [A]}
    assert drain_states([A], [A], {"pinned.service": A}, on_a, stays, on_a) == {A: DRAINED}


def test_the_refusal_names_each_unit_and_why() -> None:
    message = refusal_message(A, {"db.service": "no machine has MachineID x"})
    assert f"refusing to drain machine {A}" in message
    assert "unit db.service can run on no other machine (no machine has MachineID x)" in message


def test_an_ordinary_cluster_lists_as_fleet_does() -> None:
    states = {A: SCHEDULABLE, B: SCHEDULABLE}
    chosen = machine_fields(["machine", "ip", "metadata"], False, states)
    assert table(machine_records(MACHINES, False, states), chosen, True) == (
        "MACHINE\t\tIP\t\tMETADATA\naaaaaaaa...\t10.0.0.1\t-\nbbbbbbbb...\t10.0.0.2\trole=db\n"
    )


def test_a_state_column_appears_once_a_machine_drains() -> None:
    states = {A: DRAINING, B: SCHEDULABLE}
    chosen = machine_fields(["machine", "ip", "metadata"], False, states)
    assert chosen == ["machine", "ip", "metadata", "state"]
    rows = table(machine_records(MACHINES, False, states), chosen, True).splitlines()
    assert rows[0].split() == ["MACHINE", "IP", "METADATA", "STATE"]
    assert rows[1].split()[-1] == "draining" and rows[2].split()[-1] == "schedulable"
    assert machine_fields(["machine"], True, states) == ["machine"]  # --fields given: as given
    documents = machine_documents(MACHINES, states)["machines"]
    assert [d["state"] for d in documents] == ["draining", "schedulable"]


def test_a_machine_is_named_by_its_id_or_a_unique_prefix() -> None:
    machines = [A, B, "ab" + "0" * 30]
    assert resolve_machine(machines, A) == A
    assert resolve_machine(machines, "b") == B
    assert resolve_machine(machines, "c") is None
    assert resolve_machine(machines, "") is None
    with pytest.raises(Failure, match="ambiguous"):
        resolve_machine(machines, "a")
