"""The maintenance window: may a machine reboot now, and when next (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from flotilla.update.window import (
    MaintenanceWindow,
    is_open,
    next_opening,
    parse_duration,
    parse_start,
    window,
)

THURSDAY = datetime(2024, 5, 16)  # a Thursday


def test_starts_and_durations() -> None:
    assert parse_start("Thu 04:00") == (3, 240)
    assert parse_start("thursday 4:05") == (3, 245)
    assert parse_start("23:59") == (None, 23 * 60 + 59)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert str(window("Sun 22:30", "2h")) == "Sun 22:30 for 2h"


@pytest.mark.parametrize(
    ("start", "message"),
    [("Thx 04:00", "not a day of the week"), ("24:00", "not a time of day"), ("4", "HH:MM")],
)
def test_bad_starts_say_why(start: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_start(start)


@pytest.mark.parametrize("text", ["", "1x", "90", "0m", "1h 30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_daily_window_longer_than_a_day_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than a day"):
        window("04:00", "25h")


def test_no_window_is_always_open() -> None:
    assert is_open(THURSDAY, None)
    assert next_opening(THURSDAY, None) == THURSDAY


def test_weekly_window() -> None:
    thursday_four = window("Thu 04:00", "1h30m")
    assert not is_open(THURSDAY.replace(hour=3, minute=59), thursday_four)
    assert is_open(THURSDAY.replace(hour=4), thursday_four)
    assert is_open(THURSDAY.replace(hour=5, minute=29), thursday_four)
    assert not is_open(THURSDAY.replace(hour=5, minute=30), thursday_four)
    # Just after it closed: next week's opening.
    after = THURSDAY.replace(hour=6)
    assert next_opening(after, thursday_four) == THURSDAY.replace(hour=4) + timedelta(days=7)
    # On a Monday: this week's Thursday.
    monday = THURSDAY - timedelta(days=3)
    assert next_opening(monday, thursday_four) == THURSDAY.replace(hour=4)


def test_daily_window_across_midnight() -> None:
    late = window("23:00", "2h")
    assert is_open(THURSDAY.replace(hour=23, minute=30), late)
    assert is_open(THURSDAY.replace(hour=0, minute=59), late)  # opened Wednesday 23:00
    assert not is_open(THURSDAY.replace(hour=1), late)
    assert next_opening(THURSDAY.replace(hour=12), late) == THURSDAY.replace(hour=23)


def test_weekly_window_across_the_week_end() -> None:
    sunday_night = MaintenanceWindow(6, 23 * 60, timedelta(hours=3))
    monday = THURSDAY - timedelta(days=3)
    assert is_open(monday.replace(hour=1), sunday_night)
    assert not is_open(monday.replace(hour=2), sunday_night)
