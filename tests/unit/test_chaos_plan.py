"""The chaos suite's pure parts: the plan only picks events that make sense, the same seed
gives the same events, and overlapping runs are found exactly."""

from __future__ import annotations

from fleetlab.chaos import Run, World, believe, event_sequence, overlaps, parse_show

MACHINES = ["m1", "m2", "m3", "m4", "m5"]


def test_a_seed_replays_the_same_events() -> None:
    assert list(event_sequence(7, MACHINES, 200)) == list(event_sequence(7, MACHINES, 200))
    assert list(event_sequence(7, MACHINES, 50)) != list(event_sequence(8, MACHINES, 50))


def test_every_event_fits_the_world_it_happens_in() -> None:
    world = World(list(MACHINES))
    kinds = set()
    for event in event_sequence(11, MACHINES, 1000):
        kinds.add(event.kind)
        if event.kind in ("kill", "stop", "partition", "fleetd-freeze", "fleetd-kill"):
            assert event.target not in world.down
        if event.kind == "start":
            assert event.target in world.down
        if event.kind == "fleetd-thaw":
            assert event.target in world.frozen
        believe(world, event)
        assert len(world.up()) >= 2
    assert len(kinds) == 14  # every kind of event happens


def test_runs_of_one_unit_on_two_machines_at_once_are_found() -> None:
    runs = [Run("m1", "a.service", 10.0, 20.0), Run("m2", "a.service", 19.5, None)]
    assert overlaps(runs, now=30.0) == ["a.service ran on m1 and m2 at once for 0.50s from t=19.50"]
    handover = [Run("m1", "a.service", 10.0, 20.0), Run("m2", "a.service", 20.1, None)]
    assert overlaps(handover, now=30.0) == []
    assert overlaps([Run("m1", "a", 1.0, 2.0), Run("m1", "a", 1.5, None)], now=3.0) == []


def test_systemctl_show_output_is_read_per_unit() -> None:
    text = (
        "Id=a.service\nActiveState=active\nInactiveExitTimestampMonotonic=2500000\n"
        "InactiveEnterTimestampMonotonic=0\n\n"
        "Id=b.service\nActiveState=inactive\nInactiveExitTimestampMonotonic=\n"
        "InactiveEnterTimestampMonotonic=\n"
    )
    samples = parse_show(text)
    assert samples["a.service"].state == "active" and samples["a.service"].since == 2.5
    assert samples["b.service"].since == 0.0
