"""The lease deadline the backstop enforces: its timing, its once-per-deadline actions, its file."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.deadline import (
    Action,
    Deadline,
    Progress,
    decode,
    done,
    due,
    encode,
    extended,
    is_global_unit,
    next_check,
    passed,
    renewed,
    watchdog_seconds,
)
from fleetd.fencing import keepalive_interval

TTL = 10.0
POLL = 0.2
UNITS = "/run/fleet/units/"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"
ttls = st.floats(min_value=1.0, max_value=600.0)
times = st.floats(min_value=0.0, max_value=1e7)


def run_backstop(deadline: Deadline, until: float, start: float) -> list[tuple[float, Action]]:
    """The backstop's loop with a perfect clock: what it does, and when, from `start`."""
    now, progress, actions = start, Progress(), []
    while now <= until:
        if (action := due(now, deadline, progress)) is not None:
            actions.append((now, action))
            progress = done(progress, deadline, action)
            continue
        now += max(next_check(now, deadline, progress, POLL), 1e-3)
    return actions


def test_a_renewal_stops_then_kills_before_the_lease_can_expire() -> None:
    deadline = renewed(100.0, TTL, 100.1, UNITS)
    assert deadline.stop_at == pytest.approx(108.5)
    assert deadline.kill_at == pytest.approx(109.5)
    assert deadline.units_directory == UNITS
    actions = run_backstop(deadline, until=120.0, start=100.1)
    assert actions == [(pytest.approx(108.5), Action.STOP), (pytest.approx(109.5), Action.KILL)]


@given(last_contact=times, ttl=ttls)
def test_every_unit_is_killed_before_the_lease_can_expire(last_contact: float, ttl: float) -> None:
    deadline = renewed(last_contact, ttl, last_contact, UNITS)
    assert last_contact < deadline.stop_at < deadline.kill_at < last_contact + ttl
    # Renewed every keepalive (TTL/5) plus the slowest answer the heart waits for (TTL/5 more),
    # the deadline is never reached.
    assert deadline.stop_at > last_contact + 2 * keepalive_interval(ttl)


def test_nothing_happens_without_a_deadline() -> None:
    assert due(1e6, None, Progress()) is None
    assert next_check(1e6, None, Progress(), POLL) == POLL
    assert not passed(None, 1e6)


def test_each_deadline_is_acted_on_once_and_a_new_one_again() -> None:
    first = renewed(100.0, TTL, 100.0, UNITS)
    progress = Progress()
    assert due(108.0, first, progress) is None
    assert due(108.5, first, progress) is Action.STOP
    progress = done(progress, first, Action.STOP)
    assert due(109.0, first, progress) is None
    assert due(109.5, first, progress) is Action.KILL
    progress = done(progress, first, Action.KILL)
    assert due(500.0, first, progress) is None  # once, not again and again
    # fleetd came back and renewed; then went quiet again.
    second = renewed(200.0, TTL, 200.0, UNITS)
    assert due(201.0, second, progress) is None
    assert due(208.5, second, progress) is Action.STOP


def test_a_late_backstop_stops_first_then_kills() -> None:
    deadline = renewed(100.0, TTL, 100.0, UNITS)
    progress = Progress()
    assert due(150.0, deadline, progress) is Action.STOP
    assert due(150.0, deadline, done(progress, deadline, Action.STOP)) is Action.KILL


def test_the_backstop_wakes_at_the_deadline_itself() -> None:
    deadline = renewed(100.0, TTL, 100.0, UNITS)
    assert next_check(100.0, deadline, Progress(), POLL) == POLL
    assert next_check(108.45, deadline, Progress(), POLL) == pytest.approx(0.05)
    assert next_check(108.6, deadline, Progress(), POLL) == 0.0
    stopped = done(Progress(), deadline, Action.STOP)
    assert next_check(109.4, deadline, stopped, POLL) == pytest.approx(0.1)
    both = done(stopped, deadline, Action.KILL)
    assert next_check(300.0, deadline, both, POLL) == POLL


def test_an_extension_pushes_the_deadline_from_when_the_peers_were_asked() -> None:
    current = renewed(100.0, TTL, 100.0, UNITS)  # stop at 108.5
    later = extended(current, 106.0, TTL, 106.3, UNITS, "etcd is down")
    assert later.stop_at == pytest.approx(110.0)
    assert later.kill_at == pytest.approx(111.0)
    assert later.renewed_at == 106.3
    assert later.reason == "etcd is down"


def test_an_extension_never_moves_a_deadline_back() -> None:
    current = renewed(100.0, TTL, 100.0, UNITS)  # stop at 108.5
    kept = extended(current, 102.0, TTL, 102.0, UNITS, "etcd is down")
    assert (kept.stop_at, kept.kill_at) == (current.stop_at, current.kill_at)
    assert kept.renewed_at == 102.0


def test_an_extension_without_a_deadline_starts_one() -> None:
    fresh = extended(None, 50.0, TTL, 50.0, UNITS, "no peers could take over")
    assert fresh.stop_at == pytest.approx(54.0)


@given(asked_at=times, ttl=st.floats(min_value=1.7, max_value=600.0))
def test_an_extension_ends_before_a_lease_renewed_by_etcds_return_can_expire(
    asked_at: float, ttl: float
) -> None:
    # No peer had heard from etcd at asked_at: it came back at the earliest 0.2 TTL + 0.5 s
    # before (a keepalive interval plus the gRPC reconnect cap), renewing every lease by TTL.
    deadline = extended(None, asked_at, ttl, asked_at, UNITS, "etcd is down")
    earliest_expiry = asked_at - (keepalive_interval(ttl) + 0.5) + ttl
    assert deadline.kill_at < earliest_expiry


def test_passed_means_the_backstop_may_have_stopped_the_units() -> None:
    deadline = renewed(100.0, TTL, 100.0, UNITS)
    assert not passed(deadline, 108.4)
    assert passed(deadline, 108.5)


def test_the_file_reads_back_as_written() -> None:
    deadline = renewed(100.25, TTL, 100.5, UNITS)
    assert decode(encode(deadline)) == deadline


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"stop_at": 1}',
        '{"stop_at": "x", "kill_at": 2, "renewed_at": 0, "reason": "", "units_directory": "/u"}',
        '{"stop_at": NaN, "kill_at": 2, "renewed_at": 0, "reason": "", "units_directory": "/u"}',
        '{"stop_at": 1, "kill_at": Infinity, "renewed_at": 0, "reason": "", "units_directory": ""}',
        '{"stop_at": 1, "kill_at": 2, "renewed_at": 0, "reason": ""}',
    ],
)
def test_a_file_that_is_not_a_deadline_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a deadline"):
        decode(text)


@pytest.mark.parametrize(
    ("text", "is_global"),
    [
        (SLEEPER, False),
        (SLEEPER + "[X-Fleet]\nGlobal=true\n", True),
        (SLEEPER + "[X-Fleet]\nGlobal=false\nMachineMetadata=a=b\n", False),
        # fleet refuses this combination: a file that does not parse is stopped.
        (SLEEPER + "[X-Fleet]\nGlobal=true\nMachineID=0123abcd\n", False),
        ("\x00 not a unit", False),
    ],
)
def test_global_units_are_the_ones_the_backstop_leaves(text: str, is_global: bool) -> None:
    assert is_global_unit("web.service", text) is is_global


@given(ttl=ttls, configured=st.floats(min_value=0.5, max_value=3600.0))
def test_the_watchdog_fits_inside_the_ttl(ttl: float, configured: float) -> None:
    seconds = watchdog_seconds(ttl, configured)
    assert seconds <= configured
    assert seconds <= 0.4 * ttl
    assert not math.isclose(seconds, 0.0)


def test_the_watchdog_restarts_fleetd_before_the_backstop_stops_anything() -> None:
    assert watchdog_seconds(10.0, 5.0) == 4.0  # the defaults
    assert watchdog_seconds(3.0, 5.0) == pytest.approx(1.2)
    assert watchdog_seconds(60.0, 5.0) == 5.0
    # Frozen right after its last keepalive was sent (a keepalive interval before its last
    # watchdog ping at worst), fleetd is restarted after RestartSec=1s and about a second of
    # start-up, and renews before the deadline at the default TTL.
    ttl = 10.0
    renewed_again = keepalive_interval(ttl) + watchdog_seconds(ttl, 5.0) + 1.0 + 1.0
    assert renewed_again < renewed(0.0, ttl, 0.0, UNITS).stop_at
