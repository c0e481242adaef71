"""The event history's pure parts: ids and JSON, filters and pages, --since, the writer's
bound, and which events the engine's tasks, the machine set and systemd's states produce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetd.events import (
    ENGINE_LEADER,
    FENCE,
    KINDS,
    MACHINE_EXPIRED,
    MACHINE_JOINED,
    UNIT_FAILED,
    UNIT_MOVED,
    UNIT_PLACED,
    UNIT_STARTED,
    UNIT_STOPPED,
    Draft,
    EventFilter,
    check_page_size,
    decode,
    decode_all,
    decode_page,
    decode_page_token,
    encode,
    encode_page,
    overflow,
    page,
    parse_since,
    parse_time,
    stamp,
)
from fleetd.events_decide import (
    MachineWatch,
    UnitTransitions,
    fence_draft,
    refusal_drafts,
    task_drafts,
    withheld_changed,
)
from fleetd.fleetctl.events_view import detail, event_row, event_table, fixed_line, json_line
from fleetd.model import Schedule, Unschedule

AT = datetime(2026, 11, 30, 22, 28, 9, 123456, tzinfo=UTC)
M1, M2 = "a" * 32, "b" * 32


def test_the_kinds_are_the_agreed_ones() -> None:
    assert set(KINDS) == {
        "unit.placed",
        "unit.started",
        "unit.stopped",
        "unit.moved",
        "unit.failed",
        "machine.joined",
        "machine.left",
        "machine.expired",
        "machine.drained",
        "machine.undrained",
        "engine.leader",
        "fence",
        "reschedule.withheld",
    }


def test_an_event_has_the_agreed_json_and_round_trips() -> None:
    event = stamp(Draft(UNIT_MOVED, "web.service", M2, M1, M2, "machine went away"), AT, M1, 7)
    assert event.to_json() == {
        "id": f"{int(AT.timestamp() * 1000):013d}-{M1[:12]}-00000007",
        "time": "2026-11-30T22:28:09.123Z",
        "kind": "unit.moved",
        "unit": "web.service",
        "machine": M2,
        "from": M1,
        "to": M2,
        "reason": "machine went away",
    }
    assert decode(encode(event)) == event


def test_ids_sort_by_time_across_writers_and_by_sequence_within_one() -> None:
    later = AT + timedelta(milliseconds=1)
    ids = [
        stamp(Draft(FENCE), later, M1, 1).id,
        stamp(Draft(FENCE), AT, M2, 2).id,
        stamp(Draft(FENCE), AT, M2, 10).id,
    ]
    assert sorted(ids) == [ids[1], ids[2], ids[0]]


def test_malformed_events_are_skipped_not_fatal() -> None:
    good = encode(stamp(Draft(UNIT_PLACED, "a.service"), AT, M1, 1))
    assert [e.unit for e in decode_all([b"{", b'{"id": 1}', b"[]", good])] == ["a.service"]
    with pytest.raises(ValueError, match="malformed event"):
        decode(b'{"time": "x"}')


def test_filters_match_unit_machine_prefix_in_any_role_and_since() -> None:
    moved = stamp(Draft(UNIT_MOVED, "web.service", M2, M1, M2, "why"), AT, M1, 1)
    assert EventFilter(unit="web.service").matches(moved)
    assert not EventFilter(unit="web").matches(moved)
    assert EventFilter(machine="aaaa").matches(moved)  # the machine it moved from
    assert not EventFilter(machine="cccc").matches(moved)
    assert EventFilter(since=AT - timedelta(seconds=1)).matches(moved)
    assert EventFilter(since=AT.replace(microsecond=123000)).matches(moved)
    assert not EventFilter(since=AT + timedelta(seconds=1)).matches(moved)


def test_pages_continue_after_the_last_id_and_end_without_a_token() -> None:
    events = [stamp(Draft(UNIT_PLACED, f"u{n}"), AT, M1, n) for n in range(5)]
    first, token = page(events, None, 2)
    assert [e.unit for e in first] == ["u0", "u1"] and token is not None
    second, token = page(events, decode_page_token(token), 2)
    assert [e.unit for e in second] == ["u2", "u3"] and token is not None
    last, token = page(events, decode_page_token(token), 2)
    assert [e.unit for e in last] == ["u4"] and token is None
    assert page(events, None, 5)[1] is None


@pytest.mark.parametrize("token", ["!!", "bm90IGFuIGlk", ""])
def test_page_tokens_we_did_not_make_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="invalid page token"):
        decode_page_token(token)


def test_page_sizes_are_bounded() -> None:
    assert check_page_size(None) == 100
    assert check_page_size("1000") == 1000
    for bad in ("0", "1001", "1000000", "-5"):
        with pytest.raises(ValueError, match="between 1 and 1000"):
            check_page_size(bad)
    with pytest.raises(ValueError, match="whole number"):
        check_page_size("ten")


@pytest.mark.parametrize(
    ("text", "ago"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("500ms", 0.5)],
)
def test_since_takes_durations_back_from_now(text: str, ago: float) -> None:
    assert parse_since(text, AT) == AT - timedelta(seconds=ago)


def test_since_takes_rfc3339_times_and_refuses_the_rest() -> None:
    assert parse_since("2026-11-30T22:00:00Z", AT) == datetime(2026, 11, 30, 22, tzinfo=UTC)
    assert parse_time("2026-11-30T23:00:00+01:00") == datetime(2026, 11, 30, 22, tzinfo=UTC)
    for bad in ("10", "ten minutes", "10x", "-5m", "", "m"):
        with pytest.raises(ValueError, match="invalid --since"):
            parse_since(bad, AT)
    with pytest.raises(ValueError, match="give a zone"):
        parse_time("2026-11-30T22:00:00")


def test_a_writer_deletes_its_oldest_pages_to_stay_at_its_limit() -> None:
    stored = [("p0", 10), ("p1", 5), ("p2", 5)]  # 20 events in three pages
    assert overflow(stored, 3, 30) == []
    assert overflow(stored, 3, 20) == ["p0"]
    assert overflow(stored, 10, 10) == ["p0", "p1", "p2"]
    assert overflow([], 10, 10) == []


def test_pages_round_trip_and_skip_what_is_malformed() -> None:
    events = [stamp(Draft(UNIT_PLACED, f"u{n}"), AT, M1, n) for n in range(3)]
    assert decode_page(encode_page(events)) == events
    mixed = b'[{"id": 1}, ' + encode(events[0]) + b"]"
    assert decode_page(mixed) == [events[0]]
    assert decode_page(b"{") == [] and decode_page(encode(events[1])) == [events[1]]


# -- decisions -------------------------------------------------------------------------------


def test_a_unit_placed_for_the_first_time_is_placed() -> None:
    drafts, waiting = task_drafts([Schedule("web.service", M1, "least loaded")], {})
    assert drafts == [Draft(UNIT_PLACED, "web.service", M1, None, M1, "least loaded")]
    assert waiting == {}


def test_a_unit_taken_off_a_machine_and_placed_elsewhere_moved_with_the_first_reason() -> None:
    tasks = [
        Unschedule("web.service", M1, "machine aaaaaaaa went away"),
        Schedule("web.service", M2, "least loaded"),
    ]
    drafts, waiting = task_drafts(tasks, {})
    assert drafts == [Draft(UNIT_MOVED, "web.service", M2, M1, M2, "machine aaaaaaaa went away")]
    assert waiting == {}


def test_a_move_whose_new_machine_comes_passes_later_is_still_a_move() -> None:
    drafts, waiting = task_drafts([Unschedule("web.service", M1, "machine gone")], {})
    assert drafts == [] and waiting == {"web.service": (M1, "machine gone")}
    drafts, waiting = task_drafts([Schedule("web.service", M2, "fits")], waiting)
    assert [d.kind for d in drafts] == [UNIT_MOVED] and drafts[0].from_ == M1


@pytest.mark.parametrize("reason", ["unit destroyed", "desired state is inactive"])
def test_a_unit_placed_again_after_a_stop_or_destroy_is_placed_not_moved(reason: str) -> None:
    _, waiting = task_drafts([Unschedule("web.service", M1, reason)], {})
    drafts, _ = task_drafts([Schedule("web.service", M2, "fits")], waiting)
    assert [d.kind for d in drafts] == [UNIT_PLACED]


def test_machines_joining_and_expiring_but_not_leaving() -> None:
    watch = MachineWatch()
    assert watch.update({M1, M2}, {M1, M2}) == []  # the first pass of a term: the baseline
    joined = watch.update({M1, M2, "c" * 32}, {M1, M2})
    assert joined == [Draft(MACHINE_JOINED, None, "c" * 32, None, None, "registered")]
    expired = watch.update({M1, "c" * 32}, {M1, M2, "c" * 32})  # M2 is still a member
    assert [(d.kind, d.machine) for d in expired] == [(MACHINE_EXPIRED, M2)]
    assert watch.update({"c" * 32}, {"c" * 32}) == []  # M1 deleted its member record: it left


def test_a_new_leader_reports_the_members_it_finds_gone() -> None:
    drafts = MachineWatch().update({M1}, {M1, M2})
    assert [(d.kind, d.machine) for d in drafts] == [(MACHINE_EXPIRED, M2)]


def test_withholding_is_told_when_it_starts_or_changes() -> None:
    assert withheld_changed(None, "only 1 of 3")
    assert withheld_changed("only 1 of 3", "only 1 of 4")
    assert not withheld_changed("only 1 of 3", "only 1 of 3")
    assert not withheld_changed("only 1 of 3", None)


def test_fencing_verdicts_carry_their_reason() -> None:
    assert fence_draft(M1, True, "peers x still reach etcd", 3).reason == (
        "fencing, stopping 3 units: peers x still reach etcd"
    )
    assert fence_draft(M1, False, "etcd is down").reason == "not fencing: etcd is down"
    assert fence_draft(M1, False, "etcd is down").kind == FENCE


def test_unit_states_tell_starts_stops_and_failures_once() -> None:
    seen = UnitTransitions(M1)
    assert seen.seen("web.service", "activating", "start") is None
    started = seen.seen("web.service", "active", "running")
    assert started is not None and started.kind == UNIT_STARTED
    assert started.reason == "systemd: active (running)"
    assert seen.seen("web.service", "active", "running") is None  # a repeated signal
    assert seen.seen("web.service", "deactivating", "stop") is None
    stopped = seen.seen("web.service", "inactive", "dead")
    assert stopped is not None and stopped.kind == UNIT_STOPPED
    assert seen.seen("web.service", "activating", "start") is None
    failed = seen.seen("web.service", "failed", "failed")
    assert failed is not None and failed.kind == UNIT_FAILED
    assert seen.seen("web.service", "inactive", "dead") is None  # reset after a failure


def test_a_new_unit_that_is_active_at_first_sight_started() -> None:
    draft = UnitTransitions(M1).seen("fast.service", "active", "running")
    assert draft is not None and draft.kind == UNIT_STARTED


def test_a_restarted_fleetd_does_not_tell_the_starts_of_units_already_running() -> None:
    seen = UnitTransitions(M1, preexisting={"web.service"})
    assert seen.seen("web.service", "active", "running") is None
    stopped = seen.seen("web.service", "inactive", "dead")
    assert stopped is not None and stopped.kind == UNIT_STOPPED


def test_an_unloaded_unit_starts_afresh() -> None:
    seen = UnitTransitions(M1)
    seen.seen("web.service", "active", "running")
    seen.forget("web.service")
    draft = seen.seen("web.service", "active", "running")
    assert draft is not None and draft.kind == UNIT_STARTED


def test_a_newly_refused_unit_failed_here_once() -> None:
    drafts = refusal_drafts(M1, {"a.service": "masked"}, {})
    assert drafts == [Draft(UNIT_FAILED, "a.service", M1, None, None, "refused: masked")]
    assert refusal_drafts(M1, {"a.service": "masked"}, {"a.service": "masked"}) == []


def test_engine_leader_is_a_kind() -> None:
    assert ENGINE_LEADER == "engine.leader"


# -- fleetctl's view ---------------------------------------------------------------------


def test_rows_show_short_machines_and_where_a_unit_moved() -> None:
    event = stamp(Draft(UNIT_MOVED, "web.service", M2, M1, M2, "machine gone"), AT, M1, 1)
    row = event_row(event.to_json())
    assert row == [
        "2026-11-30T22:28:09.123Z",
        "unit.moved",
        "web.service",
        "bbbbbbbb",
        "aaaaaaaa -> bbbbbbbb: machine gone",
    ]
    leader = stamp(Draft(ENGINE_LEADER, None, M1, None, None, ""), AT, M1, 2).to_json()
    assert event_row(leader)[2] == "-" and detail(leader) == "-"
    table = event_table([event.to_json()])
    assert table.splitlines()[0].split() == ["TIME", "KIND", "UNIT", "MACHINE", "DETAIL"]
    assert fixed_line(row).split()[:4] == row[:4]
    assert json_line(event.to_json()).startswith('{"id":')
