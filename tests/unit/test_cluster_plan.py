"""The engine's pure planner: placements, constraints, failover, global units, pending reasons."""

from __future__ import annotations

from fleetd.cluster_plan import plan_cluster
from fleetd.model import DesiredState, MarkPending, Schedule, Unschedule

from .planning import apply, job, machine, settle, snapshot, with_jobs, without_machine

A, B, C = machine("aa", region="us"), machine("bb", region="eu"), machine("cc", region="eu")


def test_units_spread_least_loaded_with_ties_to_the_lower_machine_id() -> None:
    state = settle(
        snapshot(
            [job("a.service"), job("b.service"), job("c.service"), job("d.service")], [C, B, A]
        )
    )
    assert state.placements == {
        "a.service": A.id,
        "b.service": B.id,
        "c.service": C.id,
        "d.service": A.id,
    }
    assert state.assignments[A.id]["a.service"].desired == DesiredState.LAUNCHED


def test_plan_is_idempotent() -> None:
    state = settle(snapshot([job("a.service"), job("b.service")], [A, B]))
    assert plan_cluster(state) == []


def test_lost_machine_units_move_in_one_pass_and_nothing_else_moves() -> None:
    state = settle(snapshot([job(f"u{i}.service") for i in range(6)], [A, B, C]))
    lost = [u for u, m in state.placements.items() if m == B.id]
    tasks = plan_cluster(without_machine(state, B.id))
    moved = {t.unit for t in tasks if isinstance(t, Unschedule)}
    assert moved == set(lost)
    after = apply(without_machine(state, B.id), tasks)
    assert all(after.placements[u] in (A.id, C.id) for u in lost)
    assert {u: m for u, m in after.placements.items() if u not in lost} == {
        u: m for u, m in state.placements.items() if u not in lost
    }
    assert B.id not in after.assignments


def test_machine_id_full_and_short() -> None:
    state = settle(
        snapshot(
            [
                job("full.service", f"MachineID={C.id}"),
                job("short.service", f"MachineID={B.id[:8]}"),
            ],
            [A, B, C],
        )
    )
    assert state.placements == {"full.service": C.id, "short.service": B.id}


def test_metadata_same_key_ored_different_keys_anded() -> None:
    eu_ssd = machine("dd", region="eu", disk="ssd")
    state = settle(
        snapshot(
            [
                job("any.service", 'MachineMetadata="region=us" "region=eu"'),
                job("both.service", "MachineMetadata=region=eu\nMachineMetadata=disk=ssd"),
            ],
            [A, eu_ssd],
        )
    )
    assert state.placements["both.service"] == eu_ssd.id
    assert state.placements["any.service"] == A.id  # least loaded of the two that match


def test_unplaceable_unit_stays_pending_with_a_readable_reason() -> None:
    state = settle(snapshot([job("mars.service", "MachineMetadata=region=mars")], [A, B]))
    assert "mars.service" not in state.placements
    assert state.reasons["mars.service"] == "no machine matches MachineMetadata region=mars"
    # A machine that matches arrives: the unit is placed and the reason goes away.
    mars = machine("ee", region="mars")
    state = settle(snapshot(state.jobs.values(), [A, B, mars]))
    assert state.placements["mars.service"] == mars.id
    assert state.reasons == {}


def test_machine_of_follower_lands_with_its_peer_and_moves_with_it() -> None:
    state = settle(
        snapshot(
            [
                job("web.service"),
                job("z-log.service", "MachineOf=web.service"),
                job("other.service"),
            ],
            [A, B],
        )
    )
    assert state.placements["z-log.service"] == state.placements["web.service"]
    peer_machine = state.placements["web.service"]
    state = settle(without_machine(state, peer_machine))
    assert state.placements["z-log.service"] == state.placements["web.service"] != peer_machine


def test_conflicts_keep_units_apart_in_both_directions() -> None:
    state = settle(
        snapshot([job("db-1.service", "Conflicts=db-*.service"), job("db-2.service")], [A, B])
    )
    assert state.placements["db-1.service"] != state.placements["db-2.service"]
    crowded = settle(
        snapshot([job("db-1.service", "Conflicts=db-*.service"), job("db-2.service")], [A])
    )
    assert len(crowded.placements) == 1
    pending = next(u for u in ("db-1.service", "db-2.service") if u not in crowded.placements)
    assert "no machine is free of conflicting units" in crowded.reasons[pending]


def test_replaces_evicts_the_replaced_unit_to_another_machine() -> None:
    state = settle(snapshot([job("old.service")], [A, B]))
    assert state.placements["old.service"] == A.id
    state = with_jobs(state, job("new.service", "Replaces=old.service\nMachineMetadata=region=us"))
    tasks = plan_cluster(state)
    assert Unschedule("old.service", A.id, "replaced by new.service") in tasks
    state = settle(apply(state, tasks))
    assert state.placements == {"new.service": A.id, "old.service": B.id}


def test_global_units_run_on_every_matching_machine_and_are_never_placed() -> None:
    state = settle(
        snapshot([job("agent.service", "Global=true\nMachineMetadata=region=eu")], [A, B, C])
    )
    assert state.placements == {}
    assert {m for m, units in state.assignments.items() if "agent.service" in units} == {B.id, C.id}
    assert state.assignments[B.id]["agent.service"].is_global


def test_inactive_and_destroyed_units_are_unscheduled_and_unassigned() -> None:
    state = settle(snapshot([job("a.service"), job("b.service")], [A]))
    state = with_jobs(state, job("a.service", desired=DesiredState.INACTIVE))
    state = settle(
        snapshot([state.jobs["a.service"]], [A]).__class__(
            {"a.service": state.jobs["a.service"]},
            state.machines,
            state.placements,
            state.assignments,
            state.reasons,
        )
    )
    assert state.placements == {} and state.assignments == {}


def test_loaded_units_are_assigned_as_loaded() -> None:
    state = settle(snapshot([job("a.service", desired=DesiredState.LOADED)], [A]))
    assert state.assignments[A.id]["a.service"].desired == DesiredState.LOADED


def test_no_machines_means_pending() -> None:
    tasks = plan_cluster(snapshot([job("a.service")], []))
    assert tasks == [MarkPending("a.service", "no machines are registered")]


def test_schedule_tasks_say_why() -> None:
    tasks = plan_cluster(snapshot([job("a.service")], [A]))
    assert Schedule("a.service", A.id, "least loaded feasible machine") in tasks
