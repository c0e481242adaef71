"""The chaos suite's pure parts: the plan only picks events that make sense, the same seed
gives the same events, and overlapping runs are found exactly."""

from __future__ import annotations

import json
import threading

from fleetlab.chaos import (
    UNIT_STOPPED,
    Run,
    Sampler,
    World,
    believe,
    event_sequence,
    overlaps,
    parse_show,
    stop_times,
)

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


def journal_line(unit: str, at: float, message_id: str = UNIT_STOPPED) -> str:
    fields = {"UNIT": unit, "MESSAGE_ID": message_id, "__MONOTONIC_TIMESTAMP": str(int(at * 1e6))}
    return json.dumps(fields)


def test_a_power_off_ends_a_run_when_systemd_logged_the_unit_stopped() -> None:
    """The sampler cannot ask a machine going down: a run ends when its journal says, not when
    the power-off is over, or a unit that moved after a clean stop would look like a double."""
    journal = "\n".join(
        [
            journal_line("a.service", 10.2),
            journal_line("a.service", 3.0),  # an earlier run's stop
            journal_line("b.service", 10.3, message_id="7ad2d189f7e94e70a38c781354912448"),
            "not json",
        ]
    )
    assert stop_times(journal) == {"a.service": 10.2}
    sampler = Sampler.__new__(Sampler)  # the bookkeeping only, no lab
    sampler.lock = threading.Lock()
    runs = {u: Run("m1", u, 5.0) for u in ("a.service", "b.service", "c.service")}
    sampler.open = {("m1", u): run for u, run in runs.items()}
    sampler.machine_died("m1", 11.0, {**stop_times(journal), "c.service": 12.0})
    # b: not a "Stopped" message; c: logged after the power-off was over, so not believed
    assert [runs[u].end for u in sorted(runs)] == [10.2, 11.0, 11.0]
    assert sampler.open == {}
