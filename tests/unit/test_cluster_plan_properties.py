"""Properties of the engine's planner over generated clusters (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.cluster_plan import plan_cluster
from fleetd.model import ClusterSnapshot, DesiredState, Schedule
from fleetd.scheduler import MachineView, rejection

from .planning import job, machine, settle, snapshot, without_machine

REGIONS = ["us", "eu", "ap"]
machines = st.lists(st.sampled_from(REGIONS), min_size=0, max_size=5).map(
    lambda regions: [machine(f"{i + 1:02x}", region=r) for i, r in enumerate(regions)]
)


@st.composite
def jobs(draw: st.DrawFn) -> list:  # type: ignore[type-arg]
    count = draw(st.integers(0, 8))
    found = []
    for i in range(count):
        options = []
        if draw(st.booleans()):
            options.append(f"MachineMetadata=region={draw(st.sampled_from(REGIONS))}")
        if i and draw(st.integers(0, 4)) == 0:
            options.append(f"MachineOf=u{draw(st.integers(0, i - 1))}.service")
        elif draw(st.integers(0, 4)) == 0:
            options.append("Conflicts=u*.service")
        elif draw(st.integers(0, 6)) == 0:
            options.append("Global=true")
        desired = draw(st.sampled_from(list(DesiredState)))
        found.append(job(f"u{i}.service", "\n".join(options), desired))
    return found


def check_invariants(state: ClusterSnapshot) -> None:
    for unit, machine_id in state.placements.items():
        job_ = state.jobs[unit]
        assert machine_id in state.machines, "placed on an absent machine"
        assert not job_.requirements.is_global and job_.desired != DesiredState.INACTIVE
        view = MachineView(
            state.machines[machine_id],
            {
                other: state.jobs[other].requirements
                for other, m in state.placements.items()
                if m == machine_id and other != unit
            },
        )
        view.units.update(
            (name, state.jobs[name].requirements)
            for name in state.assignments.get(machine_id, {})
            if state.jobs[name].requirements.is_global and name != unit
        )
        assert rejection(job_, view) is None, f"{unit} placed where it may not run"
    for machine_id, units in state.assignments.items():
        assert machine_id in state.machines
        for unit, assignment in units.items():
            assert state.jobs[unit].hash == assignment.hash
            assert state.jobs[unit].requirements.is_global or state.placements[unit] == machine_id


@settings(max_examples=150, deadline=None)
@given(machines, jobs())
def test_plans_settle_into_valid_placements(machine_list: list, job_list: list) -> None:  # type: ignore[type-arg]
    state = settle(snapshot(job_list, machine_list))
    check_invariants(state)
    assert plan_cluster(state) == []  # idempotent once applied


@settings(max_examples=100, deadline=None)
@given(machines, jobs())
def test_losing_a_machine_moves_only_what_it_ran(machine_list: list, job_list: list) -> None:  # type: ignore[type-arg]
    state = settle(snapshot(job_list, machine_list))
    if not machine_list:
        return
    lost = machine_list[0].id
    before = {u: m for u, m in state.placements.items() if m != lost}
    after = settle(without_machine(state, lost))
    check_invariants(after)
    kept = {u: m for u, m in after.placements.items() if u in before}
    # Units on surviving machines stay put, except followers whose peer moved away.
    for unit, machine_id in before.items():
        follows_moved_peer = any(
            state.placements.get(peer) == lost for peer in state.jobs[unit].requirements.machine_of
        )
        if not follows_moved_peer:
            assert kept.get(unit) == machine_id, f"{unit} moved without cause"


@settings(max_examples=100, deadline=None)
@given(machines, jobs())
def test_a_unit_is_never_scheduled_twice_in_one_plan(machine_list: list, job_list: list) -> None:  # type: ignore[type-arg]
    tasks = plan_cluster(snapshot(job_list, machine_list))
    scheduled = [t.unit for t in tasks if isinstance(t, Schedule)]
    assert len(scheduled) == len(set(scheduled))
