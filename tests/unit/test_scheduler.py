"""The scheduler with MachineMetadata operators: where units go, and why not when they cannot."""

from __future__ import annotations

import dataclasses

from fleetd.cluster_plan import plan_cluster
from fleetd.model import Unschedule
from fleetd.scheduler import (
    MachineView,
    Rejection,
    check_conflicts,
    check_metadata,
    check_not_replaced,
    explain,
)

from .planning import job, machine, settle, snapshot

SMALL = machine("aa", region="east", disk="50")
BIG_EAST = machine("bb", region="east", disk="200")
BIG_WEST = machine("cc", region="west", disk="500")
UNLABELLED = machine("dd")
SSD = machine("ee", disk="ssd")


def test_numeric_and_not_equal_operators_place_units() -> None:
    state = settle(
        snapshot(
            [
                job("big.service", "MachineMetadata=disk>=100"),
                job("not-east.service", "MachineMetadata=region!=east"),
                job("big-not-east.service", 'MachineMetadata="disk>=100" "region!=east"'),
                job("small.service", "MachineMetadata=disk<100"),
                job("range.service", "MachineMetadata=disk>100\nMachineMetadata=disk<=200"),
            ],
            [SMALL, BIG_EAST, BIG_WEST, UNLABELLED],
        )
    )
    assert state.placements["big-not-east.service"] == BIG_WEST.id
    assert state.placements["big.service"] in (BIG_EAST.id, BIG_WEST.id)
    # A machine without a region is not in region east.
    assert state.placements["not-east.service"] in (BIG_WEST.id, UNLABELLED.id)
    assert state.placements["small.service"] == SMALL.id
    assert state.placements["range.service"] == BIG_EAST.id
    assert state.reasons == {}


def test_the_reason_names_the_expression_and_why_each_machine_fails_it() -> None:
    state = settle(
        snapshot([job("huge.service", "MachineMetadata=disk>=1000")], [SMALL, UNLABELLED, SSD])
    )
    assert "huge.service" not in state.placements
    assert state.reasons["huge.service"] == (
        "no machine matches MachineMetadata disk>=1000 (aa000000 has disk=50; "
        "dd000000 has no disk; ee000000 has disk=ssd, not a number)"
    )


def test_machines_failing_different_expressions_are_listed_each_with_its_own() -> None:
    state = settle(
        snapshot(
            [job("x.service", 'MachineMetadata="disk>=100" "region!=east"')], [SMALL, BIG_EAST]
        )
    )
    assert state.reasons["x.service"] == (
        "no machine can run it: aa000000 does not match MachineMetadata disk>=100 (has disk=50); "
        "bb000000 does not match MachineMetadata region!=east (has region=east)"
    )


def test_equality_keeps_fleets_reason_and_names_only_the_failing_key() -> None:
    eu = machine("aa", region="eu", disk="ssd")
    us = machine("bb", region="us", disk="ssd")
    state = settle(
        snapshot(
            [
                job("mars.service", "MachineMetadata=region=mars"),
                job("hdd.service", 'MachineMetadata="region=eu" "region=us" "disk=hdd"'),
            ],
            [eu, us],
        )
    )
    assert state.reasons == {
        "mars.service": "no machine matches MachineMetadata region=mars",
        "hdd.service": "no machine matches MachineMetadata disk=hdd",
    }


def test_notes_are_capped_like_details() -> None:
    rejection = Rejection("MachineMetadata", "matches MachineMetadata d>1", "x", "has no d")
    machines = [f"{n:02x}".ljust(32, "0") for n in range(5)]
    assert explain(dict.fromkeys(machines, rejection)) == (
        "no machine matches MachineMetadata d>1 (00000000 has no d; 01000000 has no d; "
        "02000000 has no d; and 2 more)"
    )


def test_a_placed_unit_leaves_a_machine_whose_number_drops_below_the_threshold() -> None:
    state = settle(snapshot([job("big.service", "MachineMetadata=disk>=100")], [SMALL, BIG_EAST]))
    assert state.placements == {"big.service": BIG_EAST.id}
    shrunk = dataclasses.replace(BIG_EAST, metadata={"region": "east", "disk": "80"})
    state = dataclasses.replace(state, machines={SMALL.id: SMALL, BIG_EAST.id: shrunk})
    unscheduled = [task for task in plan_cluster(state) if isinstance(task, Unschedule)]
    assert unscheduled == [
        Unschedule(
            "big.service",
            BIG_EAST.id,
            "MachineMetadata: machine does not match MachineMetadata disk>=100 (has disk=80)",
        )
    ]


def test_equality_rejections_carry_no_note() -> None:
    found = check_metadata(job("a.service", "MachineMetadata=region=mars"), MachineView(SMALL))
    assert found == Rejection(
        "MachineMetadata",
        "matches MachineMetadata region=mars",
        "does not match MachineMetadata region=mars (has region=east)",
    )


def test_a_machines_units_know_which_declare_conflicts_or_replaces() -> None:
    plain = job("plain.service").requirements
    clashing = job("web@1.service", "Conflicts=web@*.service").requirements
    replacing = job("new.service", "Replaces=old.service").requirements
    view = MachineView(SMALL, {"plain.service": plain, "web@1.service": clashing})
    view.units["new.service"] = replacing
    assert (view.units.conflicting, view.units.replacing) == ({"web@1.service"}, {"new.service"})
    view.units.pop("web@1.service")
    del view.units["new.service"]
    view.units.update({"web@2.service": clashing})
    view.units["web@2.service"] = plain  # the same name, now without Conflicts=
    assert (view.units.conflicting, view.units.replacing) == (set(), set())
    assert set(view.units) == {"plain.service", "web@2.service"}


def test_a_clash_names_the_first_conflicting_unit_whatever_the_order() -> None:
    web = job("web@9.service", "Conflicts=web@*.service")
    units = {f"web@{i}.service": job(f"web@{i}.service").requirements for i in (7, 3, 5)}
    found = check_conflicts(web, MachineView(SMALL, units))
    assert found is not None and found.detail == "runs conflicting web@3.service"
    old = job("old.service")
    replacers = {n: job(n, "Replaces=old.service").requirements for n in ("b.service", "a.service")}
    view = MachineView(SMALL, replacers)
    found = check_not_replaced(old, view)
    assert found is not None and found.detail == "runs a.service, which replaces old.service"
